#!/usr/bin/env python
"""Fused affine coupling vs the pure-PyTorch reference (eager and torch.compile).

    python bench/bench_coupling.py --out bench/results            # CPU, float32
    python bench/bench_coupling.py --device cuda --dtype bfloat16 --out bench/results

The implementation lives in gencore.benchmarks.coupling, so `gencore bench coupling`
runs the same code from an installed package.
"""

from gencore.benchmarks.coupling import main

if __name__ == "__main__":
    raise SystemExit(main())
