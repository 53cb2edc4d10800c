"""The CUDA reparameterization kernels (csrc/reparam/reparam_cuda.cu), run by the SIMT
emulator, against the CPU kernels: one rng_state gives the same eps on both."""

import pytest
import torch

from simt_testing import DTYPES, assert_matches, cpu_dtype

COVERS = ("reparameterize", "reparameterize_backward")

# Rows no multiple of 4 (the scalar load path), of several warp segments (512 columns a
# segment), one column, an empty feature dimension.
SHAPES = [(1, 1), (3, 5), (4, 64), (2, 130), (3, 1301), (2, 4, 3, 3), (5, 0)]


def inputs(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g).to(dtype)
    logvar = (0.5 * torch.randn(shape, generator=g)).to(dtype)
    rng = torch.tensor([1234 + seed, 16 * seed], dtype=torch.int64)
    return mu, logvar, rng


def prior_inputs(shape, dtype, seed):
    """A learned prior N(prior_mu, e^prior_logvar), its log-variance within ~3 of logvar's."""
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(shape, generator=g).to(dtype), (0.8 * torch.randn(shape, generator=g)).to(dtype)


@pytest.mark.parametrize("prior", [False, True], ids=["std-normal", "prior"])
@pytest.mark.parametrize("with_log_q", [False, True])
@pytest.mark.parametrize("n_samples", [0, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize(emu, shape, dtype, n_samples, with_log_q, prior):
    seed = sum(shape) + n_samples
    mu, logvar, rng = inputs(shape, dtype, seed=seed)
    pm, pl = prior_inputs(shape, dtype, seed) if prior else (None, None)
    cd = cpu_dtype(dtype)
    cpu_prior = (pm.to(cd), pl.to(cd)) if prior else (None, None)
    kw = dict(n_samples=n_samples, with_log_q=with_log_q)
    z, kl, log_q = emu.call("reparameterize", mu, logvar, rng, pm, pl, **kw)
    z0, kl0, log_q0 = torch.ops.gencore.reparameterize(mu.to(cd), logvar.to(cd), rng, *cpu_prior, **kw)
    assert_matches(z, z0, dtype, "z")
    assert_matches(kl, kl0, dtype, "kl")
    assert_matches(log_q, log_q0, dtype, "log_q")

    g = torch.Generator().manual_seed(2)
    gz = torch.randn(z.shape, generator=g).to(dtype)
    gkl = torch.randn(kl.shape, generator=g).to(dtype)
    glq = torch.randn(log_q.shape, generator=g).to(dtype)
    # An empty feature dimension has no gradient to compute: no launch then.
    call = emu.call if mu.numel() else (lambda name, *a, **k: getattr(emu.ops, name)(*a, **k))
    got = call("reparameterize_backward", gz, gkl, glq, mu, logvar, rng, pm, pl, n_samples=n_samples)
    want = torch.ops.gencore.reparameterize_backward(gz.to(cd), gkl.to(cd), glq.to(cd), mu.to(cd),
                                                     logvar.to(cd), rng, *cpu_prior, n_samples=n_samples)
    for name, a, b in zip(("grad_mu", "grad_logvar", "grad_prior_mu", "grad_prior_logvar"), got, want):
        assert_matches(a, b, dtype, name)
    if not prior:
        assert got[2].shape == (0,) and got[3].shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_prior_extremes(emu, dtype):
    """logvar - prior_logvar of +-30 and of 1e-6, mu = prior_mu under an overflowing
    e^-prior_logvar: the device math gives the CPU's (finite) KL and gradients."""
    lv = torch.tensor([[30.0, -30.0, 1e-6, 0.0, -85.0], [-30.0, 30.0, -1e-6, 15.0, 0.5]], dtype=dtype)
    pl = torch.tensor([[0.0, 0.0, 0.0, 30.0, -100.0], [0.0, 0.0, 0.0, -15.0, 0.5 - 1e-3]], dtype=dtype)
    mu = torch.tensor([[1.0, -2.0, 0.5, 3.0, 1.0], [0.0, 1e3, -1.0, 2.0, 0.25]], dtype=dtype)
    pm = mu.clone()
    pm[:, :4] = 0
    rng = torch.tensor([5, 6], dtype=torch.int64)
    _, kl, _ = emu.call("reparameterize", mu, lv, rng, pm, pl, n_samples=0, with_log_q=False)
    _, kl0, _ = torch.ops.gencore.reparameterize(mu, lv, rng, pm, pl)
    assert torch.isfinite(kl).all()
    assert_matches(kl, kl0, dtype, "kl")
    ones = torch.ones_like(mu)
    got = emu.call("reparameterize_backward", ones, torch.ones(2, dtype=dtype), torch.empty(0, dtype=dtype), mu, lv,
                   rng, pm, pl, n_samples=0)
    want = torch.ops.gencore.reparameterize_backward(ones, torch.ones(2, dtype=dtype), torch.empty(0, dtype=dtype),
                                                     mu, lv, rng, pm, pl, n_samples=0)
    for name, a, b in zip(("grad_mu", "grad_logvar", "grad_prior_mu", "grad_prior_logvar"), got, want):
        assert torch.isfinite(a).all(), name
        assert_matches(a, b, dtype, name)


@pytest.mark.parametrize("shape", [(3, 130), (2, 64)], ids=str)
def test_reparameterize_misaligned(emu, shape):
    """mu and logvar starting one element off the 16-byte alignment: the scalar path."""
    n = shape[0] * shape[1]
    base = torch.randn(2 * n + 2)
    mu, logvar = base[1 : n + 1].view(shape), base[n + 2 :].view(shape) * 0.3
    rng = torch.tensor([7, 0], dtype=torch.int64)
    z, kl, _ = emu.call("reparameterize", mu, logvar, rng, n_samples=0, with_log_q=False)
    z0, kl0, _ = torch.ops.gencore.reparameterize(mu, logvar, rng, n_samples=0, with_log_q=False)
    assert_matches(z, z0, torch.float32, "z")
    assert_matches(kl, kl0, torch.float32, "kl")


def test_same_eps_as_cpu_in_distribution(emu):
    """The emulated kernel's eps is the CPU's: standard normal to the sampling error."""
    mu = torch.zeros(64, 256)
    z, _, _ = emu.call("reparameterize", mu, torch.zeros_like(mu), torch.tensor([99, 0]), n_samples=0,
                       with_log_q=False)
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02
