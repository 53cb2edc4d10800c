"""gencore.ops.reparameterize: the Philox stream, the normals, reference agreement,
gradients, registration and bad inputs."""

import math

import pytest
import torch

from gencore import _C, ops, reference

KAT = [  # Random123 kat_vectors, "philox4x32 10": counter, key -> output
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]

SHAPES = [(1, 1), (3, 5), (2, 3, 5), (7, 4099), (1, 9001), (9,), (4, 256), (5, 3, 1)]


def state(seed=1234, offset=5678, device="cpu"):
    return torch.tensor([seed, offset], dtype=torch.int64, device=device)


def eps_of(shape, rng_state, n_samples=0, dtype=torch.float64, device="cpu"):
    """The kernel's normals: z at mu = 0, logvar = 0."""
    zero = torch.zeros(shape, dtype=dtype, device=device)
    return torch.ops.gencore.reparameterize(zero, zero, rng_state.to(device), n_samples=n_samples)[0]


def inputs(shape, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g, dtype=torch.float64)
    lv = torch.randn(shape, generator=g, dtype=torch.float64) * 0.7
    return mu.to(device, dtype), lv.to(device, dtype)


@pytest.mark.parametrize("ctr,key,out", KAT)
def test_philox_known_answers(ctr, key, out):
    assert list(_C.philox4x32_10(ctr, key)) == out


def test_box_muller_float_matches_double():
    g = torch.Generator().manual_seed(0)
    words = torch.randint(0, 2**32, (2000, 4), generator=g, dtype=torch.int64).tolist()
    for w in words:
        f, d = _C.box_muller4(w, False), _C.box_muller4(w, True)
        for a, b in zip(f, d):
            assert abs(a - b) <= 2e-6 * max(1.0, abs(b)), (w, f, d)


def test_box_muller_double_matches_libm():
    # The polynomial ln / sincos against Python's libm on the same uniforms.
    g = torch.Generator().manual_seed(1)
    for w in torch.randint(0, 2**32, (2000, 4), generator=g, dtype=torch.int64).tolist():
        u = [((v >> 9) + 0.5) / 2**23 for v in w]
        r0, r1 = math.sqrt(-2 * math.log(u[0])), math.sqrt(-2 * math.log(u[2]))
        want = [r0 * math.cos(2 * math.pi * u[1]), r0 * math.sin(2 * math.pi * u[1]),
                r1 * math.cos(2 * math.pi * u[3]), r1 * math.sin(2 * math.pi * u[3])]
        got = _C.box_muller4(w, True)
        for a, b in zip(got, want):
            assert abs(a - b) <= 1e-14 * max(1.0, abs(b))


def test_moments_of_eps():
    e = eps_of((1000, 1000), state(), dtype=torch.float32).double().flatten()
    n = e.numel()
    mean, var = e.mean().item(), e.var().item()
    kurt = (((e - e.mean()) ** 4).mean() / e.var() ** 2).item()
    skew = (((e - e.mean()) ** 3).mean() / e.var() ** 1.5).item()
    # Five standard errors of each statistic under N(0, 1) at n = 10^6.
    assert abs(mean) < 5 / math.sqrt(n)
    assert abs(var - 1) < 5 * math.sqrt(2 / n)
    assert abs(skew) < 5 * math.sqrt(6 / n)
    assert abs(kurt - 3) < 5 * math.sqrt(24 / n)
    # Tail mass against the normal's: P(|eps| > 2) = 0.0455, P(|eps| > 3) = 0.0027.
    for t, p in ((2.0, 0.0455003), (3.0, 0.0026998)):
        frac = (e.abs() > t).double().mean().item()
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return ((a * b).mean() / (a.std() * b.std())).item()


def test_no_correlation_between_neighbours_and_calls():
    e = eps_of((512, 1024), state(), dtype=torch.float64)
    bound = 5 / math.sqrt(e.numel())
    for lag in (1, 2, 3, 4, 5):  # within a Philox output (1-3) and across outputs
        assert abs(_corr(e[:, :-lag].flatten(), e[:, lag:].flatten())) < 2 * bound
    assert abs(_corr(e[:-1].flatten(), e[1:].flatten())) < 2 * bound  # neighbouring rows
    # The squares too: Box-Muller pairs share a radius.
    assert abs(_corr(e[:, 0::2].pow(2).flatten(), e[:, 1::2].pow(2).flatten())) < 4 * bound
    # Consecutive calls of the public op (the generator advances).
    torch.manual_seed(0)
    zero = torch.zeros(512, 1024, dtype=torch.float64)
    a, _ = ops.reparameterize(zero, zero)
    b, _ = ops.reparameterize(zero, zero)
    assert abs(_corr(a.flatten(), b.flatten())) < 2 * bound
    # Samples of one call with n_samples.
    s = eps_of((64, 1024), state(), n_samples=4)
    assert abs(_corr(s[0].flatten(), s[1].flatten())) < 2 * 5 / math.sqrt(s[0].numel())


def test_stream_layout_is_per_element():
    # The normal of an element depends only on (row, column, sample, rng_state): a prefix
    # of the columns or rows gives the same numbers.
    st = state()
    full = eps_of((6, 4099), st, n_samples=3)
    assert torch.equal(eps_of((6, 37), st, n_samples=3), full[:, :, :37])
    assert torch.equal(eps_of((2, 4099), st, n_samples=2), full[:2, :2])
    # A 3-D mu is its (B, rest) flattening.
    assert torch.equal(eps_of((6, 1, 4099), st).squeeze(1), eps_of((6, 4099), st))
    # Seed and offset both change the stream.
    assert not torch.equal(eps_of((6, 37), state(1, 2)), eps_of((6, 37), state(1, 3)))
    assert not torch.equal(eps_of((6, 37), state(1, 2)), eps_of((6, 37), state(2, 2)))


def _scalar_normal(rng_state, row, col, sample, double):
    """One element's normal from the scalar Philox and Box-Muller (common/philox.h)."""
    seed, offset = (int(v) & 0xFFFFFFFFFFFFFFFF for v in rng_state.tolist())
    key = [seed & 0xFFFFFFFF, (seed >> 32) ^ (offset >> 32)]
    words = _C.philox4x32_10([col // 4, row, sample, offset & 0xFFFFFFFF], key)
    return _C.box_muller4(list(words), double)[col % 4]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_normals_equal_scalar_philox(dtype):
    # The CPU kernel makes its Philox words 16 counters at a time (AVX2) or through the
    # compiler-vectorized scalar code; either way every element must be the scalar stream's
    # normal at (row, col, sample). Columns cover several 256-column blocks, a ragged tail
    # and 16-counter lane groups; the seed and offset use their high words.
    st = torch.tensor([0x1234_5678_9ABC_DEF0 - (1 << 63), 0x0FED_CBA9_8765_4321], dtype=torch.int64)
    eps = eps_of((3, 1111), st, n_samples=2, dtype=dtype)
    g = torch.Generator().manual_seed(3)
    checks = [(0, 0, 0), (2, 1110, 1), (1, 255, 0), (1, 256, 1), (0, 63, 1), (2, 64, 0)]
    checks += [(int(torch.randint(0, 3, (), generator=g)), int(torch.randint(0, 1111, (), generator=g)),
                int(torch.randint(0, 2, (), generator=g)))
               for _ in range(40)]
    for row, col, sample in checks:
        want = _scalar_normal(st, row, col, sample, dtype == torch.float64)
        got = eps[sample, row, col].item()
        assert got == pytest.approx(want, rel=1e-6 if dtype == torch.float32 else 1e-13, abs=1e-6), (row, col, sample)


def test_portable_and_avx2_normals_are_identical(tmp_path):
    # GENCORE_PORTABLE_PHILOX=1 forces the compiler-vectorized path (csrc/reparam/
    # reparam_cpu.cpp); the words are integers and the Box-Muller code is shared, so both
    # paths give the same bits, forward and backward.
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from gencore import ops\n"
        "out = {}\n"
        "for dt in (torch.float32, torch.float64):\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    mu = torch.randn(5, 1031, dtype=dt, generator=g).requires_grad_()\n"
        "    lv = (0.5 * torch.randn(5, 1031, dtype=dt, generator=g)).requires_grad_()\n"
        "    z, kl = ops.reparameterize(mu, lv, n_samples=3, generator=torch.Generator().manual_seed(9))[:2]\n"
        "    gm, gl = torch.autograd.grad((z * z).sum() + kl.sum(), (mu, lv))\n"
        "    out[str(dt)] = (z.detach(), gm, gl)\n"
        "torch.save(out, sys.argv[1])\n"
    )
    results = []
    for portable in ("0", "1"):
        path = tmp_path / f"normals_{portable}.pt"
        env = {**__import__("os").environ, "GENCORE_PORTABLE_PHILOX": portable}
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env)
        results.append(torch.load(path))
    for key in results[0]:
        for a, b in zip(results[0][key], results[1][key]):
            assert torch.equal(a, b), key


def test_seed_reproduces_and_offset_changes(device):
    mu, lv = inputs((8, 33), torch.float32, device)
    torch.manual_seed(7)
    z1, kl1 = ops.reparameterize(mu, lv)
    z2, _ = ops.reparameterize(mu, lv)
    torch.manual_seed(7)
    z3, kl3 = ops.reparameterize(mu, lv)
    assert torch.equal(z1, z3) and torch.equal(kl1, kl3)
    assert not torch.equal(z1, z2)
    g1, g2 = torch.Generator(device).manual_seed(3), torch.Generator(device).manual_seed(3)
    assert torch.equal(ops.reparameterize(mu, lv, generator=g1)[0], ops.reparameterize(mu, lv, generator=g2)[0])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n_samples", [None, 1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(device, shape, n_samples, dtype):
    mu, lv = inputs(shape, dtype, device)
    st = state(device=device)
    z, kl, log_q = torch.ops.gencore.reparameterize(mu, lv, st, n_samples=n_samples or 0, with_log_q=True)
    eps = eps_of(shape, st, n_samples or 0, dtype=torch.float64, device=device)
    z_ref, kl_ref = reference.reparameterize(mu.double(), lv.double(), n_samples=n_samples, eps=eps)
    lead = (n_samples,) if n_samples else ()
    assert z.shape == (*lead, *shape) and z.dtype == dtype
    assert kl.shape == (shape[0],) and log_q.shape == (*lead, shape[0])
    tol = 1e-12 if dtype == torch.float64 else 3e-6
    # float32 normals differ from float64's by the rounding of the transform.
    torch.testing.assert_close(z.double(), z_ref, atol=tol * 10, rtol=tol)
    n = math.prod(shape[1:])
    torch.testing.assert_close(kl.double(), kl_ref, atol=tol * 10 * max(1, n) ** 0.5, rtol=tol * 10)
    q = torch.distributions.Normal(mu.double(), torch.exp(0.5 * lv.double()))
    lq_ref = q.log_prob(z_ref).reshape(*lead, shape[0], -1).sum(-1)
    torch.testing.assert_close(log_q.double(), lq_ref, atol=tol * 100 * max(1, n) ** 0.5, rtol=tol * 100)


def test_kl_matches_torch_distributions():
    mu, lv = inputs((16, 10))
    _, kl = ops.reparameterize(mu, lv)
    p = torch.distributions.Normal(mu, torch.exp(0.5 * lv))
    want = torch.distributions.kl_divergence(p, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl, want, atol=1e-12, rtol=1e-12)


def test_log_q_accurate_for_tiny_sigma():
    # sigma = 1e-9 around mu = 1: (z - mu) / sigma loses every digit in float32, the fused
    # log_q (from eps) does not.
    mu = torch.ones(4, 8)
    lv = torch.full((4, 8), 2 * math.log(1e-9))
    z, _, lq = ops.reparameterize(mu, lv, generator=torch.Generator().manual_seed(0), return_log_q=True)
    g = torch.Generator().manual_seed(0)
    st = ops.draw_rng_state("cpu", g)
    e = eps_of((4, 8), st)
    want = (-0.5 * e.pow(2) - 0.5 * lv.double() - 0.5 * math.log(2 * math.pi)).sum(1)
    torch.testing.assert_close(lq.double(), want, rtol=1e-6, atol=1e-4)
    assert torch.equal(z, torch.ones(4, 8))  # sigma * eps vanishes next to mu in float32


@pytest.mark.parametrize("n_samples", [None, 4])
def test_gradients_match_reference(device, n_samples):
    shape = (5, 301)
    mu, lv = inputs(shape, torch.float64, device, seed=3)
    st = state(device=device)
    lead = (n_samples,) if n_samples else ()
    gz = torch.randn((*lead, *shape), dtype=torch.float64, device=device)
    gk = torch.randn(shape[0], dtype=torch.float64, device=device)
    gq = torch.randn((*lead, shape[0]), dtype=torch.float64, device=device)
    eps = eps_of(shape, st, n_samples or 0, device=device)

    m1, l1 = mu.clone().requires_grad_(), lv.clone().requires_grad_()
    z, kl, lq = torch.ops.gencore.reparameterize(m1, l1, st, n_samples=n_samples or 0, with_log_q=True)
    got = torch.autograd.grad((z, kl, lq), (m1, l1), (gz, gk, gq))

    m2, l2 = mu.clone().requires_grad_(), lv.clone().requires_grad_()
    z2, kl2 = reference.reparameterize(m2, l2, n_samples=n_samples, eps=eps)
    lq2 = (-0.5 * eps.pow(2) - 0.5 * l2 - 0.5 * math.log(2 * math.pi)).reshape(*lead, shape[0], -1).sum(-1)
    want = torch.autograd.grad((z2, kl2, lq2), (m2, l2), (gz, gk, gq))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-11)


def test_unused_outputs_get_no_gradient_terms():
    mu, lv = inputs((4, 9))
    m, lvr = mu.clone().requires_grad_(), lv.clone().requires_grad_()
    _, kl = ops.reparameterize(m, lvr)
    gm, glv = torch.autograd.grad(kl.sum(), (m, lvr))
    torch.testing.assert_close(gm, mu)
    torch.testing.assert_close(glv, 0.5 * (lv.exp() - 1))


@pytest.mark.parametrize("n_samples", [None, 2])
def test_gradcheck_float64_fixed_seed(n_samples):
    mu, lv = inputs((3, 7), torch.float64, seed=5)

    def f(m, l):
        g = torch.Generator().manual_seed(11)
        return ops.reparameterize(m, l, n_samples=n_samples, generator=g, return_log_q=True)

    assert torch.autograd.gradcheck(f, (mu.requires_grad_(), lv.requires_grad_()))


@pytest.mark.parametrize("n_samples,with_log_q", [(0, False), (3, True), (1, False)])
def test_opcheck(n_samples, with_log_q):
    mu, lv = inputs((4, 10), torch.float32)
    args = (mu.requires_grad_(), lv.requires_grad_(), state())
    torch.library.opcheck(torch.ops.gencore.reparameterize.default, args,
                          {"n_samples": n_samples, "with_log_q": with_log_q})


def test_compile_fullgraph_matches_eager():
    mu, lv = inputs((32, 16), torch.float32)

    def step(m, l, st):
        z, kl, _ = torch.ops.gencore.reparameterize(m, l, st)
        return (z.pow(2).sum(1) + kl).mean()

    st = state()
    eager = step(mu, lv, st)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(mu, lv, st)
    torch.testing.assert_close(compiled, eager)


def test_public_op_compiles_fullgraph():
    mu, lv = inputs((32, 16), torch.float32)

    def f(m, l):
        z, kl = ops.reparameterize(m, l)
        return z.sum() + kl.sum()

    torch.manual_seed(0)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(mu, lv)
    assert torch.isfinite(out)


def test_non_contiguous_and_empty_inputs():
    mu, lv = inputs((6, 40))
    st = state()
    a = torch.ops.gencore.reparameterize(mu[:, ::2], lv[:, ::2], st)
    b = torch.ops.gencore.reparameterize(mu[:, ::2].contiguous(), lv[:, ::2].contiguous(), st)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    z, kl = ops.reparameterize(torch.zeros(0, 5), torch.zeros(0, 5))
    assert z.shape == (0, 5) and kl.shape == (0,)
    z, kl = ops.reparameterize(torch.zeros(3, 0), torch.zeros(3, 0))
    assert z.shape == (3, 0) and torch.equal(kl, torch.zeros(3))


def test_sample_statistics_follow_mu_and_sigma():
    mu = torch.tensor([[-2.0, 0.0, 3.0, 1.0]]).expand(50000, 4).contiguous()
    lv = torch.tensor([[0.0, math.log(4.0), math.log(0.01), -1.0]]).expand(50000, 4).contiguous()
    torch.manual_seed(0)
    z, _ = ops.reparameterize(mu, lv)
    torch.testing.assert_close(z.mean(0), mu[0], atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.exp(0.5 * lv[0]), atol=0, rtol=0.02)


def test_bad_inputs():
    mu = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="logvar must have the shape of mu"):
        ops.reparameterize(mu, torch.zeros(4, 6))
    with pytest.raises(TypeError, match="floating"):
        ops.reparameterize(torch.zeros(4, 5, dtype=torch.int64), torch.zeros(4, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="same dtype"):
        ops.reparameterize(mu, torch.zeros(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"n_samples must be in \[1, 2\^32 - 1\]"):
        ops.reparameterize(mu, mu, n_samples=0)
    with pytest.raises(TypeError, match="n_samples"):
        ops.reparameterize(mu, mu, n_samples=2.0)
    with pytest.raises(ValueError, match="batch first"):
        ops.reparameterize(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.reparameterize(mu.half(), mu.half())
    # The raw op raises its dtype errors as ValueError (C++ has no exception Python raises
    # as TypeError); the public wrappers re-raise them as TypeError (ops/_errors.py).
    with pytest.raises(ValueError, match="rng_state must be int64"):
        torch.ops.gencore.reparameterize(mu, mu, torch.zeros(2))
    with pytest.raises(ValueError, match="rng_state must have shape"):
        torch.ops.gencore.reparameterize(mu, mu, torch.zeros(3, dtype=torch.int64))


# --- the learned prior: kl = KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)) ---------------


def prior_inputs(shape, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(100 + seed)
    pm = torch.randn(shape, generator=g, dtype=torch.float64)
    pl = torch.randn(shape, generator=g, dtype=torch.float64) * 0.7
    return pm.to(device, dtype), pl.to(device, dtype)


def kl_torch(mu, lv, pm, pl):
    q = torch.distributions.Normal(mu, torch.exp(0.5 * lv))
    p = torch.distributions.Normal(pm, torch.exp(0.5 * pl))
    return torch.distributions.kl_divergence(q, p).reshape(mu.shape[0], -1).sum(1)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 3, 5), (7, 4099), (9,)])
@pytest.mark.parametrize("n_samples", [None, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prior_matches_torch_distributions(device, shape, n_samples, dtype):
    mu, lv = inputs(shape, dtype, device, seed=1)
    pm, pl = prior_inputs(shape, dtype, device)
    st = state(device=device)
    z, kl, lq = torch.ops.gencore.reparameterize(mu, lv, st, pm, pl, n_samples=n_samples or 0, with_log_q=True)
    z0, _, lq0 = torch.ops.gencore.reparameterize(mu, lv, st, n_samples=n_samples or 0, with_log_q=True)
    # The prior changes only the KL: the same eps, z and log_q.
    assert torch.equal(z, z0) and torch.equal(lq, lq0)
    want = kl_torch(mu.double(), lv.double(), pm.double(), pl.double())
    n = math.prod(shape[1:])
    tol = 1e-12 if dtype == torch.float64 else 3e-6
    torch.testing.assert_close(kl.double(), want, atol=tol * 10 * max(1, n) ** 0.5, rtol=tol * 10)


def test_prior_of_zeros_is_the_standard_normal_prior():
    mu, lv = inputs((6, 33), seed=2)
    zero = torch.zeros_like(mu)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    z1, kl1 = ops.reparameterize(mu, lv, generator=g())
    z2, kl2 = ops.reparameterize(mu, lv, prior_mu=zero, prior_logvar=zero, generator=g())
    assert torch.equal(z1, z2)
    torch.testing.assert_close(kl1, kl2, atol=1e-13, rtol=1e-13)


def test_one_prior_tensor_means_zero_for_the_other():
    mu, lv = inputs((5, 8), seed=3)
    pm, pl = prior_inputs((5, 8))
    zero = torch.zeros_like(mu)
    torch.testing.assert_close(ops.reparameterize(mu, lv, prior_mu=pm)[1], kl_torch(mu, lv, pm, zero))
    torch.testing.assert_close(ops.reparameterize(mu, lv, prior_logvar=pl)[1], kl_torch(mu, lv, zero, pl))


def test_prior_kl_is_zero_for_equal_gaussians_and_keeps_digits_when_nearly_equal():
    mu, lv = inputs((4, 64), torch.float32, seed=4)
    assert torch.equal(ops.reparameterize(mu, lv, prior_mu=mu, prior_logvar=lv)[1], torch.zeros(4))
    # logvar - prior_logvar of 1e-6 .. 0.3: e^x - 1 - x cancels in the direct form (float32
    # keeps no digit of it at 1e-4); the kernel's series keeps them.
    x = torch.cat([torch.full((1, 64), 1e-4), torch.full((1, 64), -1e-3), torch.full((1, 64), 1e-6),
                   torch.logspace(-6, math.log10(0.3), 64).reshape(1, 64)])
    pl = lv - x
    kl = ops.reparameterize(mu, lv, prior_mu=mu, prior_logvar=pl)[1]
    x64 = lv.double() - pl.double()
    want = 0.5 * (torch.expm1(x64) - x64).sum(1)
    torch.testing.assert_close(kl.double(), want, rtol=2e-6, atol=0)
    naive = 0.5 * ((lv - pl).exp() - 1 - (lv - pl)).sum(1)  # what a float32 reference gets
    assert ((naive.double() - want).abs() / want).max() > 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prior_is_safe_for_large_logvar_differences(dtype):
    # |logvar - prior_logvar| = 30 both ways, and far-apart means: finite KL and gradients
    # equal to float64's.
    lv = torch.tensor([[30.0, -30.0, 0.0, 15.0], [-30.0, 30.0, -20.0, 0.0]], dtype=dtype)
    pl = torch.tensor([[0.0, 0.0, 30.0, -15.0], [0.0, 0.0, 10.0, -30.0]], dtype=dtype)
    mu = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1e3, -1.0, 2.0]], dtype=dtype)
    pm = torch.zeros_like(mu)
    args = [t.clone().requires_grad_() for t in (mu, lv, pm, pl)]
    _, kl = ops.reparameterize(args[0], args[1], prior_mu=args[2], prior_logvar=args[3])
    grads = torch.autograd.grad(kl.sum(), args)
    ref = [t.double().requires_grad_() for t in (mu, lv, pm, pl)]
    kl_ref = kl_torch(*ref)
    grads_ref = torch.autograd.grad(kl_ref.sum(), ref)
    assert torch.isfinite(kl).all() and all(torch.isfinite(g).all() for g in grads)
    rtol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(kl.double(), kl_ref.detach(), rtol=rtol, atol=0)
    for g, gr in zip(grads, grads_ref):
        torch.testing.assert_close(g.double(), gr, rtol=rtol, atol=1e-30)


def test_prior_mean_equal_to_mu_under_a_tiny_prior_variance_is_finite():
    # prior_logvar = -100: e^-prior_logvar overflows float32, but (mu - prior_mu)^2 e^-pl
    # is 0 at mu = prior_mu, and the KL (~ 0.5 (e^x - 1 - x), x = 100 + logvar) is finite.
    mu = torch.ones(2, 3)
    lv = torch.full((2, 3), -85.0)
    pl = torch.full((2, 3), -100.0)
    m, l, p = mu.clone().requires_grad_(), lv.clone().requires_grad_(), pl.clone().requires_grad_()
    _, kl = ops.reparameterize(m, l, prior_mu=mu, prior_logvar=p)
    x = torch.tensor(15.0, dtype=torch.float64)
    torch.testing.assert_close(kl.double(), torch.full((2,), 1.5 * (math.expm1(15.0) - 15.0), dtype=torch.float64),
                               rtol=1e-5, atol=0)
    grads = torch.autograd.grad(kl.sum(), (m, l, p))
    assert torch.equal(grads[0], torch.zeros(2, 3)) and torch.isfinite(grads[1]).all()
    torch.testing.assert_close(grads[2].double(), -0.5 * torch.expm1(x).expand(2, 3), rtol=1e-5, atol=0)


@pytest.mark.parametrize("n_samples", [None, 4])
def test_prior_gradients_match_reference(device, n_samples):
    shape = (5, 301)
    mu, lv = inputs(shape, torch.float64, device, seed=3)
    pm, pl = prior_inputs(shape, torch.float64, device, seed=3)
    st = state(device=device)
    lead = (n_samples,) if n_samples else ()
    gz = torch.randn((*lead, *shape), dtype=torch.float64, device=device)
    gk = torch.randn(shape[0], dtype=torch.float64, device=device)
    gq = torch.randn((*lead, shape[0]), dtype=torch.float64, device=device)
    eps = eps_of(shape, st, n_samples or 0, device=device)

    a = [t.clone().requires_grad_() for t in (mu, lv, pm, pl)]
    z, kl, lq = torch.ops.gencore.reparameterize(a[0], a[1], st, a[2], a[3], n_samples=n_samples or 0,
                                                 with_log_q=True)
    got = torch.autograd.grad((z, kl, lq), a, (gz, gk, gq))
    b = [t.clone().requires_grad_() for t in (mu, lv, pm, pl)]
    z2, kl2 = reference.reparameterize(b[0], b[1], n_samples=n_samples, eps=eps, prior_mu=b[2], prior_logvar=b[3])
    lq2 = (-0.5 * eps.pow(2) - 0.5 * b[1] - 0.5 * math.log(2 * math.pi)).reshape(*lead, shape[0], -1).sum(-1)
    want = torch.autograd.grad((z2, kl2, lq2), b, (gz, gk, gq))
    for name, x, y in zip(("mu", "logvar", "prior_mu", "prior_logvar"), got, want):
        torch.testing.assert_close(x, y, atol=1e-11, rtol=1e-11, msg=name)


@pytest.mark.parametrize("n_samples", [None, 2])
def test_prior_gradcheck_float64_fixed_seed(n_samples):
    mu, lv = inputs((3, 7), torch.float64, seed=5)
    pm, pl = prior_inputs((3, 7), torch.float64, seed=5)

    def f(m, l, a, b):
        g = torch.Generator().manual_seed(11)
        return ops.reparameterize(m, l, prior_mu=a, prior_logvar=b, n_samples=n_samples, generator=g,
                                  return_log_q=True)

    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (mu, lv, pm, pl)))


@pytest.mark.parametrize("n_samples,with_log_q", [(0, False), (3, True)])
def test_prior_opcheck(n_samples, with_log_q):
    mu, lv = inputs((4, 10), torch.float32)
    pm, pl = prior_inputs((4, 10), torch.float32)
    args = (mu.requires_grad_(), lv.requires_grad_(), state(), pm.requires_grad_(), pl.requires_grad_())
    torch.library.opcheck(torch.ops.gencore.reparameterize.default, args,
                          {"n_samples": n_samples, "with_log_q": with_log_q})


def test_prior_compiles_fullgraph():
    mu, lv = inputs((32, 16), torch.float32)
    pm, pl = prior_inputs((32, 16), torch.float32)

    def f(m, l, a, b):
        z, kl = ops.reparameterize(m, l, prior_mu=a, prior_logvar=b, generator=torch.Generator().manual_seed(0))
        return z.sum() + kl.sum()

    a = [t.clone().requires_grad_() for t in (mu, lv, pm, pl)]
    eager = f(*a)
    ge = torch.autograd.grad(eager, a)
    b = [t.clone().requires_grad_() for t in (mu, lv, pm, pl)]
    compiled = torch.compile(f, backend="aot_eager")(*b)
    gc = torch.autograd.grad(compiled, b)
    torch.testing.assert_close(compiled, eager)
    for x, y in zip(gc, ge):
        torch.testing.assert_close(x, y)


def test_prior_non_contiguous_and_empty():
    mu, lv = inputs((6, 40))
    pm, pl = prior_inputs((6, 40))
    st = state()
    a = torch.ops.gencore.reparameterize(mu[:, ::2], lv[:, ::2], st, pm[:, 1::2], pl[:, ::2])
    b = torch.ops.gencore.reparameterize(mu[:, ::2].contiguous(), lv[:, ::2].contiguous(), st,
                                         pm[:, 1::2].contiguous(), pl[:, ::2].contiguous())
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    z, kl = ops.reparameterize(torch.zeros(0, 5), torch.zeros(0, 5), prior_mu=torch.zeros(0, 5))
    assert z.shape == (0, 5) and kl.shape == (0,)
    z, kl = ops.reparameterize(torch.zeros(3, 0), torch.zeros(3, 0), prior_logvar=torch.zeros(3, 0))
    assert z.shape == (3, 0) and torch.equal(kl, torch.zeros(3))


def test_prior_bad_inputs():
    mu = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="prior_mu must have the shape of mu"):
        ops.reparameterize(mu, mu, prior_mu=torch.zeros(4, 6))
    with pytest.raises(ValueError, match="prior_logvar must have the shape of mu"):
        ops.reparameterize(mu, mu, prior_mu=mu, prior_logvar=torch.zeros(5))
    with pytest.raises(TypeError, match="same dtype"):
        ops.reparameterize(mu, mu, prior_logvar=torch.zeros(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="same device"):
        ops.reparameterize(mu, mu, prior_mu=torch.zeros(4, 5, device="meta"))
    with pytest.raises(TypeError, match="prior_mu must be a tensor"):
        ops.reparameterize(mu, mu, prior_mu=0.0)
    # The raw op takes both or neither.
    with pytest.raises(ValueError, match="prior_mu and prior_logvar must be given together, got only prior_mu"):
        torch.ops.gencore.reparameterize(mu, mu, state(), mu)
    with pytest.raises(ValueError, match="given together, got only prior_logvar"):
        torch.ops.gencore.reparameterize(mu, mu, state(), None, mu)


def test_prior_meta_tensors_give_shapes():
    mu = torch.zeros(4, 5, device="meta")
    z, kl, lq = torch.ops.gencore.reparameterize(mu, mu, state(device="meta"), mu, mu, n_samples=2, with_log_q=True)
    assert z.shape == (2, 4, 5) and kl.shape == (4,) and lq.shape == (2, 4) and z.device.type == "meta"


@pytest.mark.cuda
def test_cuda_generator_on_cpu_tensor_is_rejected():
    with pytest.raises(ValueError, match="generator is on"):
        ops.reparameterize(torch.zeros(2, 3), torch.zeros(2, 3), generator=torch.Generator("cuda"))


@pytest.mark.cuda
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n_samples", [0, 3])
def test_cuda_normals_equal_cpu_normals(shape, n_samples):
    # One (seed, offset): the same eps on both devices (same Philox, same transform).
    st = state()
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 2e-6)):
        cpu = eps_of(shape, st, n_samples, dtype=dtype)
        gpu = eps_of(shape, st, n_samples, dtype=dtype, device="cuda").cpu()
        torch.testing.assert_close(gpu, cpu, atol=tol * 10, rtol=tol)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_types(dtype):
    shape = (37, 1001)
    mu, lv = inputs(shape, torch.float64, "cuda")
    st = state(device="cuda")
    z, kl, lq = torch.ops.gencore.reparameterize(mu.to(dtype), lv.to(dtype), st, n_samples=2, with_log_q=True)
    eps = eps_of(shape, st, 2, device="cuda")
    z_ref, kl_ref = reference.reparameterize(mu.to(dtype).double(), lv.to(dtype).double(), n_samples=2, eps=eps)
    # The error of gencore's half output against float64 is at most twice that of the
    # reference computed in the half type.
    z_half, kl_half = reference.reparameterize(mu.to(dtype), lv.to(dtype), n_samples=2, eps=eps.to(dtype))
    err = (z.double() - z_ref).abs().max()
    err_ref = (z_half.double() - z_ref).abs().max()
    assert err <= 2 * err_ref
    assert (kl.double() - kl_ref).abs().max() <= 2 * (kl_half.double() - kl_ref).abs().max() + 1e-2
    # Gradients in the half type against float64 ones on the same eps.
    m, l = mu.to(dtype).requires_grad_(), lv.to(dtype).requires_grad_()
    zz, kk, _ = torch.ops.gencore.reparameterize(m, l, st, n_samples=2, with_log_q=True)
    gm, gl = torch.autograd.grad(zz.float().sum() + kk.float().sum(), (m, l))
    m64, l64 = mu.to(dtype).double().requires_grad_(), lv.to(dtype).double().requires_grad_()
    z64, k64 = reference.reparameterize(m64, l64, n_samples=2, eps=eps)
    gm64, gl64 = torch.autograd.grad(z64.sum() + k64.sum(), (m64, l64))
    torch.testing.assert_close(gm.double(), gm64, atol=0.05, rtol=0.02)
    torch.testing.assert_close(gl.double(), gl64, atol=0.05, rtol=0.02)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_samples", [0, 3])
def test_cuda_prior_matches_cpu(dtype, n_samples):
    shape = (37, 1001)
    mu, lv = inputs(shape, dtype, seed=7)
    pm, pl = prior_inputs(shape, dtype, seed=7)
    st = state()
    g = torch.Generator().manual_seed(3)
    gz = torch.randn((n_samples, *shape) if n_samples else shape, generator=g).to(dtype)
    gk = torch.randn(shape[0], generator=g).to(dtype)

    def run(device):
        a = [t.to(device).requires_grad_() for t in (mu, lv, pm, pl)]
        z, kl, _ = torch.ops.gencore.reparameterize(a[0], a[1], st.to(device), a[2], a[3], n_samples=n_samples)
        grads = torch.autograd.grad((z, kl), a, (gz.to(device), gk.to(device)))
        return [t.cpu() for t in (z, kl, *grads)]

    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for name, a, b in zip(("z", "kl", "grad_mu", "grad_logvar", "grad_prior_mu", "grad_prior_logvar"),
                          run("cuda"), run("cpu")):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * 10, msg=name)
