"""Benchmark of a whole RealNVP training step and of ``memory_efficient=True``.

Training step: RealNVP on 64-D digits, 8 affine couplings with MLP conditioners
32 -> 256 -> 256 -> 64, one AdamW step per call, at batch 512 and 64. ``gencore`` runs the
fused masked coupling op (split, transform and merge in one pass); ``eager`` is the same
architecture and weights with the coupling written in plain PyTorch (slices, the
elementwise transform, ``stack``: :func:`gencore.reference.masked_affine_coupling`). Both use PyTorch's fused
AdamW (what ``gencore.train.fit`` uses) with the same learning rate, so the ratio measures
the coupling alone; ``eager, default AdamW`` (the foreach implementation) is an extra row.

Memory: peak memory of one forward+backward against the number of couplings, with and
without ``memory_efficient=True``, and the step-time ratio between the two. Measured in
the steady state of training: the parameters' ``.grad`` buffers exist before the measured
call (as after the first step), so the peak is activations and temporaries.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gencore import reference
from gencore.benchmarks.harness import Measurement, machine_info, peak_memory, time_interleaved, write_results
from gencore.data import load_dataset
from gencore.models import RealNVP
from gencore.nn import AffineCoupling


def _eager_copy(flow: RealNVP) -> RealNVP:
    """The same flow (same weights) with the coupling math in plain PyTorch."""
    twin = RealNVP(**flow.config)
    twin.load_state_dict(flow.state_dict())
    for m in twin.modules():
        if isinstance(m, AffineCoupling):
            m.coupling_fn = reference.affine_coupling
            m.masked_coupling_fn = reference.masked_affine_coupling
    return twin


EAGER_DEFAULT_ADAMW = "eager, default AdamW"


def _step_fn(flow, x, fused: bool):
    opt = torch.optim.AdamW(flow.parameters(), lr=1e-4, **({"fused": True} if fused else {}))

    def step():
        loss = flow.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def run_training_step(batches=(512, 64), reps: int = 30) -> list[Measurement]:
    data, _ = load_dataset("digits", "train")
    rows = []
    for b in batches:
        torch.manual_seed(0)
        flow = RealNVP(64, n_couplings=8, hidden=(256, 256))
        flow(data[:256])  # ActNorm initialisation
        eager = _eager_copy(flow)
        x = data[:b]
        eager_default = _eager_copy(flow)
        fns = {"gencore": _step_fn(flow, x, fused=True), "eager": _step_fn(eager, x, fused=True),
               EAGER_DEFAULT_ADAMW: _step_fn(eager_default, x, fused=False)}
        for n, (med, p20, p80) in time_interleaved(fns, torch.device("cpu"), warmup=5, reps=reps).items():
            rows.append(Measurement(f"RealNVP step, batch {b}", "train step", n, med, p20, p80))
    return rows


def run_memory(depths=(4, 8, 16, 32), batch: int = 2048, reps: int = 10) -> list[Measurement]:
    x = torch.randn(batch, 64)
    rows = []
    for depth in depths:
        flows = {}
        for me in (False, True):
            torch.manual_seed(0)
            f = RealNVP(64, n_couplings=depth, hidden=(256, 256), memory_efficient=me)
            f(x[:256])
            flows["memory_efficient" if me else "ordinary"] = f

        def fb(f):
            return lambda: f.loss(x).backward()

        for f in flows.values():
            fb(f)()  # allocate the .grad buffers: measure the steady state
        fns = {n: fb(f) for n, f in flows.items()}
        times = time_interleaved(fns, torch.device("cpu"), warmup=2, reps=reps)
        for n, (med, p20, p80) in times.items():
            rows.append(Measurement(f"{depth} couplings, batch {batch}", "forward+backward", n, med, p20, p80,
                                    peak_memory(fns[n], torch.device("cpu"))))
    return rows


def markdown(step_rows, mem_rows, info) -> str:
    lines = [f"Device: {info['device']} · torch {info['torch']} · commit {info['commit']} · {info['date']}", "",
             "| case | gencore (ms) | eager (ms) | × vs eager |", "|---|---:|---:|---:|"]
    by = {}
    for m in step_rows:
        by.setdefault(m.case, {})[m.provider] = m
    for case, p in by.items():
        g, e = p["gencore"], p["eager"]
        lines.append(f"| {case} | {g.median_ms:.2f} | {e.median_ms:.2f} | {e.median_ms / g.median_ms:.2f} |")
        if EAGER_DEFAULT_ADAMW in p:
            d = p[EAGER_DEFAULT_ADAMW]
            lines.append(f"| {case} (eager: {EAGER_DEFAULT_ADAMW.split(', ')[1]}) | {g.median_ms:.2f} "
                         f"| {d.median_ms:.2f} | {d.median_ms / g.median_ms:.2f} |")
    lines += ["", "| depth | ordinary: peak MiB | memory_efficient: peak MiB | ordinary (ms) | memory_efficient (ms) "
              "| time ratio |", "|---|---:|---:|---:|---:|---:|"]
    by = {}
    for m in mem_rows:
        by.setdefault(m.case, {})[m.provider] = m
    for case, p in by.items():
        o, e = p["ordinary"], p["memory_efficient"]
        lines.append(f"| {case} | {o.peak_mib:.1f} | {e.peak_mib:.1f} | {o.median_ms:.1f} | {e.median_ms:.1f} "
                     f"| {e.median_ms / o.median_ms:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    steps = run_training_step(reps=5 if a.quick else 30)
    mem = run_memory(depths=(4, 8) if a.quick else (4, 8, 16, 32), reps=3 if a.quick else 10)
    info = machine_info(torch.device("cpu"))
    text = markdown(steps, mem, info)
    print(text)
    if a.out is not None:
        write_results(steps + mem, a.out, "flows-cpu", info)
        (a.out / "flows-cpu.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
