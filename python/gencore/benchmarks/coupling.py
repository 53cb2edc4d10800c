"""Benchmark of ``gencore.ops.affine_coupling`` against the pure-PyTorch reference.

Providers: ``gencore`` (the fused op), ``eager`` (:func:`gencore.reference.affine_coupling`)
and ``compile`` (the same reference under ``torch.compile``). Modes: ``forward`` (with
autograd recording), ``backward`` (gradients of a recorded graph w.r.t. x, log_scale
and shift), ``full`` (both). On CUDA the achieved bandwidth of the fused op is also
set against a device-to-device copy.
"""

from __future__ import annotations

import torch

from gencore import ops, reference
from gencore.benchmarks.harness import Measurement, attach_bandwidth, measure_op, op_bench_main

CASES = [(256, 64), (4096, 512), (65536, 256), (64, 16, 32, 32)]
QUICK_CASES = [(256, 64), (4096, 512)]


def _providers():
    compiled = torch.compile(reference.affine_coupling, dynamic=False)
    return {"gencore": ops.affine_coupling, "eager": reference.affine_coupling, "compile": compiled}


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
        case_rows = measure_op(case, providers, lambda f: f(x, ls, t, clamp=clamp), (x, ls, t), (gy, gl),
                               dev, reps)
        rows += case_rows
        # forward moves 4 tensors (3 reads, 1 write); compared with a copy (1 read, 1 write).
        attach_bandwidth(case_rows, 4 * x.numel() * x.element_size(), x)
    return rows


def main(argv=None) -> int:
    return op_bench_main(argv, doc=__doc__, name="coupling", run=run, cases=CASES, quick_cases=QUICK_CASES)


if __name__ == "__main__":
    raise SystemExit(main())
