"""Benchmark of the tiled contrastive losses against the materialized references.

Providers: ``gencore`` (:func:`gencore.ops.clip_loss` / :func:`gencore.ops.nt_xent_loss` /
:func:`gencore.ops.sigmoid_contrastive_loss`: tiles, no ``N x N`` matrix), ``eager``
(:func:`gencore.reference.clip_loss` / ``nt_xent_loss`` / ``sigmoid_contrastive_loss``: the
logits materialized, then ``F.cross_entropy`` or ``F.logsigmoid``), ``compile`` (the same
references under ``torch.compile``) and, for SigLIP, ``open_clip`` (open_clip's
``SigLipLoss``, one process; its ``loss.py`` is loaded on its own, where
``pip install --no-deps open_clip_torch`` put it: the package's ``__init__`` imports
torchvision, which is not needed here).
Cases are ``(N, D)``; NT-Xent's similarity matrix is ``2N x 2N``. Small and medium cases
report forward, backward and forward+backward; large ones forward+backward only (one
call of the materialized loss takes tens of seconds there). Each row also gives the
GEMM throughput gencore reaches (the matrix products it executes, per second) against
the rate of one large ``torch.mm`` measured in the same process, and a run at a batch
size the materialized losses cannot hold in memory.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import torch.nn.functional as F

from gencore import ops, reference
from gencore.benchmarks.harness import (Measurement, available_bytes, measure_op, one_call_in_this_process,
                                        peak_memory, time_interleaved)

CASES = [(1024, 128), (8192, 256), (32768, 128)]
QUICK_CASES = [(1024, 128), (2048, 64)]
FULL_ONLY_FROM = 16384  # N at and above which only forward+backward is timed
HUGE = (65536, 128)     # gencore alone: one materialized float32 65536^2 matrix is 16 GiB


def _losses(compile_references: bool = True):
    def g_clip(a, b, s):
        return ops.clip_loss(a, b, s)

    def e_clip(a, b, s):
        return reference.clip_loss(a, b, s)

    def g_nt(a, b, t):
        return ops.nt_xent_loss(a, b, temperature=t)

    def e_nt(a, b, t):
        return reference.nt_xent_loss(a, b, temperature=t)

    def g_sig(a, b, s):
        return ops.sigmoid_contrastive_loss(a, b, s, SIGLIP_BIAS)

    def e_sig(a, b, s):
        return reference.sigmoid_contrastive_loss(a, b, s, SIGLIP_BIAS)

    return {
        "clip": (g_clip, e_clip, torch.compile(e_clip, dynamic=False) if compile_references else None, 14.3),
        "nt_xent": (g_nt, e_nt, torch.compile(e_nt, dynamic=False) if compile_references else None, 0.5),
        "siglip": (g_sig, e_sig, torch.compile(e_sig, dynamic=False) if compile_references else None, 10.0),
    }


SIGLIP_BIAS = -10.0  # with the scale 10 above: SigLIP's initialisation


def open_clip_siglip():
    """open_clip's ``SigLipLoss().forward`` as ``f(a, b, scale)``, or None when open_clip is
    not installed. Only ``open_clip/loss.py`` is executed (it imports torch alone)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "loss.py"
    mod_spec = importlib.util.spec_from_file_location("_open_clip_loss", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    loss = mod.SigLipLoss()
    bias = {}

    def f(a, b, s):
        key = (a.device, s.dtype)
        if key not in bias:
            bias[key] = torch.tensor(SIGLIP_BIAS, device=a.device, dtype=s.dtype)
        return loss(a, b, s, bias[key])

    return f


def gemm_flops(loss: str, n: int, d: int) -> float:
    """Floating-point operations of the matrix products gencore runs for forward+backward.

    CLIP and SigLIP: the ``N x N x D`` product once forward, three times backward
    (recompute, ``W k``, ``W^T q``). NT-Xent on ``M = 2N`` rows visits only the tiles on and above the diagonal:
    half of the ``M x M x D`` product forward and half backward, plus the two gradient
    products on those tiles.
    """
    if loss in ("clip", "siglip"):
        return 4 * 2.0 * n * n * d
    m = 2 * n
    return (0.5 + 0.5 + 1.0) * 2.0 * m * m * d


def matmul_rate(d: int, device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of ``(4096, d) @ (d, 4096)``, the shape of the tile products, best of 5."""
    a = torch.randn(4096, d, device=device, dtype=dtype)
    b = torch.randn(4096, d, device=device, dtype=dtype)
    t = time_interleaved({"mm": lambda: a @ b.T}, device, warmup=2, reps=5)["mm"][1]
    return 2.0 * 4096 * 4096 * d / (t * 1e-3)


def _inputs(n, d, device, dtype, scale):
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(n, d, generator=g), dim=1)
    b = F.normalize(a + 0.5 * torch.randn(n, d, generator=g), dim=1)
    a = a.to(device, dtype).requires_grad_()
    b = b.to(device, dtype).requires_grad_()
    s = torch.tensor(scale, device=device, dtype=torch.float32 if dtype != torch.float64 else dtype,
                     requires_grad=True)
    return a, b, s


def run(device: str = "cpu", dtype: torch.dtype = torch.float32, cases=CASES, reps: int = 10,
        huge: bool | None = None, names=("clip", "nt_xent")):
    """Rows of every case for the losses ``names`` (``clip``, ``nt_xent``, ``siglip``)."""
    dev = torch.device(device)
    rows: list[Measurement] = []
    SKIPPED.clear()
    losses = {k: v for k, v in _losses().items() if k in names}
    peer = open_clip_siglip() if "siglip" in names else None
    if "siglip" in names and peer is None:
        SKIPPED.append("open_clip not installed: its SigLipLoss not measured "
                       "(pip install --no-deps open_clip_torch==3.3.0)")
    rates = {}
    for n, d in cases:
        if d not in rates:
            rates[d] = matmul_rate(d, dev, dtype)
        for name, (g, e, c, scale) in losses.items():
            a, b, s = _inputs(n, d, dev, dtype, scale)
            case = f"{name} {n}×{d}"
            providers = {"gencore": g, "eager": e, "compile": c}
            if name == "siglip" and peer is not None:
                providers["open_clip"] = peer
            for provider, need in _materialized_need(name, n, dtype).items():
                if provider not in providers:
                    continue
                if need > 0.7 * available_bytes(dev):
                    del providers[provider]
                    SKIPPED.append(f"{case}: {provider} skipped, it would need about {need / 2**30:.0f} GiB "
                                   f"(several {_materialized_gib(name, n, dtype):.0f} GiB matrices)")
            one = torch.ones((), device=dev, dtype=dtype)
            if n < FULL_ONLY_FROM:
                case_rows = measure_op(case, providers, lambda f: (f(a, b, s),), (a, b, s), (one,), dev, reps)
            else:
                case_rows = _full_only(case, providers, (a, b, s), dev)
            full = next(m for m in case_rows if m.mode == "full" and m.provider == "gencore")
            achieved = gemm_flops(name, n, d) / (full.median_ms * 1e-3)
            full.extra = {"GFLOP/s": achieved / 1e9, "mm GFLOP/s": rates[d] / 1e9, "fraction": achieved / rates[d]}
            rows += case_rows
    if huge is None:
        huge = list(cases) == CASES  # the full benchmark, not --quick
    if huge:
        rows += _huge(dev, dtype, names)
    return rows


def _full_only(case, providers, inputs, dev):
    fns = {n: (lambda f=f: torch.autograd.grad(f(*inputs), inputs)) for n, f in providers.items()}
    rows = []
    for n, (med, p20, p80) in time_interleaved(fns, dev, warmup=1, reps=3).items():
        rows.append(Measurement(case, "full", n, med, p20, p80, peak_memory(fns[n], dev)))
    return rows


def _huge(dev, dtype, names):
    """gencore alone at N = 65536: time and extra memory of one forward+backward of each
    loss, each in a fresh process so that the peak resident set (CPU) or the allocator's
    peak (CUDA) belongs to that call alone."""
    n, d = HUGE
    rows = []
    for name in names:
        cmd = [sys.executable, "-m", "gencore.benchmarks.contrastive", "--huge-child", name, str(n), str(d),
               dev.type, str(dtype).removeprefix("torch.")]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        rows.append(Measurement(f"{name} {n}×{d}", "full", "gencore", r["ms"], r["ms"], r["ms"], r["extra_mib"],
                                {"loss": r["loss"], "finite": r["finite"],
                                 "materialized_gib": _materialized_gib(name, n, dtype)}))
    return rows


def _huge_child(name: str, n: int, d: int, device: str, dtype: str) -> dict:
    dev, dt = torch.device(device), getattr(torch, dtype)
    g, _, _, scale = _losses(compile_references=False)[name]
    a, b, s = _inputs(n, d, dev, dt, scale)

    def call():
        loss = g(a, b, s)
        return loss, torch.autograd.grad(loss, (a, b, s))

    (loss, grads), ms, extra = one_call_in_this_process(call, dev)
    finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(x).all()) for x in grads)
    return {"ms": ms, "extra_mib": extra, "loss": loss.item(), "finite": finite}


SKIPPED: list[str] = []


def _materialized_gib(name, n, dtype=torch.float32):
    m = 2 * n if name == "nt_xent" else n
    return m * m * torch.finfo(dtype).bits / 8 / 2**30


def _materialized_need(name, n, dtype) -> dict[str, float]:
    """Bytes the materialized providers hold at their peak: measured here at N = 8192,
    eager keeps about four ``M x M`` matrices alive, torch.compile about two."""
    one = _materialized_gib(name, n, dtype) * 2**30
    return {"eager": 4 * one, "compile": 2 * one, "open_clip": 4 * one}


def notes(rows) -> str:
    lines = list(SKIPPED)
    if any(m.case.startswith("siglip") and m.provider == "gencore" for m in rows):
        lines.append("- siglip: gencore's forward, recording the graph, also forms the gradients (a gradient "
                     "will be wanted: sigmoid_contrastive_loss_with_grads) and its backward only scales them, "
                     "so the full step is the figure to compare")
    ours = {(m.case, m.mode): m for m in rows if m.provider == "gencore"}
    for m in rows:
        if m.provider == "open_clip" and (m.case, m.mode) in ours:
            g = ours[(m.case, m.mode)]
            mem = f", peak {g.peak_mib:.1f} MiB against {m.peak_mib:.1f} MiB" if m.peak_mib is not None else ""
            lines.append(f"- {m.case} {m.mode}: open_clip's SigLipLoss {m.median_ms:.3f} ms, gencore "
                         f"{m.median_ms / g.median_ms:.2f}× faster{mem}")
    for m in rows:
        if "GFLOP/s" in m.extra:
            lines.append(f"- {m.case}: gencore's products run at {m.extra['GFLOP/s']:.0f} GFLOP/s, "
                         f"{100 * m.extra['fraction']:.0f}% of one (4096, D) @ (D, 4096) torch.mm here "
                         f"({m.extra['mm GFLOP/s']:.0f} GFLOP/s; its 64 MiB output makes it partly "
                         f"memory-bound, so 512-row tiles can beat it)")
        if "materialized_gib" in m.extra:
            lines.append(f"- {m.case}, gencore only: forward+backward {m.median_ms / 1e3:.1f} s, "
                         f"{m.peak_mib:.0f} MiB of extra memory (peak resident set increase of a fresh "
                         f"process, inputs excluded), "
                         f"finite loss and gradients: {m.extra['finite']}; one float32 matrix of "
                         f"the materialized logits alone would take {m.extra['materialized_gib']:.0f} GiB")
    return "\n".join(lines)


def main(argv=None) -> int:
    from gencore.benchmarks.harness import op_bench_main

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--huge-child"]:
        print(json.dumps(_huge_child(argv[1], int(argv[2]), int(argv[3]), argv[4], argv[5])))
        return 0
    return op_bench_main(argv, doc=__doc__, name="contrastive", run=run, cases=CASES, quick_cases=QUICK_CASES,
                         notes=notes)


if __name__ == "__main__":
    raise SystemExit(main())
