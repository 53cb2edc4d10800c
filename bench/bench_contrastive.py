#!/usr/bin/env python
"""Tiled contrastive losses (CLIP, NT-Xent) vs the materialized references (eager and torch.compile).

    python bench/bench_contrastive.py --out bench/results            # CPU, float32
    python bench/bench_contrastive.py --device cuda --dtype bfloat16 --out bench/results

The implementation lives in gencore.benchmarks.contrastive, so `gencore bench contrastive`
runs the same code from an installed package.
"""

from gencore.benchmarks.contrastive import main

if __name__ == "__main__":
    raise SystemExit(main())
