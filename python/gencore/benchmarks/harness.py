"""Timing and memory harness shared by every op benchmark.

Method: all providers of one case run in one process, interleaved (the order rotates
every repetition so drift and turbo effects hit every provider alike), after warm-up
(which also triggers torch.compile). Each sample times one call, synchronizing the
device; the median and the 20th/80th percentiles are reported. Peak memory is measured
in a separate pass: the high-water mark of live bytes allocated during one call,
above what was live before it (CPU: the allocation events of torch.profiler; CUDA:
the caching allocator's statistics).
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["Measurement", "peak_memory", "time_interleaved", "write_results", "machine_info", "measure_op",
           "copy_bandwidth_gbs", "attach_bandwidth", "op_bench_main"]


@dataclass
class Measurement:
    case: str
    mode: str
    provider: str
    median_ms: float
    p20_ms: float
    p80_ms: float
    peak_mib: float | None = None
    extra: dict = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    warmup: int = 3,
    reps: int = 25,
    setup: Callable[[], None] | None = None,
) -> dict[str, tuple[float, float, float]]:
    """Median, p20 and p80 in milliseconds of each function, timed interleaved.

    ``setup`` (untimed) runs before every timed call.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            if setup:
                setup()
            fns[n]()
    _sync(device)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            if setup:
                setup()
            _sync(device)
            t0 = time.perf_counter()
            fns[n]()
            _sync(device)
            samples[n].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for n, s in samples.items():
        q = statistics.quantiles(s, n=5) if len(s) >= 5 else [min(s)] * 4
        out[n] = (statistics.median(s), q[0], q[3])
    return out


def peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """Peak of live bytes (MiB) allocated while ``fn`` runs, above what was live before."""
    fn()  # warm (compilation, caches) before measuring
    _sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    # The profiler records every CPU allocation and free in order; the peak is the
    # highest running sum.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def one_call_in_this_process(fn: Callable[[], object], device: torch.device) -> tuple[object, float, float]:
    """``(result, ms, extra MiB)`` of one call of ``fn`` in a process that has done little
    else: the wall time, and the peak resident set's increase (CPU) or the allocator's peak
    above what was live before (CUDA), so the memory is that call's alone."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        extra = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return result, (time.perf_counter() - t0) * 1e3, extra


def available_bytes(device: torch.device) -> float:
    """Free memory of the device: CUDA's free bytes, or the system's MemAvailable."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return float("inf")


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info(device: torch.device) -> dict[str, str]:
    if device.type == "cuda":
        dev = torch.cuda.get_device_name(device)
    else:
        dev = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        dev = f"{line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads"
                        break
        except OSError:
            pass
    return {
        "device": dev,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "commit": _git_commit(),
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def write_results(
    rows: Sequence[Measurement], out_dir: Path, stem: str, info: dict[str, str], notes: str = ""
) -> tuple[Path, Path]:
    """Writes ``stem.csv`` (one row per measurement) and ``stem.md`` (a ratio table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "mode", "provider", "median_ms", "p20_ms", "p80_ms", "peak_mib", *info])
        for m in rows:
            w.writerow([m.case, m.mode, m.provider, f"{m.median_ms:.4f}", f"{m.p20_ms:.4f}",
                        f"{m.p80_ms:.4f}", "" if m.peak_mib is None else f"{m.peak_mib:.2f}",
                        *info.values()])
    md_path.write_text(markdown_table(rows, info, notes))
    return csv_path, md_path


def markdown_table(rows: Sequence[Measurement], info: dict[str, str], notes: str = "") -> str:
    """Per (case, mode): gencore's median and its speed-up over each baseline."""
    by_key: dict[tuple[str, str], dict[str, Measurement]] = {}
    for m in rows:
        by_key.setdefault((m.case, m.mode), {})[m.provider] = m
    lines = [
        f"Device: {info['device']} · torch {info['torch']} · CUDA {info['cuda']} · "
        f"commit {info['commit']} · {info['date']}",
        "",
        "| case | mode | gencore (ms) | eager (ms) | compile (ms) | × vs eager | × vs compile "
        "| peak MiB gencore / eager / compile |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for (case, mode), p in by_key.items():
        g, e, c = p.get("gencore"), p.get("eager"), p.get("compile")

        def ms(m):
            return f"{m.median_ms:.3f}" if m else "–"

        def ratio(b):
            return f"{b.median_ms / g.median_ms:.2f}" if (b and g) else "–"

        def mem(m):
            return f"{m.peak_mib:.1f}" if (m and m.peak_mib is not None) else "–"

        lines.append(
            f"| {case} | {mode} | {ms(g)} | {ms(e)} | {ms(c)} | {ratio(e)} | {ratio(c)} "
            f"| {mem(g)} / {mem(e)} / {mem(c)} |"
        )
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def measure_op(case: str, providers: dict[str, Callable], call: Callable, inputs: Sequence[torch.Tensor],
               grads: Sequence[torch.Tensor], device: torch.device, reps: int) -> list[Measurement]:
    """Forward, backward and forward+backward of every provider on one case.

    ``call(f)`` runs provider ``f`` on the case's inputs and returns its outputs (a tuple
    matching ``grads``); backward takes the gradients w.r.t. ``inputs``. Peak memory is
    measured for forward+backward.
    """
    def full(f):
        return lambda: torch.autograd.grad(call(f), inputs, grads)

    graphs = {}
    rows: list[Measurement] = []
    for mode in ("forward", "backward", "full"):
        if mode == "forward":
            fns = {n: (lambda f=f: call(f)) for n, f in providers.items()}
        elif mode == "backward":
            for n, f in providers.items():
                graphs[n] = call(f)
            fns = {n: (lambda n=n: torch.autograd.grad(graphs[n], inputs, grads, retain_graph=True))
                   for n in providers}
        else:
            graphs.clear()
            fns = {n: full(f) for n, f in providers.items()}
        for n, (med, p20, p80) in time_interleaved(fns, device, reps=reps).items():
            peak = peak_memory(fns[n], device) if mode == "full" else None
            rows.append(Measurement(case, mode, n, med, p20, p80, peak))
    return rows


def copy_bandwidth_gbs(x: torch.Tensor) -> float:
    """Device-to-device copy bandwidth (GB/s, read + write) on a tensor like ``x``."""
    y = torch.empty_like(x)
    t = time_interleaved({"copy": lambda: y.copy_(x)}, x.device, warmup=5, reps=50)["copy"][0]
    return 2 * x.numel() * x.element_size() / (t * 1e-3) / 1e9


def attach_bandwidth(case_rows: Sequence[Measurement], moved_bytes: int, like: torch.Tensor) -> None:
    """On CUDA, records on gencore's forward row the achieved bandwidth (``moved_bytes`` per
    call) and its fraction of a device-to-device copy of a tensor like ``like``."""
    if like.device.type != "cuda":
        return
    fwd = next(m for m in case_rows if m.mode == "forward" and m.provider == "gencore")
    achieved = moved_bytes / (fwd.median_ms * 1e-3) / 1e9
    copy_bw = copy_bandwidth_gbs(like.detach())
    fwd.extra = {"GB/s": achieved, "copy GB/s": copy_bw, "fraction": achieved / copy_bw}


def bandwidth_notes(rows: Sequence[Measurement]) -> str:
    return "\n".join(
        f"- {m.case} forward: {m.extra['GB/s']:.0f} GB/s achieved, device-to-device copy "
        f"{m.extra['copy GB/s']:.0f} GB/s ({100 * m.extra['fraction']:.0f}%)"
        for m in rows if m.extra
    )


def op_bench_main(argv, *, doc: str, name: str, run: Callable, cases, quick_cases, notes=bandwidth_notes) -> int:
    """The command line shared by the op benchmarks: parse, run, print, write results."""
    import argparse

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    p.add_argument("--reps", type=int, default=25)
    p.add_argument("--quick", action="store_true", help="small cases, few repetitions")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: print only)")
    a = p.parse_args(argv)
    rows = run(a.device, getattr(torch, a.dtype), quick_cases if a.quick else cases, reps=5 if a.quick else a.reps)
    info = machine_info(torch.device(a.device))
    info["dtype"] = a.dtype
    text = markdown_table(rows, info, notes(rows))
    print(text)
    if a.out is not None:
        stem = f"{name}-{a.device}-{a.dtype}"
        write_results(rows, a.out, stem, info, notes(rows))
        print(f"wrote {a.out / stem}.csv and .md")
    return 0
