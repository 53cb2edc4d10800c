#!/usr/bin/env python
"""The tiled sigmoid (SigLIP) loss vs the materialized reference (eager and torch.compile) and
open_clip's SigLipLoss.

    python bench/bench_siglip.py --out bench/results            # CPU, float32
    python bench/bench_siglip.py --device cuda --dtype bfloat16 --out bench/results

The implementation lives in gencore.benchmarks.siglip (on gencore.benchmarks.contrastive).
"""

from gencore.benchmarks.siglip import main

if __name__ == "__main__":
    raise SystemExit(main())
