"""Benchmark of vector quantization: the tiled nearest-code search and the VQ layer.

Two groups, each timed forward+backward (interleaved, after warm-up, medians), with the
peak of live memory during one call (CPU: the profiler's allocation record; CUDA: the
allocator's peak):

* ``quantize``, the bottleneck with a gradient-learned codebook: nearest code, the
  quantized vectors with the straight-through gradient, the codebook and commitment
  losses (beta 0.25), gradients to the input and the codebook.
  - ``gencore``: :func:`gencore.ops.nearest_code` then ``index_select`` of the codes;
  - ``eager``: as commonly written, ``|x|^2 + |c|^2 - 2 x c^T``, ``argmin``, a one-hot
    ``(N, K)`` matrix and ``one_hot @ codebook`` (``(N, K)`` float32 matrices: 1 GiB each
    at N = 32768, K = 8192);
  - ``compile``: the eager function under ``torch.compile``;
  - ``vqp``: vector-quantize-pytorch's ``VectorQuantize(learnable_codebook=True,
    ema_update=False, rotation_trick=False, commitment_weight=0.25)`` (not a dependency of
    gencore: ``pip install -r requirements-bench.txt``).
* ``ema``, one training step of the EMA layer (decay 0.99, no dead-code restart): forward,
  the statistics' update, backward to the input.
  - ``gencore``: :class:`gencore.nn.VectorQuantizer`;
  - ``eager``: the same step as commonly written (one-hot matrix, its column sums and
    ``one_hot^T @ x`` for the EMA sums); ``compile``: that step compiled;
  - ``vqp``: ``VectorQuantize(decay=0.99, rotation_trick=False, commitment_weight=0.25)``.

Cases are ``(N, K, D)``: N vectors, K codes of size D. Where a baseline would need more
than 60% of the free memory it is skipped (and said so); the largest case runs gencore
alone in a fresh process to measure its extra memory.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import torch.nn.functional as F

from gencore import ops
from gencore.benchmarks.harness import (Measurement, available_bytes, machine_info, one_call_in_this_process,
                                        peak_memory, time_interleaved, write_results)
from gencore.nn import VectorQuantizer

CASES = [(32768, 8192, 64), (32768, 8192, 8), (65536, 16384, 64)]
QUICK_CASES = [(4096, 1024, 64), (4096, 1024, 8)]
BETA = 0.25
PROVIDERS = ("gencore", "eager", "compile", "vqp")
SKIPPED: list[str] = []


# ---------------------------------------------------------------- the quantize group --------
def gencore_quantize(x, codebook):
    idx, _ = ops.nearest_code(x, codebook.detach())
    q = codebook.index_select(0, idx)
    loss = F.mse_loss(q, x.detach()) + BETA * F.mse_loss(x, q.detach())
    return x + (q - x).detach(), loss


def eager_quantize(x, codebook):
    dist = x.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * x @ codebook.t()
    idx = dist.argmin(1)
    one_hot = F.one_hot(idx, codebook.shape[0]).type_as(x)
    q = one_hot @ codebook
    loss = F.mse_loss(q, x.detach()) + BETA * F.mse_loss(x, q.detach())
    return x + (q - x).detach(), loss


# ---------------------------------------------------------------- the EMA group -------------
class EagerEMA(torch.nn.Module):
    """The EMA VQ step as commonly written (one-hot sums), for the eager and compiled baselines."""

    def __init__(self, k, d, decay=0.99, eps=1e-5):
        super().__init__()
        self.decay, self.eps = decay, eps
        self.register_buffer("codebook", torch.randn(k, d))
        self.register_buffer("ema_count", torch.ones(k))
        self.register_buffer("ema_sum", self.codebook.clone())

    def forward(self, x):
        cb = self.codebook
        dist = x.pow(2).sum(1, keepdim=True) + cb.pow(2).sum(1) - 2 * x @ cb.t()
        idx = dist.argmin(1)
        one_hot = F.one_hot(idx, cb.shape[0]).type_as(x)
        q = one_hot @ cb
        loss = BETA * F.mse_loss(x, q)
        with torch.no_grad():
            self.ema_count.mul_(self.decay).add_(one_hot.sum(0), alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(one_hot.t() @ x.detach(), alpha=1 - self.decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + cb.shape[0] * self.eps) * n
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        return x + (q - x).detach(), loss


def _vqp(k, d, ema: bool, device):
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:
        return None
    kw = dict(decay=0.99) if ema else dict(learnable_codebook=True, ema_update=False)
    return VectorQuantize(dim=d, codebook_size=k, rotation_trick=False, commitment_weight=BETA, **kw).to(device)


def _step(fn, x, params):
    """forward, then backward of (output . w + loss) to the input (and the parameters)."""
    def call():
        out, loss = fn(x)
        total = (out * _W[0]).sum() + loss
        torch.autograd.grad(total, [x, *params])
    return call


_W: list[torch.Tensor] = []


def _providers(group, n, k, d, dev, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).to(dev, dtype).requires_grad_()
    _W[:] = [torch.randn(n, d, generator=g).to(dev, dtype)]
    cb0 = torch.randn(k, d, generator=g).to(dev, dtype)
    fns = {}
    if group == "quantize":
        cb = cb0.clone().requires_grad_()
        compiled = torch.compile(eager_quantize, dynamic=False)
        fns["gencore"] = _step(lambda v: gencore_quantize(v, cb), x, [cb])
        fns["eager"] = _step(lambda v: eager_quantize(v, cb), x, [cb])
        fns["compile"] = _step(lambda v: compiled(v, cb), x, [cb])
        vqp = _vqp(k, d, False, dev)
        if vqp is not None:
            with torch.no_grad():
                vqp._codebook.embed.copy_(cb0[None])
            p = [vqp._codebook.embed]
            fns["vqp"] = _step(lambda v: _vqp_call(vqp, v), x, p)
    else:
        mine = VectorQuantizer(k, d, ema_decay=0.99, restart_dead_codes=False).to(dev, dtype)
        eager = EagerEMA(k, d).to(dev, dtype)
        compiled = torch.compile(EagerEMA(k, d).to(dev, dtype), dynamic=False)
        for m in (mine, eager, compiled):
            m.codebook.copy_(cb0)

        def mine_call(v):
            o = mine(v)
            return o.quantized, o.loss

        fns["gencore"] = _step(mine_call, x, [])
        fns["eager"] = _step(eager, x, [])
        fns["compile"] = _step(compiled, x, [])
        vqp = _vqp(k, d, True, dev)
        if vqp is not None:
            with torch.no_grad():
                vqp._codebook.embed.copy_(cb0[None])
            fns["vqp"] = _step(lambda v: _vqp_call(vqp, v), x, [])
    return fns


def _vqp_call(vqp, x):
    q, _, loss = vqp(x[None])
    return q[0], loss.sum()


def _need_bytes(provider, n, k):
    """Bytes the materializing providers hold at their peak, in (N, K) float32 matrices:
    eager about three (distances, the one-hot matrix, a temporary), compile two, vqp six
    (measured: 6.0 GiB extra at N = 32768, K = 8192)."""
    return {"gencore": 0, "eager": 3, "compile": 2, "vqp": 6}[provider] * 4 * n * k


def run(device="cpu", dtype=torch.float32, cases=CASES, reps=3, huge=None, progress=None):
    """Every (case, group) in a fresh process (``--group-child``): the memory of one group's
    baselines (GiBs of (N, K) matrices and allocator caches) is returned to the system before
    the next, and a group that fails does not take the others with it. ``progress(rows)`` is
    called after each group with the rows so far."""
    rows: list[Measurement] = []
    SKIPPED.clear()
    for n, k, d in cases:
        for group in ("quantize", "ema"):
            cmd = [sys.executable, "-m", "gencore.benchmarks.vq", "--group-child", group, str(n), str(k), str(d),
                   device, str(dtype).removeprefix("torch."), str(reps)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                SKIPPED.append(f"{group} {n}×{k}×{d}: the group's process failed (exit {r.returncode}): "
                               f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
                continue
            child = json.loads(r.stdout.strip().splitlines()[-1])
            SKIPPED.extend(child["skipped"])
            rows += [Measurement(**m) for m in child["rows"]]
            if progress:
                progress(rows)
    if huge is None:
        huge = list(cases) == CASES
    if huge:
        n, k, d = CASES[-1]
        cmd = [sys.executable, "-m", "gencore.benchmarks.vq", "--huge-child", str(n), str(k), str(d), device]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        rows.append(Measurement(f"quantize {n}×{k}×{d}, one call in a fresh process", "full", "gencore", r["ms"],
                                r["ms"], r["ms"], r["extra_mib"], {"fresh process": True, "codes_used": r["codes_used"]}))
    return rows


def _group_child(group, n, k, d, device, dtype, reps) -> dict:
    dev = torch.device(device)
    case = f"{group} {n}×{k}×{d}"
    skipped = []
    fns = _providers(group, n, k, d, dev, getattr(torch, dtype))
    if "vqp" not in fns:
        skipped.append(f"{case}: vqp skipped (vector-quantize-pytorch is not installed)")
    for p in list(fns):
        need = _need_bytes(p, n, k)
        if need > 0.6 * available_bytes(dev):
            del fns[p]
            skipped.append(f"{case}: {p} skipped, it would need about {need / 2**30:.0f} GiB")
    rows = []
    if len(fns) > 1:  # gencore alone is measured by the huge child
        for p, (med, p20, p80) in time_interleaved(fns, dev, warmup=1, reps=reps).items():
            rows.append(Measurement(case, "full", p, med, p20, p80, peak_memory(fns[p], dev)).__dict__)
    return {"rows": rows, "skipped": skipped}


def _huge_child(n, k, d, device) -> dict:
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).to(dev).requires_grad_()
    cb = torch.randn(k, d, generator=g).to(dev).requires_grad_()
    w = torch.randn(n, d, generator=g).to(dev)

    def call():
        out, loss = gencore_quantize(x, cb)
        return torch.autograd.grad((out * w).sum() + loss, [x, cb])

    _, ms, extra = one_call_in_this_process(call, dev)
    idx, _ = ops.nearest_code(x.detach(), cb.detach())
    return {"ms": ms, "extra_mib": extra, "codes_used": int(idx.unique().numel())}


def table(rows, info) -> str:
    by_case: dict[str, dict[str, Measurement]] = {}
    for m in rows:
        by_case.setdefault(m.case, {})[m.provider] = m
    lines = [f"Device: {info['device']} · torch {info['torch']} · CUDA {info['cuda']} · "
             f"commit {info['commit']} · {info['date']}", "",
             "Forward+backward, median ms (p20–p80 of the interleaved runs); × = baseline time / gencore time; "
             "peak = the most memory live during one call (MiB).", "",
             "| case | gencore (ms) | eager (ms) | compile (ms) | vqp (ms) | × vs eager | × vs compile | × vs vqp "
             "| peak MiB gencore / eager / compile / vqp |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for case, p in by_case.items():
        g = p.get("gencore")

        def ms(m):
            return f"{m.median_ms:.0f} ({m.p20_ms:.0f}–{m.p80_ms:.0f})" if m else "–"

        def ratio(b):
            return f"{b.median_ms / g.median_ms:.2f}" if (b and g) else "–"

        def mem(m):
            return f"{m.peak_mib:.1f}" if (m and m.peak_mib is not None) else "–"

        lines.append(f"| {case} | {ms(g)} | {ms(p.get('eager'))} | {ms(p.get('compile'))} | {ms(p.get('vqp'))} "
                     f"| {ratio(p.get('eager'))} | {ratio(p.get('compile'))} | {ratio(p.get('vqp'))} "
                     f"| {' / '.join(mem(p.get(q)) for q in PROVIDERS)} |")
    notes = list(SKIPPED)
    for m in rows:
        if m.extra.get("fresh process"):
            notes.append(f"- {m.case} (gencore alone): {m.median_ms / 1e3:.2f} s forward+backward, "
                         f"{m.peak_mib:.0f} MiB peak resident-set increase (inputs excluded; one (N, K) float32 "
                         f"matrix would be {4 * _nk(m.case) / 2**30:.0f} GiB); {m.extra['codes_used']} codes in use")
    if notes:
        lines += [""] + [n if n.startswith("-") else f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _nk(case: str) -> int:
    n, k, _ = (int(v) for v in case.split()[1].rstrip(",").split("×"))
    return n * k


def main(argv=None) -> int:
    import argparse
    from pathlib import Path

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--group-child"]:
        print(json.dumps(_group_child(argv[1], int(argv[2]), int(argv[3]), int(argv[4]), argv[5], argv[6],
                                      int(argv[7]))))
        return 0
    if argv[:1] == ["--huge-child"]:
        print(json.dumps(_huge_child(int(argv[1]), int(argv[2]), int(argv[3]), argv[4])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small cases, few repetitions")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: print only)")
    a = p.parse_args(argv)
    info = machine_info(torch.device(a.device))
    info["dtype"] = a.dtype
    stem = f"vq-{a.device}-{a.dtype}"

    def save(rows):
        if a.out is not None:  # after every group: a long run keeps what it measured
            write_results(rows, a.out, stem, info)
            (a.out / f"{stem}.md").write_text(table(rows, info))

    rows = run(a.device, getattr(torch, a.dtype), QUICK_CASES if a.quick else CASES, reps=3 if a.quick else a.reps,
               progress=save)
    save(rows)
    print(table(rows, info))
    if a.out is not None:
        print(f"wrote {a.out / stem}.csv and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
