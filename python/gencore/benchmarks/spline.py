"""Benchmark of the rational-quadratic spline: :func:`gencore.ops.rq_spline` against the
materialized reference (:func:`gencore.reference.rq_spline`, eager and under
``torch.compile``), nflows' ``unconstrained_rational_quadratic_spline`` (linear tails: the
same parametrization, so its outputs are checked equal to gencore's) and zuko's
``MonotonicRQSTransform`` (its own parametrization: timed, not compared). The peers are
measured when installed (``pip install -r requirements-bench.txt``); neither is a
dependency of gencore.

Cases ``(B, D, K)``: B rows of D elements, K bins, bound 3, inputs ``N(0, 1.5^2)`` (about
5% in the tails), parameters ``N(0, 1)``. Modes: ``forward`` (y and the summed
log-determinant, recording the graph), ``backward`` (gradients of x and the three parameter
tensors), ``full`` (both), and ``inverse`` (the inverse map with its log-determinant and
its backward: ``full`` of ``reverse=True``). All providers of one case in one process,
interleaved, after warm-up; medians; peak memory of one forward+backward.
"""

from __future__ import annotations

import functools
import sys

import torch

from gencore import reference
from gencore.benchmarks.harness import Measurement, measure_op

CASES = [(4096, 64, 8), (65536, 16, 16)]
QUICK_CASES = [(512, 16, 8)]
BOUND = 3.0
PEERS = ("nflows", "zuko")
SKIPPED: list[str] = []


def _nflows():
    try:
        from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline
    except ImportError:
        return None

    def call(x, w, h, d, reverse=False):
        y, ld = unconstrained_rational_quadratic_spline(x, w, h, d, inverse=reverse, tails="linear",
                                                        tail_bound=BOUND)
        return y, ld.sum(1)
    return call


def _zuko():
    try:
        from zuko.transforms import MonotonicRQSTransform
    except ImportError:
        return None

    def call(x, w, h, d, reverse=False):
        t = MonotonicRQSTransform(w, h, d, bound=BOUND)
        y, ladj = (t.inv if reverse else t).call_and_ladj(x)
        return y, ladj.sum(1)
    return call


def _gencore(x, w, h, d, reverse=False):
    from gencore.ops import rq_spline
    return rq_spline(x, w, h, d, bound=BOUND, reverse=reverse)


def _reference(x, w, h, d, reverse=False):
    return reference.rq_spline(x, w, h, d, bound=BOUND, reverse=reverse)


def _inputs(b, d, k, device, dtype):
    g = torch.Generator().manual_seed(0)
    x = (1.5 * torch.randn(b, d, generator=g)).to(device, dtype).requires_grad_()
    params = [torch.randn(b, d, n, generator=g).to(device, dtype).requires_grad_() for n in (k, k, k - 1)]
    return x, params


def run(device: str = "cpu", dtype: torch.dtype = torch.float32, cases=CASES, reps: int = 10) -> list[Measurement]:
    dev = torch.device(device)
    rows: list[Measurement] = []
    SKIPPED.clear()
    compiled = torch.compile(_reference, dynamic=False)
    peers = {"nflows": _nflows(), "zuko": _zuko()}
    for name, fn in peers.items():
        if fn is None:
            SKIPPED.append(f"- {name}: not installed (pip install -r requirements-bench.txt)")
    for b, dim, k in cases:
        x, params = _inputs(b, dim, k, dev, dtype)
        inputs = [x, *params]
        grads = [torch.randn_like(x), torch.randn(b, device=dev, dtype=dtype)]
        if peers["nflows"] is not None:  # the same parametrization: the same numbers
            with torch.no_grad():
                for reverse in (False, True):
                    mine, theirs = _gencore(x, *params, reverse), peers["nflows"](x, *params, reverse)
                    for a, t in zip(mine, theirs):
                        err = (a - t).abs().max().item()
                        if not err <= 1e-2 * (1 + t.abs().max().item()):
                            raise RuntimeError(f"gencore and nflows disagree ({err:.3g}) at {(b, dim, k)}")
        for reverse in (False, True):
            providers = {"gencore": functools.partial(_gencore, reverse=reverse),
                         "eager": functools.partial(_reference, reverse=reverse),
                         "compile": functools.partial(compiled, reverse=reverse)}
            for name, fn in peers.items():
                if fn is not None:
                    providers[name] = functools.partial(fn, reverse=reverse)
            case = f"{b}×{dim}×{k}" + (", inverse" if reverse else "")
            case_rows = measure_op(case, providers, lambda f: f(*inputs), inputs, grads, dev, reps)
            if reverse:  # the inverse is reported as one number, forward+backward
                case_rows = [m for m in case_rows if m.mode == "full"]
                for m in case_rows:
                    m.mode = "inverse"
            rows += case_rows
    return rows


def notes(rows) -> str:
    lines = list(SKIPPED)
    ours = {(m.case, m.mode): m for m in rows if m.provider == "gencore"}
    for m in rows:
        if m.provider in PEERS and (m.case, m.mode) in ours:
            g = ours[(m.case, m.mode)]
            mem = f", peak {g.peak_mib:.1f} MiB against {m.peak_mib:.1f} MiB" if m.peak_mib is not None else ""
            lines.append(f"- {m.case} {m.mode}: {m.provider} {m.median_ms:.3f} ms, gencore "
                         f"{m.median_ms / g.median_ms:.2f}× faster{mem}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from gencore.benchmarks.harness import op_bench_main

    argv = sys.argv[1:] if argv is None else list(argv)
    return op_bench_main(argv, doc=__doc__, name="rq_spline", run=run, cases=CASES, quick_cases=QUICK_CASES,
                         notes=notes)


if __name__ == "__main__":
    raise SystemExit(main())
