"""Benchmark of ``gencore.ops.affine_coupling`` and ``masked_affine_coupling`` against the
pure-PyTorch references.

Providers: ``gencore`` (the fused op), ``eager`` (:func:`gencore.reference.affine_coupling`;
for the masked cases :func:`gencore.reference.masked_affine_coupling`: slices, the
elementwise transform, stack or cat) and ``compile`` (the same reference under
``torch.compile``). Modes: ``forward`` (with
autograd recording), ``backward`` (gradients of a recorded graph w.r.t. x, log_scale
and shift), ``full`` (both). On CUDA the achieved bandwidth of the fused op is also
set against a device-to-device copy.
"""

from __future__ import annotations

import torch

from gencore import ops, reference
from gencore.benchmarks.harness import Measurement, attach_bandwidth, measure_op, op_bench_main

# A shape: the elementwise op; (mask, shape): the masked op (x of that shape).
CASES = [(256, 64), (4096, 512), (65536, 256), (64, 16, 32, 32),
         ("alternate", (64, 64)), ("alternate", (4096, 512)), ("half", (64, 16, 32, 32))]
QUICK_CASES = [(256, 64), (4096, 512), ("alternate", (64, 64))]


def _providers(masked: bool):
    ref = reference.masked_affine_coupling if masked else reference.affine_coupling
    return {"gencore": ops.masked_affine_coupling if masked else ops.affine_coupling, "eager": ref,
            "compile": torch.compile(ref, dynamic=False)}


def run(device: str = "cpu", dtype: torch.dtype = torch.float32, cases=CASES, reps: int = 25,
        clamp: float = 2.0):
    dev = torch.device(device)
    rows: list[Measurement] = []
    for entry in cases:
        masked = isinstance(entry[0], str)
        mask, shape = entry if masked else (None, entry)
        case = (f"{mask} " if masked else "") + "×".join(map(str, shape))
        gen = torch.Generator(device="cpu").manual_seed(0)

        def rand(*size):
            return torch.randn(size, generator=gen).to(dev, dtype)

        if masked:
            n_b = shape[1] // 2
            inputs = (rand(*shape).requires_grad_(), rand(shape[0], 2 * n_b, *shape[2:]).requires_grad_())

            def call(f):
                return f(*inputs, mask=mask, clamp=clamp)
            moved = 2 * inputs[0].numel() * inputs[0].element_size() + inputs[1].numel() * inputs[1].element_size()
        else:
            inputs = tuple(rand(*shape).requires_grad_() for _ in range(3))

            def call(f):
                return f(*inputs, clamp=clamp)
            # forward moves 4 tensors (3 reads, 1 write); compared with a copy (1 read, 1 write).
            moved = 4 * inputs[0].numel() * inputs[0].element_size()
        grads = (rand(*shape), rand(shape[0]))
        case_rows = measure_op(case, _providers(masked), call, inputs, grads, dev, reps)
        rows += case_rows
        attach_bandwidth(case_rows, moved, inputs[0])
    return rows


def main(argv=None) -> int:
    return op_bench_main(argv, doc=__doc__, name="coupling", run=run, cases=CASES, quick_cases=QUICK_CASES)


if __name__ == "__main__":
    raise SystemExit(main())
