"""Where the time of the contrastive losses' GEMM-chunked CUDA path goes: the SigLIP training
step (forward + backward) at N = 8192, 32768 and 65536 under several chunk budgets, the tile
kernels (up to N = 32768) and the materialized eager reference (where it fits in a quarter of
the free memory), with the host's share of each step.

    python bench/bench_siglip_chunks.py --device cuda --dtype bfloat16 --out bench/results

The GEMM path (csrc/contrastive/contrastive_cuda.cu) cuts the N query rows into chunks of
C rows whose (C, N) logits fit a byte budget (32 MiB by default,
``GENCORE_CONTRASTIVE_CHUNK_BYTES`` overrides it) and issues, per chunk, a few cuBLAS products
and elementwise kernels through the dispatcher. At large N the default gives many small
chunks (N = 65536 in bfloat16: 64 rows each, 1024 chunks), and if the host's cost per chunk
exceeds the GPU's the device waits on the host. Each row reports:

- ``ms``: the median full step (synchronized), interleaved with the other rows of its case;
- ``host ms``: the median time for the Python call of the step to return, from a synchronized
  start, without waiting for the device (the time to enqueue the work; close to ``ms``: the
  step is host-bound, the GPU idles between launches);
- ``peak MiB``: the allocator's peak above what was live before one step;
- the number of chunks the budget gives (the C++ rule, mirrored in :func:`chunk_count`).

For float16 / bfloat16 one more row runs the default budget with the weights rounded once
(``GENCORE_CONTRASTIVE_HALF_WEIGHTS=single``) instead of as hi and lo: three products of the
chunk's size in the step instead of five, at a larger error (see the GEMM path's notes).

The chunk budget does not apply to the CPU kernels (they tile, and hold no chunk): on the CPU
the script runs its rows for a smoke test of the harness only, and says so.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

from gencore import ops, reference
from gencore.benchmarks.contrastive import SIGLIP_BIAS, _inputs
from gencore.benchmarks.harness import _sync, available_bytes, machine_info, peak_memory, time_interleaved

CASES = [(8192, 256), (32768, 128), (65536, 128)]
QUICK_CASES = [(512, 32)]
BUDGETS_MIB = (16, 32, 128, 512)
DEFAULT_BUDGET_MIB = 32  # kChunkBytes in csrc/contrastive/contrastive_cuda.cu
EAGER_MATRICES = 4       # the eager reference holds about four (N, N) matrices at its peak
TILES_UP_TO = 32768      # the tile kernels are timed up to this N (beyond, seconds per step)


def bytes_per_pair(dtype: torch.dtype, planes: int = 2) -> int:
    """What the GEMM path's backward holds per (query, key) pair of a chunk: one logit in the
    accumulation dtype and, for float16 / bfloat16, the weight in the input dtype as hi and
    lo (``planes=2``, the default) or rounded once (``planes=1``: the sigmoid loss under
    ``GENCORE_CONTRASTIVE_HALF_WEIGHTS=single``)."""
    acc = 8 if dtype == torch.float64 else 4
    return acc + (planes * torch.finfo(dtype).bits // 8 if dtype in (torch.float16, torch.bfloat16) else 0)


def chunk_count(n: int, m: int, dtype: torch.dtype, budget_bytes: int, planes: int = 2) -> int:
    """Chunks of the GEMM path's backward for n query rows and m keys: C = budget / (m x
    bytes_per_pair(dtype, planes)), at least 1 and at most n."""
    rows = min(max(budget_bytes // (m * bytes_per_pair(dtype, planes)), 1), n)
    return math.ceil(n / rows)


def _with_env(env: dict[str, str], fn):
    """fn, called with the environment variables ``env`` set (the C++ reads them per call)."""
    def call():
        with mock.patch.dict(os.environ, env):
            return fn()
    return call


def host_ms(fn, device: torch.device, reps: int) -> float:
    """Median time (ms) for ``fn`` to return, each call from a synchronized start."""
    samples = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        _sync(device)
    return statistics.median(samples)


def run(device: str, dtype: torch.dtype, cases, reps: int, budgets=BUDGETS_MIB, progress=None) -> list[dict]:
    """The rows of every case; ``progress(rows)`` after each case (a run cut short by a time
    limit keeps what it measured)."""
    dev = torch.device(device)
    rows = []
    for n, d in cases:
        a, b, s = _inputs(n, d, dev, dtype, 10.0)
        bias = torch.tensor(SIGLIP_BIAS, device=dev, dtype=s.dtype, requires_grad=True)

        def gencore_step():
            return torch.autograd.grad(ops.sigmoid_contrastive_loss(a, b, s, bias), (a, b, s, bias))

        def eager_step():
            return torch.autograd.grad(reference.sigmoid_contrastive_loss(a, b, s, bias), (a, b, s, bias))

        fns, chunks = {}, {}
        for mib in budgets:
            name = f"gemm, {mib} MiB chunks" + (" (default)" if mib == DEFAULT_BUDGET_MIB else "")
            fns[name] = _with_env({"GENCORE_CONTRASTIVE_PATH": "gemm",
                                   "GENCORE_CONTRASTIVE_CHUNK_BYTES": str(mib << 20)}, gencore_step)
            chunks[name] = chunk_count(n, n, dtype, mib << 20)
        if dtype in (torch.float16, torch.bfloat16):
            # The weights rounded once instead of hi and lo: three products of the chunk's size
            # in the step instead of five (csrc/contrastive/contrastive_cuda.cu, the GEMM path).
            name = f"gemm, {DEFAULT_BUDGET_MIB} MiB chunks, weights rounded once"
            fns[name] = _with_env({"GENCORE_CONTRASTIVE_PATH": "gemm", "GENCORE_CONTRASTIVE_HALF_WEIGHTS": "single",
                                   "GENCORE_CONTRASTIVE_CHUNK_BYTES": str(DEFAULT_BUDGET_MIB << 20)}, gencore_step)
            chunks[name] = chunk_count(n, n, dtype, DEFAULT_BUDGET_MIB << 20, planes=1)
        if n <= TILES_UP_TO:
            fns["tile kernels"] = _with_env({"GENCORE_CONTRASTIVE_PATH": "tiles"}, gencore_step)
        eager_bytes = EAGER_MATRICES * n * n * max(torch.finfo(dtype).bits // 8, 4)
        if eager_bytes < 0.25 * available_bytes(dev):
            fns["eager (materialized)"] = eager_step
        timed = time_interleaved(fns, dev, warmup=2, reps=reps)
        for name, fn in fns.items():
            rows.append({"case": f"siglip {n}×{d}", "config": name, "ms": timed[name][0],
                         "p20": timed[name][1], "p80": timed[name][2],
                         "host_ms": host_ms(fn, dev, max(3, reps // 2)), "peak_mib": peak_memory(fn, dev),
                         "chunks": chunks.get(name)})
        del a, b, s, bias
        if progress is not None:
            progress(rows)
    return rows


def table(rows: list[dict], info: dict[str, str]) -> str:
    lines = [f"Device: {info['device']} · torch {info['torch']} · CUDA {info['cuda']} · commit {info['commit']} · "
             f"{info['date']} · {info['dtype']}", ""]
    if info["device_type"] != "cuda":
        lines += ["CPU: the chunk budget and the path do not apply to the CPU kernels; these rows test the "
                  "harness only.", ""]
    lines += ["| case | configuration | chunks | ms (p20–p80) | host ms | host share | × vs eager | peak MiB |",
              "|---|---|---:|---|---:|---:|---:|---:|"]
    eager = {r["case"]: r["ms"] for r in rows if r["config"].startswith("eager")}
    for r in rows:
        x = eager.get(r["case"])
        chunks = "–" if r["chunks"] is None else str(r["chunks"])
        ratio = f"{x / r['ms']:.2f}" if x else "–"
        lines.append(f"| {r['case']} | {r['config']} | {chunks} | {r['ms']:.3f} ({r['p20']:.3f}–{r['p80']:.3f}) "
                     f"| {r['host_ms']:.3f} | {100 * r['host_ms'] / r['ms']:.0f}% | {ratio} | {r['peak_mib']:.1f} |")
    lines += ["", "ms: median full step (forward + backward of the loss, gradients to both features, the scale "
              "and the bias), interleaved with the case's other rows; host ms: median time for the call to "
              "return from a synchronized start; chunks: the GEMM path's row chunks under that budget."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="one small case (a smoke test)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: print only)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    info = machine_info(torch.device(a.device))
    info.update(dtype=a.dtype, device_type=torch.device(a.device).type)
    path = None if a.out is None else a.out / f"siglip-chunks-{a.device}-{a.dtype}.md"

    def save(rows):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(table(rows, info))

    rows = run(a.device, getattr(torch, a.dtype), QUICK_CASES if a.quick else CASES, reps=3 if a.quick else a.reps,
               progress=save)
    print(table(rows, info))
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
