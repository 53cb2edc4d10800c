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


@pytest.mark.parametrize("with_log_q", [False, True])
@pytest.mark.parametrize("n_samples", [0, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize(emu, shape, dtype, n_samples, with_log_q):
    mu, logvar, rng = inputs(shape, dtype, seed=sum(shape) + n_samples)
    cd = cpu_dtype(dtype)
    kw = dict(n_samples=n_samples, with_log_q=with_log_q)
    z, kl, log_q = emu.call("reparameterize", mu, logvar, rng, **kw)
    z0, kl0, log_q0 = torch.ops.gencore.reparameterize(mu.to(cd), logvar.to(cd), rng, **kw)
    assert_matches(z, z0, dtype, "z")
    assert_matches(kl, kl0, dtype, "kl")
    assert_matches(log_q, log_q0, dtype, "log_q")

    g = torch.Generator().manual_seed(2)
    gz = torch.randn(z.shape, generator=g).to(dtype)
    gkl = torch.randn(kl.shape, generator=g).to(dtype)
    glq = torch.randn(log_q.shape, generator=g).to(dtype)
    # An empty feature dimension has no gradient to compute: no launch then.
    call = emu.call if mu.numel() else (lambda name, *a, **k: getattr(emu.ops, name)(*a, **k))
    gmu, glv = call("reparameterize_backward", gz, gkl, glq, mu, logvar, rng, n_samples=n_samples)
    gmu0, glv0 = torch.ops.gencore.reparameterize_backward(gz.to(cd), gkl.to(cd), glq.to(cd), mu.to(cd),
                                                           logvar.to(cd), rng, n_samples=n_samples)
    assert_matches(gmu, gmu0, dtype, "grad_mu")
    assert_matches(glv, glv0, dtype, "grad_logvar")


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
