#!/usr/bin/env python
"""RealNVP training step vs pure-PyTorch eager, and memory_efficient=True against depth.

    python bench/bench_flows.py --out bench/results
"""

from gencore.benchmarks.flows import main

if __name__ == "__main__":
    raise SystemExit(main())
