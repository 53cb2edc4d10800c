#!/usr/bin/env python
"""Vector quantization: the tiled nearest-code search and the VQ layer against the eager
one-hot formulation, its torch.compile and vector-quantize-pytorch.

    python bench/bench_vq.py --out bench/results            # CPU, float32
    python bench/bench_vq.py --quick                         # small cases

The implementation lives in gencore.benchmarks.vq, so `gencore bench vq` runs the same
code from an installed package.
"""

from gencore.benchmarks.vq import main

if __name__ == "__main__":
    raise SystemExit(main())
