"""Benchmark of the tiled sigmoid (SigLIP) loss against the materialized reference (eager and
``torch.compile``) and open_clip's ``SigLipLoss``: :func:`gencore.benchmarks.contrastive.run`
on the ``siglip`` loss alone (scale 10, bias -10: SigLIP's initialisation), at N = 1024, 8192
and 32768, and gencore alone at N = 65536 in a fresh process. open_clip is measured when
installed (``pip install --no-deps open_clip_torch==3.3.0``; not a dependency of gencore).
"""

from __future__ import annotations

import functools
import sys

from gencore.benchmarks import contrastive


def main(argv=None) -> int:
    from gencore.benchmarks.harness import op_bench_main

    argv = sys.argv[1:] if argv is None else list(argv)
    run = functools.partial(contrastive.run, names=("siglip",))
    return op_bench_main(argv, doc=__doc__, name="siglip", run=run, cases=contrastive.CASES,
                         quick_cases=contrastive.QUICK_CASES, notes=contrastive.notes)


if __name__ == "__main__":
    raise SystemExit(main())
