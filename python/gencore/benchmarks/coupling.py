"""Benchmark of ``gencore.ops.affine_coupling`` against the pure-PyTorch reference.

Providers: ``gencore`` (the fused op), ``eager`` (:func:`gencore.reference.affine_coupling`)
and ``compile`` (the same reference under ``torch.compile``). Modes: ``forward`` (with
autograd recording), ``backward`` (gradients of a recorded graph w.r.t. x, log_scale
and shift), ``full`` (both). On CUDA the achieved bandwidth of the fused op is also
set against a device-to-device copy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gencore import ops, reference
from gencore.benchmarks.harness import (
    Measurement,
    machine_info,
    peak_memory,
    time_interleaved,
    write_results,
)

CASES = [(256, 64), (4096, 512), (65536, 256), (64, 16, 32, 32)]
QUICK_CASES = [(256, 64), (4096, 512)]


def _providers():
    compiled = torch.compile(reference.affine_coupling, dynamic=False)
    return {"gencore": ops.affine_coupling, "eager": reference.affine_coupling, "compile": compiled}


def _copy_bandwidth_gbs(x: torch.Tensor) -> float:
    y = torch.empty_like(x)
    t = time_interleaved({"copy": lambda: y.copy_(x)}, x.device, warmup=5, reps=50)["copy"][0]
    return 2 * x.numel() * x.element_size() / (t * 1e-3) / 1e9


def run(device: str = "cpu", dtype: torch.dtype = torch.float32, cases=CASES, reps: int = 25,
        clamp: float = 2.0):
    dev = torch.device(device)
    providers = _providers()
    rows: list[Measurement] = []
    for shape in cases:
        case = "×".join(map(str, shape))
        gen = torch.Generator(device="cpu").manual_seed(0)
        x, ls, t = (torch.randn(shape, generator=gen).to(dev, dtype).requires_grad_() for _ in range(3))
        gy = torch.randn(shape, generator=gen).to(dev, dtype)
        gl = torch.randn(shape[0], generator=gen).to(dev, dtype)
        inputs = (x, ls, t)

        def forward(f):
            return lambda: f(x, ls, t, clamp=clamp)

        def full(f):
            def step():
                y, logdet = f(x, ls, t, clamp=clamp)
                return torch.autograd.grad((y, logdet), inputs, (gy, gl))
            return step

        graphs = {}

        def make_graph():
            for n, f in providers.items():
                graphs[n] = f(x, ls, t, clamp=clamp)

        def backward(n):
            return lambda: torch.autograd.grad(graphs[n], inputs, (gy, gl), retain_graph=True)

        for mode, fns, setup in (
            ("forward", {n: forward(f) for n, f in providers.items()}, None),
            ("backward", {n: backward(n) for n in providers}, None),
            ("full", {n: full(f) for n, f in providers.items()}, None),
        ):
            if mode == "backward":
                make_graph()
            times = time_interleaved(fns, dev, reps=reps, setup=setup)
            for n, (med, p20, p80) in times.items():
                peak = peak_memory(fns[n], dev) if mode == "full" else None
                rows.append(Measurement(case, mode, n, med, p20, p80, peak))
        graphs.clear()
        if dev.type == "cuda":
            g_full = next(m for m in rows if m.case == case and m.mode == "forward" and m.provider == "gencore")
            # forward moves 4 tensors (3 reads, 1 write); compare with a copy (1 read, 1 write).
            moved = 4 * x.numel() * x.element_size()
            achieved = moved / (g_full.median_ms * 1e-3) / 1e9
            copy_bw = _copy_bandwidth_gbs(x.detach())
            g_full.extra = {"GB/s": achieved, "copy GB/s": copy_bw, "fraction": achieved / copy_bw}
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    p.add_argument("--reps", type=int, default=25)
    p.add_argument("--quick", action="store_true", help="two small cases, few repetitions")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: print only)")
    a = p.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    cases = QUICK_CASES if a.quick else CASES
    rows = run(a.device, dtype, cases, reps=5 if a.quick else a.reps)
    info = machine_info(torch.device(a.device))
    info["dtype"] = a.dtype
    notes = []
    for m in rows:
        if m.extra:
            notes.append(
                f"- {m.case} forward: {m.extra['GB/s']:.0f} GB/s achieved, device-to-device copy "
                f"{m.extra['copy GB/s']:.0f} GB/s ({100 * m.extra['fraction']:.0f}%)"
            )
    from gencore.benchmarks.harness import markdown_table

    text = markdown_table(rows, info, "\n".join(notes))
    print(text)
    if a.out is not None:
        stem = f"coupling-{a.device}-{a.dtype}"
        write_results(rows, a.out, stem, info, "\n".join(notes))
        print(f"wrote {a.out / stem}.csv and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
