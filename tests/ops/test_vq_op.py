"""gencore.ops.nearest_code against its materialized reference: indices, distances and
gradients, odd shapes and tile edges, codes of different norms, exact ties, NaNs, cosine,
gradcheck, opcheck, compile, torch.func, thread-count independence, memory that does not
grow with N x K, and bad inputs."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import gencore.reference as R
from gencore.ops import nearest_code

# (N, K, D): single row/code, sizes off every multiple, more rows than one CPU tile (512)
# and more codes than one (1024), D = 1.
SHAPES = [(1, 1, 1), (3, 5, 2), (97, 17, 1), (1100, 33, 7), (513, 1030, 5), (40, 2100, 16)]


def _data(n, k, d, dtype, device="cpu", seed=0, spread=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    c = torch.randn(k, d, generator=g, dtype=torch.float64)
    if spread:  # code norms from 0.1 to 10
        c = c * torch.logspace(-1, 1, k, dtype=torch.float64)[:, None]
    return (x.to(dtype=dtype, device=device).requires_grad_(), c.to(dtype=dtype, device=device).requires_grad_())


def _exact(x, c, cosine=False):
    x, c = x.detach().double(), c.detach().double()
    if cosine:
        x, c = F.normalize(x, dim=1), F.normalize(c, dim=1)
    return torch.cdist(x, c).pow(2)


@pytest.mark.parametrize("cosine", [False, True], ids=["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,k,d", SHAPES)
def test_matches_reference(device, dtype, n, k, d, cosine):
    x, c = _data(n, k, d, dtype, device)
    idx, sq = nearest_code(x, c, cosine=cosine)
    ridx, rsq = R.nearest_code(x, c, cosine=cosine)
    assert idx.dtype == torch.int64 and sq.dtype == dtype and idx.shape == sq.shape == (n,)
    dist = _exact(x, c, cosine).cpu()
    top = dist.topk(min(2, k), dim=1, largest=False).values
    eps = torch.finfo(dtype).eps
    tol = 64 * eps * (1 + dist.max(1).values)
    chosen = dist.gather(1, idx.cpu()[:, None]).squeeze(1)
    assert (chosen <= top[:, 0] + tol).all()  # a nearest code, up to rounding
    clear = (top[:, -1] - top[:, 0]) > tol
    assert torch.equal(idx[clear.to(device)], ridx[clear.to(device)])  # the reference's where unambiguous
    same = idx == ridx
    tol_sq = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sq[same], rsq[same], **tol_sq)
    # gradients of a weighted sum of the distances, against the reference's autograd
    w = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype=dtype, device=device)
    if same.all():
        g = torch.autograd.grad((sq * w).sum(), (x, c))
        gr = torch.autograd.grad((rsq * w).sum(), (x, c))
        for a, b in zip(g, gr):
            scale = max(1.0, b.abs().max().item())
            torch.testing.assert_close(a, b, atol=tol_sq["atol"] * 10 * scale, rtol=tol_sq["rtol"] * 10)


def test_codes_of_different_norms():
    # The largest dot product is not the nearest code when norms differ: a long code in
    # x's direction loses to a short one close to x.
    x = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[10.0, 0.0], [0.9, 0.3], [-1.0, 0.0]])
    idx, sq = nearest_code(x, c)
    assert idx.item() == 1 and sq.item() == pytest.approx(0.01 + 0.09)
    idx, sq = nearest_code(x, c, cosine=True)  # direction only: the long code is exact
    assert idx.item() == 0 and sq.item() == pytest.approx(0.0, abs=1e-7)


def test_exact_ties_go_to_the_lowest_index(device):
    g = torch.Generator().manual_seed(2)
    base = torch.randn(300, 6, generator=g)
    c = base.repeat(4, 1).to(device)  # copies 1200 apart: in other CPU tiles
    x = torch.randn(700, 6, generator=g).to(device)
    idx, _ = nearest_code(x, c)
    assert (idx < 300).all()
    idx, _ = nearest_code(x, torch.zeros(2000, 6, device=device))
    assert (idx == 0).all()


def test_exact_distance_without_cancellation():
    # |x|^2 = 1e8 leaves the expanded formula a float32 resolution of ~8 in the distance;
    # the reported one is measured from the chosen code.
    x = torch.full((1, 4), 5000.0)
    c = torch.stack([x[0] + 0.005, x[0] + 3.0])
    idx, sq = nearest_code(x, c)
    assert idx.item() == 0
    exact = (c[0].double() - x[0].double()).pow(2).sum().item()  # of the rounded inputs: 9.54e-5
    assert sq.item() == pytest.approx(exact, rel=1e-5)
    _, rsq = R.nearest_code(x, c)  # the reference's own exact recomputation agrees ...
    expanded = (x.pow(2).sum() + c[0].pow(2).sum() - 2 * x[0] @ c[0]).item()
    assert abs(expanded - exact) > 0.5 * exact  # ... where the expanded form is off (here: 0)


def test_nan_rows_and_codes():
    g = torch.Generator().manual_seed(3)
    x, c = torch.randn(20, 4, generator=g), torch.randn(30, 4, generator=g)
    x[5, 1] = float("nan")
    c[11] = float("nan")
    idx, sq = nearest_code(x, c)
    assert idx[5] == 0 and torch.isnan(sq[5])
    assert (idx != 11).all()
    keep = torch.arange(20) != 5
    assert torch.isfinite(sq[keep]).all()
    idx, _ = nearest_code(torch.randn(3, 4), torch.full((5, 4), float("nan")))
    assert (idx == 0).all()


def test_empty_batch_and_zero_dimension(device):
    idx, sq = nearest_code(torch.empty(0, 3, device=device), torch.randn(5, 3, device=device))
    assert idx.shape == sq.shape == (0,)
    idx, sq = nearest_code(torch.empty(4, 0, device=device), torch.empty(5, 0, device=device))
    assert (idx == 0).all() and (sq == 0).all()


def test_non_contiguous_inputs():
    x, c = _data(50, 40, 6, torch.float64)
    xs, cs = x.detach().t().contiguous().t(), c.detach()[::2]
    assert not xs.is_contiguous() and not cs.is_contiguous()
    assert torch.equal(nearest_code(xs, cs)[0], nearest_code(xs.contiguous(), cs.contiguous())[0])


@pytest.mark.parametrize("cosine", [False, True])
def test_gradcheck_float64(cosine):
    x, c = _data(30, 12, 5, torch.float64, seed=4)
    assert torch.autograd.gradcheck(lambda a, b: nearest_code(a, b, cosine=cosine)[1], (x, c))
    # across CPU tiles (more than 512 rows, more than 1024 codes)
    x, c = _data(530, 1030, 2, torch.float64, seed=5)
    assert torch.autograd.gradcheck(lambda a, b: nearest_code(a, b, cosine=cosine)[1], (x, c), fast_mode=True)


def test_gradient_of_an_unused_distance_is_none():
    x, c = _data(5, 3, 2, torch.float64)
    idx, sq = nearest_code(x, c)
    c2 = c.detach().index_select(0, idx)  # the straight-through use: only the indices
    assert torch.autograd.grad(((x - c2) ** 2).sum(), x)[0].shape == x.shape


def test_opcheck(device):
    x, c = _data(9, 7, 4, torch.float32, device, seed=6)
    torch.library.opcheck(torch.ops.gencore.nearest_code.default, (x, c))
    torch.library.opcheck(torch.ops.gencore.nearest_code.default, (x, c), {"cosine": True})


def test_torch_compile_fullgraph():
    x, c = _data(60, 20, 8, torch.float32, seed=7)

    def loss(a, b):
        idx, sq = nearest_code(a, b)
        return sq.mean() + b.index_select(0, idx).sum() * 0.01

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    out, ref = compiled(x, c), loss(x, c)
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(torch.autograd.grad(out, (x, c)), torch.autograd.grad(ref, (x, c))):
        torch.testing.assert_close(a, b)


def test_vmap():
    x, c = _data(24, 9, 3, torch.float32, seed=8)
    batched = torch.func.vmap(lambda a: nearest_code(a, c.detach())[0])(x.detach().reshape(4, 6, 3))
    assert torch.equal(batched.reshape(-1), nearest_code(x, c)[0])


def test_result_independent_of_thread_count():
    x, c = _data(1500, 2500, 16, torch.float32, seed=9)
    n_threads = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(nearest_code(x, c))
    finally:
        torch.set_num_threads(n_threads)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, torch, gencore
    n, k, d = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    x, c = torch.randn(n, d, requires_grad=True), torch.randn(k, d, requires_grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    idx, sq = gencore.ops.nearest_code(x, c)
    sq.sum().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"extra_mib": (peak - base) / 1024, "codes_used": int(idx.unique().numel())}))
""")


def test_memory_does_not_grow_with_n_times_k():
    # N = 65536, K = 8192: one float32 N x K matrix is 2 GiB; the search and its backward
    # need O((N + K) D) (here a few MiB of inputs and gradients) plus one tile (2 MiB).
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, "65536", "8192", "4"], capture_output=True,
                         text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["codes_used"] > 1000
    assert r["extra_mib"] < 48, r


# ----------------------------------------------------------------- bad inputs -------------
def test_bad_inputs():
    x, c = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        nearest_code(torch.randn(4), c)
    with pytest.raises(ValueError, match=r"codebook must have shape \(K, D\)"):
        nearest_code(x, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="same code dimension D"):
        nearest_code(x, torch.randn(5, 4))
    with pytest.raises(ValueError, match="at least one code"):
        nearest_code(x, torch.empty(0, 3))
    with pytest.raises(TypeError, match="same dtype"):
        nearest_code(x, c.double())
    with pytest.raises(TypeError, match="floating-point"):
        nearest_code(x.long(), c.long())
    with pytest.raises(TypeError, match="float32 or float64"):
        nearest_code(x.half(), c.half())
    with pytest.raises(TypeError, match="cosine must be a bool"):
        nearest_code(x, c, cosine=1)
    with pytest.raises(TypeError, match="x must be a tensor"):
        nearest_code([[1.0]], c)
    with pytest.raises(ValueError, match="same device"):
        nearest_code(x, c.to("meta"))
    with pytest.raises(ValueError, match="same device"):
        nearest_code(x.to("meta"), c)


def test_meta_tensors_give_shapes():
    idx, sq = nearest_code(torch.empty(7, 3, device="meta"), torch.empty(5, 3, device="meta"))
    assert idx.shape == sq.shape == (7,) and idx.dtype == torch.int64 and idx.device.type == "meta"


# ----------------------------------------------------------------- CUDA -------------------
@pytest.mark.cuda
@pytest.mark.parametrize("n,k,d", [(1, 1, 1), (70, 130, 17), (5, 5000, 9), (3000, 700, 64)])
def test_cuda_matches_cpu(n, k, d):
    x, c = _data(n, k, d, torch.float32)
    cidx, csq = nearest_code(x, c)
    gidx, gsq = nearest_code(x.cuda(), c.cuda())
    dist = _exact(x, c)
    chosen = dist.gather(1, gidx.cpu()[:, None]).squeeze(1)
    assert (chosen <= dist.min(1).values + 1e-4 * (1 + dist.max(1).values)).all()
    same = gidx.cpu() == cidx
    assert same.float().mean() > 0.99
    torch.testing.assert_close(gsq.cpu()[same], csq[same], rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision(dtype):
    x, c = _data(500, 300, 32, dtype, "cuda")
    idx, sq = nearest_code(x, c)
    ridx, rsq = nearest_code(x.float(), c.float())
    assert (idx == ridx).float().mean() > 0.98
    assert sq.dtype == dtype
