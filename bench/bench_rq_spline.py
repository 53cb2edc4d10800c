#!/usr/bin/env python
"""The rational-quadratic spline op against the materialized reference (eager and
torch.compile), nflows and zuko.

    python bench/bench_rq_spline.py --out bench/results            # CPU, float32
    python bench/bench_rq_spline.py --device cuda --dtype bfloat16 --out bench/results

The implementation lives in gencore.benchmarks.spline.
"""

from gencore.benchmarks.spline import main

if __name__ == "__main__":
    raise SystemExit(main())
