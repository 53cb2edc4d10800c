#!/usr/bin/env python
"""Fused reparameterized sampling + KL vs the pure-PyTorch reference (eager and torch.compile).

    python bench/bench_reparam.py --out bench/results            # CPU, float32
    python bench/bench_reparam.py --device cuda --dtype bfloat16 --out bench/results

The implementation lives in gencore.benchmarks.reparam, so `gencore bench reparam` runs
the same code from an installed package.
"""

from gencore.benchmarks.reparam import main

if __name__ == "__main__":
    raise SystemExit(main())
