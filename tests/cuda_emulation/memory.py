"""Peak memory of the contrastive GEMM path's training step, measured without a GPU: the
CUDA code (csrc/contrastive/contrastive_cuda.cu) run under the SIMT emulator, whose
stand-in device tensors are CPU tensors, so that the profiler sees every allocation.

    python tests/cuda_emulation/memory.py --n 8192 --d 256 --out bench/results

What it measures: the peak of live bytes allocated by one call of
``sigmoid_contrastive_loss_with_grads`` (SigLIP's training path: the loss and all four
gradients; the step's later work, scaling them, holds less), above what was live before,
for each dtype. The emulated products (the GPU's cuBLAS GEMMs) allocate only their outputs
plus float32 copies of blocks of their operands, GENCORE_EMU_GEMM_BLOCK values on a side
(64 by default: at most 0.16 MiB at a time; the bound is stated with each result); cuBLAS's own
workspace, allocated once before any timing, is not counted on a GPU either. The ratio is
against eager's peak for the same step on an H200 (bench/results/siglip-cuda-*.md, the
eager reference unchanged since).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from unittest import mock

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BLOCK = 64
# Eager's peak (MiB) for the step at (N, D) = (8192, 256) on an H200, measured by
# bench/bench_siglip.py at commit 23ddefd (bench/results/siglip-cuda-{float32,bfloat16}.md).
EAGER_H200 = {(8192, 256): {torch.float32: 1032.1, torch.bfloat16: 516.1}}


def transient_mib(block: int, dtype: torch.dtype) -> float:
    """The emulated product's largest float32 temporaries (float16 / bfloat16 operands: a
    block of rows and one of columns, each block x 4 block, and two block x block partial
    sums); none for float32 / float64, whose products are the CPU's mm into their outputs."""
    if dtype not in (torch.float16, torch.bfloat16):
        return 0.0
    return (2 * 4 * block * block + 2 * block * block) * 4 / 2**20


def measure(emu, n: int, d: int, dtype: torch.dtype) -> float:
    from gencore.benchmarks.contrastive import _inputs
    from gencore.benchmarks.harness import peak_memory

    a, b, _ = _inputs(n, d, torch.device("cpu"), dtype, 10.0)
    a, b = a.detach(), b.detach()
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    s, bias = torch.tensor(10.0, dtype=acc), torch.tensor(-10.0, dtype=acc)
    return peak_memory(lambda: emu.ops.sigmoid_contrastive_loss_with_grads(a, b, s, bias, 0),
                       torch.device("cpu"))


def main(argv=None, emu=None) -> int:
    """The command line; ``emu``: an emulated library already loaded (a test's), else the
    plain build is built and loaded."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--block", type=int, default=BLOCK,
                   help="the emulated products' block side (smaller: a tighter bound, more allocations to record)")
    p.add_argument("--out", type=Path, default=None, help="folder for siglip-emulated-memory.md")
    args = p.parse_args(argv)
    with mock.patch.dict(os.environ, {"GENCORE_CONTRASTIVE_PATH": "gemm",
                                      "GENCORE_EMU_GEMM_BLOCK": str(args.block)}):
        return _run(args, emu)


def _run(args, emu) -> int:
    from gencore.benchmarks.gemm_chunks import DEFAULT_BUDGET_MIB, chunk_count
    from gencore.benchmarks.harness import machine_info
    from simt_testing import Emulator, simt_build

    budget = os.environ.get("GENCORE_CONTRASTIVE_CHUNK_BYTES")
    if emu is None:
        emu = Emulator(Path(simt_build.build("plain", verbose=False)))
    info = machine_info(torch.device("cpu"))
    lines = [f"Emulated (no GPU) · torch {info['torch']} · commit {info['commit']} · {info['date']} · chunk budget "
             f"{f'the default ({DEFAULT_BUDGET_MIB} MiB)' if budget is None else budget + ' bytes'}",
             "",
             "| case | dtype | chunks | peak MiB (emulated) | of which the emulator's GEMM blocks, at most | eager on an H200 | ratio |",
             "|---|---|---:|---:|---:|---:|---:|"]
    cases = []
    for name in args.dtypes.split(","):
        dt = getattr(torch, name)
        cases.append((name, dt, 2))
        if dt in (torch.float16, torch.bfloat16):  # and with the weights rounded once
            cases.append((f"{name}, weights rounded once", dt, 1))
    for name, dt, planes in cases:
        with mock.patch.dict(os.environ, {"GENCORE_CONTRASTIVE_HALF_WEIGHTS": "single" if planes == 1 else "split"}):
            peak = measure(emu, args.n, args.d, dt)
        eager = EAGER_H200.get((args.n, args.d), {}).get(dt)
        chunks = chunk_count(args.n, args.n, dt, DEFAULT_BUDGET_MIB << 20 if budget is None else int(budget), planes)
        ratio = f"{peak / eager:.1%}" if eager else "–"
        line = (f"| siglip {args.n}×{args.d} | {name} | {chunks} | {peak:.1f} | {transient_mib(args.block, dt):.2f} | "
                f"{f'{eager:.1f}' if eager else '–'} | {ratio} |")
        print(line, flush=True)
        lines.append(line)
    lines += ["",
              "- peak: one call of sigmoid_contrastive_loss_with_grads (the training step's loss and "
              "gradients) on the GEMM path, the CUDA code under the SIMT emulator, allocations above "
              "what was live before (tests/cuda_emulation/memory.py)",
              "- eager on an H200: bench/bench_siglip.py's eager reference, full step, commit 23ddefd "
              "(bench/results/siglip-cuda-*.md); ratio: the emulated peak over it",
              "- weights rounded once: GENCORE_CONTRASTIVE_HALF_WEIGHTS=single (the sigmoid loss's weights "
              "in one plane of the input dtype instead of hi and lo: 6 bytes per pair of a chunk, not 8)"]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "siglip-emulated-memory.md"
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
