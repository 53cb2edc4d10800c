#!/usr/bin/env python
"""Where the time of the contrastive losses' GEMM-chunked CUDA path goes: the SigLIP training
step under several chunk budgets, the tile kernels and eager, with the host's share.

    python bench/bench_siglip_chunks.py --device cuda --dtype bfloat16 --out bench/results

The implementation lives in gencore.benchmarks.gemm_chunks.
"""

from gencore.benchmarks.gemm_chunks import main

if __name__ == "__main__":
    raise SystemExit(main())
