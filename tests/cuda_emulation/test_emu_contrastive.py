"""The CUDA contrastive kernels (csrc/contrastive/contrastive_cuda.cu), run by the SIMT
emulator, against the CPU tiles: clip_loss, nt_xent_loss, contrastive_rows and
sigmoid_contrastive_loss (SigLIP), forward and
backward, on the SIMT (float32/float64, and float16/bfloat16 with
GENCORE_CONTRASTIVE_SIMT=1) and tensor-core (wmma) tile products, with the key tiles split
over gridDim.y (many SMs) or not (one SM)."""

import pytest
import torch

from simt_testing import DTYPES, LOW, assert_matches, cpu_dtype

COVERS = ("clip_loss", "clip_loss_backward", "nt_xent_loss", "nt_xent_loss_backward", "contrastive_rows",
          "contrastive_rows_backward", "sigmoid_contrastive_loss", "sigmoid_contrastive_loss_backward",
          "sigmoid_contrastive_loss_with_grads")

# (N, D): one row, sizes that are no multiple of 4/16/32/64, several 64-row tiles, D = 0
# and D past one wmma slice (32) and one SIMT slice (16). (200, 0): with one SM a block
# visits four key tiles with no D loop between them (only the barrier before the
# tensor-core store orders one tile's readers of shared memory before the next store).
SHAPES = [(1, 1), (3, 5), (17, 33), (70, 0), (200, 0), (130, 40)]


# (dtype, product): the tile kernels, where float32/float64 have the SIMT product only and
# float16/bfloat16 run on tensor cores (wmma), or on the SIMT path with
# GENCORE_CONTRASTIVE_SIMT=1; or the GEMM-chunked path (GENCORE_CONTRASTIVE_PATH=gemm, the
# default for large problems: cuBLAS GEMMs over chunks of rows, the emulated epilogue
# kernels in between; the emulator's GEMM is the CPU's mm on float32 copies). The GEMM path
# runs here in float32 (its products and weights in the accumulation dtype) and bfloat16
# (weights as hi + lo of the input dtype); float64 and float16 are the same templates with
# another type, run in test_gemm_path_every_dtype below and on a GPU (tests/ops).
PATHS = [(torch.float32, "simt"), (torch.float64, "simt"), (torch.float16, "wmma"),
         (torch.float16, "simt"), (torch.bfloat16, "wmma"), (torch.bfloat16, "simt"),
         (torch.float32, "gemm"), (torch.bfloat16, "gemm")]


@pytest.fixture(params=PATHS, ids=lambda p: f"{str(p[0]).removeprefix('torch.')}-{p[1]}")
def dtype(request, monkeypatch):
    dt, product = request.param
    monkeypatch.setenv("GENCORE_CONTRASTIVE_PATH", "gemm" if product == "gemm" else "tiles")
    if product == "gemm" and getattr(request.node, "callspec", None) is not None \
            and request.node.callspec.params.get("sm_count") == 1:
        # The GEMM path does not look at the SM count: its "sm1" cases cut the rows into
        # chunks of a few rows each (the budget 2048 bytes: 3 rows of 130 float32 keys)
        # instead of one chunk, the last one shorter.
        monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", "2048")
    if product == "simt" and dt in LOW:
        monkeypatch.setenv("GENCORE_CONTRASTIVE_SIMT", "1")
    return dt


def features(n, d, dtype, seed, normalize=True):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g)
    if normalize and d > 0:
        a = torch.nn.functional.normalize(a, dim=1)
    return a.to(dtype)


def scalar(v, dtype):
    return torch.tensor(v, dtype=torch.float64 if dtype == torch.float64 else torch.float32)


def check_all(outs, refs, dtype, names, renormalized=False):
    for got, ref, name in zip(outs, refs, names):
        if renormalized and dtype in LOW:
            # NT-Xent normalizes its features in the input dtype before the tiles: the tiles
            # see features rounded after normalization, the float32 reference does not.
            eps = torch.finfo(dtype).eps
            torch.testing.assert_close(got.float(), ref.float(), rtol=8 * eps, atol=40 * eps,
                                       msg=lambda m: f"{name}: {m}")
        elif got.dtype in (torch.float32, torch.float64) and dtype in LOW:
            # the accumulation-dtype statistics (log-sum-exps, the scale's gradient)
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
        else:
            assert_matches(got, ref, dtype, name)


def check_rows(emu, q, k, s, positive, exclude, g, dtype):
    """contrastive_rows and its backward (grad_loss drawn from g) against the CPU."""
    cd = cpu_dtype(dtype)
    loss, lse = emu.call("contrastive_rows", q, k, s, positive, exclude)
    ref = torch.ops.gencore.contrastive_rows(q.to(cd), k.to(cd), s, positive, exclude)
    check_all((loss, lse), ref, dtype, ("loss", "lse"))
    gl = torch.randn(q.shape[0], generator=g).to(dtype)
    outs = emu.call("contrastive_rows_backward", gl, q, k, s, positive, exclude, ref[1])
    refs = torch.ops.gencore.contrastive_rows_backward(gl.to(cd), q.to(cd), k.to(cd), s, positive, exclude,
                                                       ref[1])
    check_all(outs, refs, dtype, ("grad_query", "grad_keys", "grad_scale"))


def parametrize(f):
    return pytest.mark.parametrize("shape", SHAPES, ids=str)(f)


@parametrize
def test_clip_loss(emu, sm_count, shape, dtype):
    n, d = shape
    a, b = features(n, d, dtype, 1), features(n, d, dtype, 2)
    cd = cpu_dtype(dtype)
    s = scalar(7.5, dtype)
    loss, rl, cl = emu.call("clip_loss", a, b, s)
    ref = torch.ops.gencore.clip_loss(a.to(cd), b.to(cd), s)
    check_all((loss, rl, cl), ref, dtype, ("loss", "row_lse", "col_lse"))
    g = scalar(1.3, dtype).to(dtype)  # the CPU gets the same rounded value
    outs = emu.call("clip_loss_backward", g, a, b, s, ref[1], ref[2])
    refs = torch.ops.gencore.clip_loss_backward(g.to(cd), a.to(cd), b.to(cd), s, ref[1], ref[2])
    check_all(outs, refs, dtype, ("grad_image", "grad_text", "grad_scale"))


@parametrize
def test_nt_xent_loss(emu, sm_count, shape, dtype):
    n, d = shape
    if d == 0:
        d = 1  # NT-Xent normalizes its features: a zero-width row has no direction
    z1, z2 = features(n, d, dtype, 3, normalize=False), features(n, d, dtype, 4, normalize=False)
    cd = cpu_dtype(dtype)
    t = scalar(0.2, dtype)
    loss, lse = emu.call("nt_xent_loss", z1, z2, t)
    ref = torch.ops.gencore.nt_xent_loss(z1.to(cd), z2.to(cd), t)
    check_all((loss, lse), ref, dtype, ("loss", "lse"), renormalized=True)
    g = scalar(0.7, dtype).to(dtype)
    outs = emu.call("nt_xent_loss_backward", g, z1, z2, t, ref[1])
    refs = torch.ops.gencore.nt_xent_loss_backward(g.to(cd), z1.to(cd), z2.to(cd), t, ref[1])
    check_all(outs, refs, dtype, ("grad_z1", "grad_z2", "grad_temperature"), renormalized=True)


@pytest.mark.parametrize("with_exclude", [False, True])
@pytest.mark.parametrize("nm", [(1, 2), (5, 3), (50, 130), (130, 70)], ids=str)
def test_contrastive_rows(emu, sm_count, nm, dtype, with_exclude):
    """A rectangular n x m problem (n != m), with and without an excluded key per row."""
    n, m = nm
    q, k = features(n, 24, dtype, 5), features(m, 24, dtype, 6)
    g = torch.Generator().manual_seed(n + m)
    positive = torch.randint(0, m, (n,), generator=g)
    exclude = torch.full((n,), -1)
    if with_exclude and m > 1:
        exclude = (positive + 1 + torch.randint(0, m - 1, (n,), generator=g)) % m
    check_rows(emu, q, k, scalar(4.0, dtype), positive, exclude, g, dtype)


@parametrize
def test_sigmoid_contrastive_loss(emu, sm_count, shape, dtype):
    n, d = shape
    a, b = features(n, d, dtype, 11), features(n, d, dtype, 12)
    cd = cpu_dtype(dtype)
    s, bias = scalar(10.0, dtype), scalar(-10.0, dtype)  # SigLIP's initialisation
    loss = emu.call("sigmoid_contrastive_loss", a, b, s, bias, 0)
    ref = torch.ops.gencore.sigmoid_contrastive_loss(a.to(cd), b.to(cd), s, bias, 0)
    check_all((loss,), (ref,), dtype, ("loss",))
    g = scalar(1.3, dtype).to(dtype)
    outs = emu.call("sigmoid_contrastive_loss_backward", g, a, b, s, bias, 0)
    refs = torch.ops.gencore.sigmoid_contrastive_loss_backward(g.to(cd), a.to(cd), b.to(cd), s, bias, 0)
    check_all(outs, refs, dtype, ("grad_image", "grad_text", "grad_scale", "grad_bias"))
    # The training path: the loss and its gradients at grad_loss = 1 in one call (on the
    # GEMM path one visit of the logits for both).
    outs = emu.call("sigmoid_contrastive_loss_with_grads", a, b, s, bias, 0)
    refs = torch.ops.gencore.sigmoid_contrastive_loss_with_grads(a.to(cd), b.to(cd), s, bias, 0)
    check_all(outs, refs, dtype, ("loss", "grad_image", "grad_text", "grad_scale", "grad_bias"))


@pytest.mark.parametrize("nm_offset", [(1, 2, 1), (5, 3, -2), (50, 130, 64), (130, 70, 70), (130, 70, -130),
                                       (70, 200, 3)], ids=str)
def test_sigmoid_contrastive_rectangular(emu, sm_count, nm_offset, dtype):
    """n != m with the positives on a shifted diagonal (offset m or -n: none at all), at
    scale 100 and bias -10 (logits in [-110, 90])."""
    n, m, offset = nm_offset
    a, b = features(n, 24, dtype, 13), features(m, 24, dtype, 14)
    cd = cpu_dtype(dtype)
    s, bias = scalar(100.0, dtype), scalar(-10.0, dtype)
    loss = emu.call("sigmoid_contrastive_loss", a, b, s, bias, offset)
    ref = torch.ops.gencore.sigmoid_contrastive_loss(a.to(cd), b.to(cd), s, bias, offset)
    check_all((loss,), (ref,), dtype, ("loss",))
    g = scalar(0.6, dtype).to(dtype)
    outs = emu.call("sigmoid_contrastive_loss_backward", g, a, b, s, bias, offset)
    refs = torch.ops.gencore.sigmoid_contrastive_loss_backward(g.to(cd), a.to(cd), b.to(cd), s, bias, offset)
    check_all(outs, refs, dtype, ("grad_image", "grad_text", "grad_scale", "grad_bias"))
    outs = emu.call("sigmoid_contrastive_loss_with_grads", a, b, s, bias, offset)
    refs = torch.ops.gencore.sigmoid_contrastive_loss_with_grads(a.to(cd), b.to(cd), s, bias, offset)
    check_all(outs, refs, dtype, ("loss", "grad_image", "grad_text", "grad_scale", "grad_bias"))


@pytest.mark.parametrize("sms, n, launches", [(132, 130, 4), (1, 260, 2)])
def test_split_and_unsplit_grids(emu, sms, n, launches):
    """With many SMs and few row blocks the key tiles are split over gridDim.y (a second
    kernel merges the splits: two launches per log-sum-exp); with one SM and five row
    blocks they are not (one launch each). Both give the CPU's numbers."""
    emu.configure(sms)
    try:
        a, b = features(n, 20, torch.float32, 7), features(n, 20, torch.float32, 8)
        s = scalar(10.0, torch.float32)
        before = emu.launches()
        loss, rl, cl = emu.call("clip_loss", a, b, s)
        assert emu.launches() - before == launches
        ref = torch.ops.gencore.clip_loss(a, b, s)
        check_all((loss, rl, cl), ref, torch.float32, ("loss", "row_lse", "col_lse"))
    finally:
        emu.configure(132)


def test_large_logits_stay_finite(emu):
    """scale 100 on aligned features: logits near 100, the online log-sum-exp must not overflow."""
    a = features(90, 16, torch.float32, 9)
    s = scalar(100.0, torch.float32)
    loss, rl, cl = emu.call("clip_loss", a, a.clone(), s)
    ref = torch.ops.gencore.clip_loss(a, a.clone(), s)
    assert torch.isfinite(loss) and torch.isfinite(rl).all()
    check_all((loss, rl, cl), ref, torch.float32, ("loss", "row_lse", "col_lse"))


@pytest.mark.parametrize("dtype,scale", [(torch.float64, 1e20), (torch.float64, 1e200), (torch.float32, 1e12)],
                         ids=str)
def test_extreme_scales_match_cpu(emu, dtype, scale):
    """Logits of 1e20 and more: the logit must be one rounded product. A fused
    scale * acc - max (an fma) leaves the row maximum's own exponent off by the product's
    rounding error, thousands at this size, and the sums overflowed or vanished."""
    a, b = features(40, 16, dtype, 5), features(40, 16, dtype, 6)
    s = scalar(scale, dtype)
    outs = emu.call("clip_loss", a, b, s)
    ref = torch.ops.gencore.clip_loss(a, b, s)
    for got, want, name in zip(outs, ref, ("loss", "row_lse", "col_lse")):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0, msg=lambda m: f"{name}: {m}")
    t = scalar(1 / scale, dtype)
    loss, lse = emu.call("nt_xent_loss", a, b, t)
    ref_loss, ref_lse = torch.ops.gencore.nt_xent_loss(a, b, t)
    assert torch.isfinite(loss) and torch.isfinite(lse).all()
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=0)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=0)


@pytest.mark.parametrize("var,value", [("GENCORE_CONTRASTIVE_PATH", "cublas"),
                                       ("GENCORE_CONTRASTIVE_CHUNK_BYTES", "0"),
                                       ("GENCORE_CONTRASTIVE_CHUNK_BYTES", "64k"),
                                       ("GENCORE_CONTRASTIVE_HALF_WEIGHTS", "once")])
def test_bad_path_settings_are_refused(emu, monkeypatch, var, value):
    """A misspelt path, chunk budget or weights' form is an error that names the variable,
    not a silent default."""
    monkeypatch.setenv("GENCORE_CONTRASTIVE_PATH", "gemm")
    monkeypatch.setenv(var, value)
    a, b = features(8, 4, torch.bfloat16, 1), features(8, 4, torch.bfloat16, 2)
    s = scalar(2.0, torch.bfloat16)
    with pytest.raises(ValueError, match=var):
        if var == "GENCORE_CONTRASTIVE_HALF_WEIGHTS":  # read by the sigmoid loss's half types only
            emu.call("sigmoid_contrastive_loss_with_grads", a, b, s, scalar(-1.0, torch.bfloat16), 0)
        else:
            emu.call("clip_loss", a, b, s)


def test_default_path_follows_the_problem_size(emu, monkeypatch):
    """Without GENCORE_CONTRASTIVE_PATH, small problems take the tile kernels and problems of
    2048 x 2048 pairs and more the GEMMs (told apart by their launches: the GEMM path's
    forward is one epilogue launch per chunk and the columns' finishing kernel)."""
    monkeypatch.delenv("GENCORE_CONTRASTIVE_PATH", raising=False)
    monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", str(2048 * 4 * 1024))  # 1024-row chunks
    emu.configure(1)  # the tile path: one launch per log-sum-exp (no split to merge)
    try:
        s = scalar(2.0, torch.float32)
        for n, launches in ((2047, 2), (2048, 3)):
            a, b = features(n, 0, torch.float32, 1), features(n, 0, torch.float32, 2)
            before = emu.launches()
            emu.call("clip_loss", a, b, s)
            assert emu.launches() - before == launches, n
    finally:
        emu.configure(132)


@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_gemm_path_every_dtype(emu, monkeypatch, dt):
    """The GEMM path in every dtype, in chunks of a few rows, on 1111 keys: the query
    gradient's contraction runs split-K (with 132 SMs: 4 slices of 277 keys and 3 left
    over); the row loss with excluded keys and the sigmoid loss with shifted positives,
    forward, backward and the one-visit loss with gradients, against the CPU."""
    monkeypatch.setenv("GENCORE_CONTRASTIVE_PATH", "gemm")
    monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", str(8 * 1111 * 7))  # 7 rows per chunk
    n, m = 20, 1111
    q, k = features(n, 24, dt, 15), features(m, 24, dt, 16)
    cd = cpu_dtype(dt)
    g = torch.Generator().manual_seed(3)
    positive = torch.randint(0, m, (n,), generator=g)
    exclude = (positive + 1 + torch.randint(0, m - 1, (n,), generator=g)) % m
    check_rows(emu, q, k, scalar(4.0, dt), positive, exclude, g, dt)
    s, bias = scalar(100.0, dt), scalar(-10.0, dt)
    outs = emu.call("sigmoid_contrastive_loss_with_grads", q, k, s, bias, 5)
    refs = torch.ops.gencore.sigmoid_contrastive_loss_with_grads(q.to(cd), k.to(cd), s, bias, 5)
    check_all(outs, refs, dt, ("loss", "grad_image", "grad_text", "grad_scale", "grad_bias"))
    gs = scalar(0.6, dt).to(dt)
    outs = emu.call("sigmoid_contrastive_loss_backward", gs, q, k, s, bias, 5)
    refs = torch.ops.gencore.sigmoid_contrastive_loss_backward(gs.to(cd), q.to(cd), k.to(cd), s, bias, 5)
    check_all(outs, refs, dt, ("grad_image", "grad_text", "grad_scale", "grad_bias"))


@pytest.mark.parametrize("dt, planes", [(torch.float32, 2), (torch.bfloat16, 2), (torch.bfloat16, 1)],
                         ids=["float32", "bfloat16", "bfloat16-weights-rounded-once"])
def test_chunk_count_of_the_chunk_benchmark(emu, monkeypatch, dt, planes):
    """bench/bench_siglip_chunks.py reports how many row chunks each budget gives; its rule
    (gencore.benchmarks.gemm_chunks.chunk_count) must be the C++ one. The training step's
    launches are affine in the number of chunks (a fixed count per chunk), so two budgets
    (one chunk, one row per chunk) fix the line and a third budget must land on it."""
    from gencore.benchmarks.gemm_chunks import chunk_count

    monkeypatch.setenv("GENCORE_CONTRASTIVE_PATH", "gemm")
    monkeypatch.setenv("GENCORE_CONTRASTIVE_HALF_WEIGHTS", "single" if planes == 1 else "split")
    n, d = 60, 8
    q, k = features(n, d, dt, 21), features(n, d, dt, 22)
    s, bias = scalar(10.0, dt), scalar(-10.0, dt)

    def launches(budget):
        monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", str(budget))
        before = emu.launches()
        emu.call("sigmoid_contrastive_loss_with_grads", q, k, s, bias, 0)
        return emu.launches() - before

    one, per_row = 1 << 30, 1
    assert (chunk_count(n, n, dt, one, planes), chunk_count(n, n, dt, per_row, planes)) == (1, n)
    base = launches(one)
    per_chunk = (launches(per_row) - base) / (n - 1)
    assert per_chunk >= 1 and per_chunk == int(per_chunk)
    # 7, 16 and 41 rows (float32), 3, 8 and 20 (bfloat16), 4, 11 and 27 (rounded once)
    for budget in (1680, 4000, 9999):
        chunks = chunk_count(n, n, dt, budget, planes)
        # strictly between the two budgets that fixed the line, or the check below repeats them
        assert 1 < chunks < n, (budget, chunks)
        assert launches(budget) == base + (chunks - 1) * per_chunk, budget


# What a chunk of the training step asks of the dispatcher: q_c (a view), the logits'
# product, the split-K product over the slices and the one over the keys left over, V^T q_c;
# for the half types also the concatenation [q_c; q_c]. Every other buffer and view is made
# once per chunk shape, before the first chunk.
HOST_CALLS_PER_CHUNK = {torch.float32: {"aten::narrow": 1, "aten::mm": 3, "aten::bmm": 1},
                        torch.bfloat16: {"aten::cat": 1}}
# The calls that allocate or make views; in bfloat16 the emulated products (float32 copies
# of blocks: narrow, to, mm, copy_, select) run on the host too, so only these are counted.
ALLOCATIONS_AND_VIEWS = {"aten::new_empty", "aten::empty", "aten::new_zeros", "aten::zeros", "aten::full",
                         "aten::view", "aten::transpose", "aten::t", "aten::as_strided", "aten::cat",
                         "aten::contiguous", "aten::clone", "aten::expand", "aten::unsqueeze"}


@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16], ids=str)
def test_gemm_path_host_calls_per_chunk(emu, monkeypatch, dt):
    """Each dispatcher call is host time (about a microsecond) that the chunk's GPU work has to
    hide, and at N = 32768 the bfloat16 step has 256 chunks: the chunk loop calls only what
    changes from chunk to chunk. Counted with the profiler (the ops that the op itself
    calls) as the difference between 24 and 12 chunks of 96 rows against 1111 keys (split-K:
    4 slices and a rest; chunks of at least D rows, so that V^T q_c fits in the spent logits
    in both)."""
    from collections import Counter

    from gencore.benchmarks.gemm_chunks import bytes_per_pair

    monkeypatch.setenv("GENCORE_CONTRASTIVE_PATH", "gemm")
    monkeypatch.setenv("GENCORE_EMU_GEMM_BLOCK", "2048")  # one block per emulated product: fewer calls to record
    n, m, d = 96, 1111, 4
    q, k = features(n, d, dt, 41), features(m, d, dt, 42)
    s, bias = scalar(10.0, dt), scalar(-10.0, dt)

    def calls(rows):
        monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", str(bytes_per_pair(dt) * m * rows))
        emu.ops.sigmoid_contrastive_loss_with_grads(q, k, s, bias, 0)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            emu.ops.sigmoid_contrastive_loss_with_grads(q, k, s, bias, 0)
        counted = Counter(e.name for e in prof.events()
                          if e.cpu_parent is not None and "sigmoid_contrastive_loss_with_grads" in e.cpu_parent.name)
        if dt != torch.float32:
            counted = Counter({name: c for name, c in counted.items() if name in ALLOCATIONS_AND_VIEWS})
        return counted

    few, many = calls(8), calls(4)  # 12 and 24 chunks, none shorter
    assert sum(few.values()) > 0  # the profiler saw the op's calls
    per_chunk = {name: (many[name] - few[name]) / 12 for name in many | few if many[name] != few[name]}
    assert per_chunk == HOST_CALLS_PER_CHUNK[dt]


@pytest.mark.parametrize("dt", LOW, ids=lambda d: str(d).removeprefix("torch."))
def test_gemm_path_half_types_hold_only_their_chunk(emu, monkeypatch, dt):
    """Memory of the GEMM path in float16 / bfloat16: a chunk holds its float32 logits R and
    the weights' hi and lo (the 8 bytes per pair that chunk_rows counts); once the weights
    are out, R's storage takes the split-K partials of V k and then V^T q_c, so the training
    step's peak is the chunk, the float32 gradient accumulators and q_c twice, nothing more
    (a separate partials buffer would add 64 KiB here, a separate V^T q_c 128 KiB). The
    emulated products allocate only their outputs and small blocks, as cuBLAS's allocate
    nothing, so this is the peak on a GPU too (tests/cuda_emulation/memory.py measures
    N = 8192 that way). 512 keys, D = 64, 64-row chunks: split-K into 2 slices."""
    from gencore.benchmarks.harness import peak_memory

    monkeypatch.setenv("GENCORE_CONTRASTIVE_PATH", "gemm")
    n, d, rows = 512, 64, 64
    budget = 8 * n * rows
    monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", str(budget))
    q, k = features(n, d, dt, 31), features(n, d, dt, 32)
    s, bias = scalar(10.0, dt), scalar(-10.0, dt)
    outs = emu.call("sigmoid_contrastive_loss_with_grads", q, k, s, bias, 0)
    refs = torch.ops.gencore.sigmoid_contrastive_loss_with_grads(q.float(), k.float(), s, bias, 0)
    check_all(outs, refs, dt, ("loss", "grad_image", "grad_text", "grad_scale", "grad_bias"))
    peak = peak_memory(lambda: emu.ops.sigmoid_contrastive_loss_with_grads(q, k, s, bias, 0),
                       torch.device("cpu")) * 2**20
    accumulators, q_twice = 2 * n * d * 4, 2 * rows * d * q.element_size()
    # the row sums and the scale's and bias's per-row partials (12 bytes a row), the
    # emulated products' float32 blocks (40 KiB: csrc/contrastive/contrastive_cuda.cu), scalars
    slack = 12 * n + (40 << 10) + 1024
    assert budget + accumulators <= peak <= budget + accumulators + q_twice + slack, peak / 2**20


def _max_error(got, exact):
    return (got.float() - exact).abs().max().item()


@pytest.mark.parametrize("dt", LOW, ids=lambda d: str(d).removeprefix("torch."))
def test_sigmoid_weights_rounded_once(emu, monkeypatch, dt):
    """GENCORE_CONTRASTIVE_HALF_WEIGHTS=single: the sigmoid loss's GEMM path with its
    weights rounded once to the input dtype (three products of the chunk's size in a
    training step instead of five). Its gradients hold the GPU tests' bound, at most twice
    the error of the eager reference run in the same dtype (tests/ops), over shapes where
    one rounding breaks the tighter bound of the default (twice the error of rounding the
    exact result: 1.5 times it at 17 x 33); the float32 outputs (loss, the scale's and
    bias's gradients) are the default's. Its chunk holds 6 bytes per pair, not 8, and takes
    no [q_c; q_c] (the whole step's peak is the chunk and the gradient accumulators)."""
    from gencore import reference as R
    from gencore.benchmarks.harness import peak_memory

    monkeypatch.setenv("GENCORE_CONTRASTIVE_PATH", "gemm")
    differed = False
    for (n, d), scale in (((17, 33), 10.0), ((60, 8), 10.0), ((130, 64), 100.0), ((257, 1), 10.0)):
        q, k = features(n, d, dt, 11), features(n, d, dt, 12)
        s, bias = scalar(scale, dt), scalar(-10.0, dt)
        monkeypatch.setenv("GENCORE_CONTRASTIVE_HALF_WEIGHTS", "split")
        split = emu.call("sigmoid_contrastive_loss_with_grads", q, k, s, bias, 0)
        monkeypatch.setenv("GENCORE_CONTRASTIVE_HALF_WEIGHTS", "single")
        once = emu.call("sigmoid_contrastive_loss_with_grads", q, k, s, bias, 0)
        x32, y32 = q.float().requires_grad_(), k.float().requires_grad_()
        exact = torch.autograd.grad(R.sigmoid_contrastive_loss(x32, y32, scale, -10.0), (x32, y32))
        xl, yl = q.clone().requires_grad_(), k.clone().requires_grad_()
        eager = torch.autograd.grad(R.sigmoid_contrastive_loss(xl, yl, scale, -10.0), (xl, yl))
        for name, got, theirs, e in zip(("grad_image", "grad_text"), once[1:3], eager, exact):
            assert _max_error(got, e) <= 2 * _max_error(theirs, e) + 1e-6, (n, d, name)
        for i in (0, 3, 4):  # loss, grad_scale, grad_bias: float32, from the weights before rounding
            torch.testing.assert_close(once[i], split[i], rtol=0, atol=0)
        differed |= not all(torch.equal(a, b) for a, b in zip(once[1:3], split[1:3]))
    assert differed  # the setting took effect (float16's weights at scale 10 are subnormal: lo is 0)

    n, d, rows = 512, 64, 64
    budget = 6 * n * rows
    monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", str(budget))
    q, k = features(n, d, dt, 31), features(n, d, dt, 32)
    s, bias = scalar(10.0, dt), scalar(-10.0, dt)
    peak = peak_memory(lambda: emu.ops.sigmoid_contrastive_loss_with_grads(q, k, s, bias, 0),
                       torch.device("cpu")) * 2**20
    accumulators = 2 * n * d * 4
    slack = 12 * n + (40 << 10) + 1024  # as in test_gemm_path_half_types_hold_only_their_chunk
    assert budget + accumulators <= peak <= budget + accumulators + slack, peak / 2**20


@pytest.mark.parametrize("weights", ["split", "single"])
def test_gemm_path_short_last_chunk_holds_no_more(emu, monkeypatch, weights):
    """A last chunk shorter than the others (520 query rows in chunks of 64: 8 rows left)
    keeps V^T q_c in the spent logits' storage of a full chunk, as the full chunks do: its
    own R (8 x 512) is too small for the (512, 64) product, which took a buffer of its own
    before (128 KiB here; 8 MiB at N = 8192 in bfloat16 with the weights rounded once, where
    682-row chunks leave 8 rows)."""
    from gencore.benchmarks.gemm_chunks import bytes_per_pair
    from gencore.benchmarks.harness import peak_memory

    dt = torch.bfloat16
    monkeypatch.setenv("GENCORE_CONTRASTIVE_PATH", "gemm")
    monkeypatch.setenv("GENCORE_CONTRASTIVE_HALF_WEIGHTS", weights)
    planes = 1 if weights == "single" else 2
    n, m, d, rows = 520, 512, 64, 64
    budget = bytes_per_pair(dt, planes) * m * rows
    monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", str(budget))
    q, k = features(n, d, dt, 33), features(m, d, dt, 34)
    s, bias = scalar(10.0, dt), scalar(-10.0, dt)
    outs = emu.call("sigmoid_contrastive_loss_with_grads", q, k, s, bias, 0)
    refs = torch.ops.gencore.sigmoid_contrastive_loss_with_grads(q.float(), k.float(), s, bias, 0)
    if weights == "split":
        check_all(outs, refs, dt, ("loss", "grad_image", "grad_text", "grad_scale", "grad_bias"))
    else:
        check_all([outs[i] for i in (0, 3, 4)], [refs[i] for i in (0, 3, 4)], dt, ("loss", "grad_scale", "grad_bias"))
    peak = peak_memory(lambda: emu.ops.sigmoid_contrastive_loss_with_grads(q, k, s, bias, 0),
                       torch.device("cpu")) * 2**20
    accumulators = (n + m) * d * 4
    q_twice = 2 * rows * d * q.element_size() if planes == 2 else 0
    slack = 12 * n + (40 << 10) + 1024  # as in test_gemm_path_half_types_hold_only_their_chunk
    assert budget + accumulators <= peak <= budget + accumulators + q_twice + slack, peak / 2**20
