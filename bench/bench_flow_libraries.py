#!/usr/bin/env python
"""RealNVP training step: gencore vs pure-PyTorch eager vs nflows, zuko, normflows, FrEIA.

    python bench/bench_flow_libraries.py --out bench/results     # full run
    python bench/bench_flow_libraries.py --quick                  # smoke test, prints only

One training step = log p(x) of a fixed batch of dequantized digits (64 features), mean
NLL, backward, one ``torch.optim.AdamW(fused=True, lr=1e-4)`` step, at batch 512 and 64.
The architecture (issue #3): ActNorm, then 8 affine couplings on alternating halves, each
conditioner an MLP 32 -> 256 -> 256 -> 64 with ReLU (64 = log-scale and shift for the
other 32 features), last layer zero-initialised. Every provider runs the same optimizer
with the same settings (also the eager twin: bench/bench_flows.py gives its eager baseline
AdamW's default foreach implementation; that variant is timed here as an extra row).

Providers (the third-party ones need ``pip install -r requirements-bench.txt``; a library
that is missing or fails to build is reported with the reason, not left out):

* ``gencore``: :class:`gencore.models.RealNVP` (fused ``gencore.ops.affine_coupling``),
  built exactly as in :mod:`gencore.benchmarks.flows`.
* ``eager``: the same flow and weights with the coupling in plain PyTorch
  (``gencore.benchmarks.flows._eager_copy``).
* ``nflows``, ``zuko``, ``normflows``, ``FrEIA``: each library's own coupling layer, MLP
  and base distribution, configured to the same architecture; the differences each
  library imposes are in ``NOTES`` below and printed with the results.

Timing: :func:`gencore.benchmarks.harness.time_interleaved` (one process, providers
interleaved with rotating order, after warm-up, median). Reported ratio = provider's
time / gencore's time (> 1: gencore is faster), and provider's time / eager's time.
Before timing, each model's log-likelihood of the batch is checked to be finite and of
shape (B,), and the parameter counts are printed. At initialisation (conditioners zeroed,
ActNorm initialised on the same 256 examples) every model whose couplings start as the
identity has the same log-likelihood as gencore; the initial NLLs are printed to show it.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import math
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gencore.benchmarks.flows import _eager_copy, _step_fn
from gencore.benchmarks.harness import machine_info, time_interleaved
from gencore.data import load_dataset
from gencore.models import RealNVP

D, HALF, HIDDEN, N_COUPLINGS, LR, CLAMP = 64, 32, (256, 256), 8, 1e-4, 2.0
INIT_EXAMPLES = 256  # ActNorm data initialisation, as in gencore.benchmarks.flows
STEM = "flow-libraries-cpu"

# Where each library cannot be configured exactly like gencore's RealNVP.
NOTES = {
    "gencore": "ActNorm + 8 x AffineCoupling(mask='alternate'), s = 2 tanh(u/2), y = x exp(s) + t.",
    "eager": "Same model and weights, coupling in plain PyTorch (gencore.reference.masked_affine_coupling).",
    "eager, AdamW foreach": "As eager, with AdamW's default (foreach) implementation, "
                            "the eager baseline of bench/bench_flows.py; not the same optimizer.",
    "nflows": "AffineCouplingTransform with alternating masks, nflows.transforms.ActNorm, "
              "StandardNormal. The scale is fixed by nflows 0.14 to sigmoid(u + 2) + 1e-3 "
              "(no option; it is not the identity at zero init), then log(scale). The "
              "conditioner is a plain nn.Sequential MLP behind a 2-line wrapper: nflows "
              "calls it as net(x, context) and its own nets.MLP takes no context.",
    "zuko": "zuko.flows.RealNVP (coupling, alternating masks; not MAF) with its MLP; "
            "scale exp(u / (1 + |u| / 6.91)) (zuko's MonotonicAffineTransform soft bound, "
            "no option for tanh). zuko has no ActNorm: a learned elementwise "
            "MonotonicAffineTransform (UnconditionalTransform) set from the same data "
            "statistics stands in for it.",
    "normflows": "AffineCouplingBlock(split_mode 'channel' / 'channel_inv' alternating: "
                 "half/half splits, the same architecture up to a fixed permutation of the "
                 "features), nets.MLP(init_zeros=True), nf ActNorm, DiagGaussian base. "
                 "scale_map='exp': exp(u), no soft clamp (normflows has none).",
    "normflows, checkerboard": "As normflows with split_mode 'checkerboard' / "
                               "'checkerboard_inv' (the literal even/odd mask; normflows "
                               "rebuilds the mask in Python on every call).",
    "FrEIA": "SequenceINN: ActNorm + 4 x GLOWCouplingBlock (each = 2 couplings: one on "
             "each half, half/half split) = 8 couplings with 8 MLPs; clamp=2 with "
             "clamp_activation=tanh(u/2), i.e. s = 2 tanh(u/2) as gencore (FrEIA's default "
             "is the atan clamp 2 * 0.636 atan(u)).",
    "FrEIA, AllInOneBlock": "8 x AllInOneBlock (one-sided affine coupling, s = 2 tanh(0.1 u), "
                            "plus a learned global affine and a fixed random permutation as "
                            "a 64x64 matmul per block, FrEIA's recommended block); no ActNorm "
                            "(the global affine plays its part). Not the same architecture: "
                            "extra work per block.",
}

PACKAGES = {"nflows": "nflows", "zuko": "zuko", "normflows": "normflows", "FrEIA": "FrEIA"}


@dataclass
class Provider:
    name: str
    library: str  # "gencore" or the package name
    module: nn.Module
    log_prob: Callable[[torch.Tensor], torch.Tensor]


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _mlp(n_in: int, n_out: int) -> nn.Sequential:
    """n_in -> 256 -> 256 -> n_out with ReLU, last layer zeroed (gencore's MLP(zero_init=True))."""
    sizes = [n_in, *HIDDEN]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    last = nn.Linear(sizes[-1], n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def _std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * z.pow(2).sum(1) - 0.5 * D * math.log(2 * math.pi)


# -- third-party builders: each returns (module, log_prob) -----------------------------

def build_nflows():
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform
    from nflows.transforms.normalization import ActNorm
    from nflows.utils.torchutils import create_alternating_binary_mask

    class Net(nn.Module):  # nflows calls transform_net(identity_part, context)
        def __init__(self, n_in, n_out):
            super().__init__()
            self.net = _mlp(n_in, n_out)

        def forward(self, x, context=None):
            return self.net(x)

    # nflows: mask > 0 marks the transformed features; gencore's coupling i transforms
    # the odd features for even i, the even ones for odd i.
    transforms = [ActNorm(D)] + [
        AffineCouplingTransform(create_alternating_binary_mask(D, even=i % 2 == 1), Net)
        for i in range(N_COUPLINGS)
    ]
    flow = Flow(CompositeTransform(transforms), StandardNormal([D]))
    return flow, flow.log_prob


def build_zuko():
    import zuko
    from zuko.transforms import DependentTransform, MonotonicAffineTransform

    nvp = zuko.flows.RealNVP(D, transforms=N_COUPLINGS, hidden_features=HIDDEN, activation=nn.ReLU)
    for t in nvp.transform.transforms:
        nn.init.zeros_(t.hyper[-1].weight)
        nn.init.zeros_(t.hyper[-1].bias)

    def affine(shift, scale):  # elementwise, summed over the 64 features
        return DependentTransform(MonotonicAffineTransform(shift, scale), 1)

    actnorm = zuko.flows.UnconditionalTransform(affine, torch.zeros(D), torch.zeros(D))
    flow = zuko.flows.Flow([actnorm, *nvp.transform.transforms], nvp.base)

    def init(x):  # data-dependent init as ActNorm: y = (x - mean) / std
        with torch.no_grad():
            log_s = -torch.log(x.std(0) + 1e-6)
            c = -math.log(1e-3)  # invert zuko's soft bound l = a / (1 + |a| / c)
            actnorm._1.copy_(log_s / (1 - log_s.abs() / c))
            actnorm._0.copy_(-x.mean(0) * log_s.exp())

    flow.zuko_init = init
    return flow, lambda x: flow().log_prob(x)


def _build_normflows(split: str):
    import normflows as nf

    modes = {"channel": ("channel", "channel_inv"), "checkerboard": ("checkerboard", "checkerboard_inv")}[split]
    flows = [nf.flows.AffineCouplingBlock(nf.nets.MLP([HALF, *HIDDEN, 2 * HALF], init_zeros=True),
                                          scale=True, scale_map="exp", split_mode=modes[i % 2])
             for i in range(N_COUPLINGS)]
    # normflows' flows run latent -> data; log_prob applies their inverses from the last
    # one back, so the ActNorm at the end of the list meets the data first.
    flows.append(nf.flows.ActNorm(D))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(D, trainable=False), flows)
    return model, model.log_prob


def build_normflows():
    return _build_normflows("channel")


def build_normflows_checkerboard():
    return _build_normflows("checkerboard")


def build_freia():
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    inn = Ff.SequenceINN(D)
    inn.append(Fm.ActNorm)
    for _ in range(N_COUPLINGS // 2):
        inn.append(Fm.GLOWCouplingBlock, subnet_constructor=_mlp, clamp=CLAMP,
                   clamp_activation=lambda u: torch.tanh(u / CLAMP))

    def log_prob(x):
        z, log_jac = inn(x)
        return _std_normal_log_prob(z) + log_jac

    return inn, log_prob


def build_freia_allinone():
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    inn = Ff.SequenceINN(D)
    for _ in range(N_COUPLINGS):
        inn.append(Fm.AllInOneBlock, subnet_constructor=_mlp, affine_clamping=CLAMP, permute_soft=False)

    def log_prob(x):
        z, log_jac = inn(x)
        return _std_normal_log_prob(z) + log_jac

    return inn, log_prob


BUILDERS = [
    ("nflows", "nflows", build_nflows),
    ("zuko", "zuko", build_zuko),
    ("normflows", "normflows", build_normflows),
    ("normflows, checkerboard", "normflows", build_normflows_checkerboard),
    ("FrEIA", "FrEIA", build_freia),
    ("FrEIA, AllInOneBlock", "FrEIA", build_freia_allinone),
]


# -- the benchmark -------------------------------------------------------------------

def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def _adamw_step(module: nn.Module, log_prob, x: torch.Tensor) -> Callable[[], None]:
    """The same step for every provider: mean NLL, backward, AdamW(fused=True, lr=1e-4)."""
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=LR, fused=True)

    def step():
        loss = -log_prob(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def build_providers(data: torch.Tensor, seed: int = 0):
    """(providers, failures): gencore, eager and every library that builds."""
    init = data[:INIT_EXAMPLES]
    torch.manual_seed(seed)
    flow = RealNVP(D, n_couplings=N_COUPLINGS, hidden=HIDDEN, clamp=CLAMP)  # as gencore.benchmarks.flows
    flow(init)  # ActNorm initialisation
    eager = _eager_copy(flow)
    eager_foreach = _eager_copy(flow)
    providers = [Provider("gencore", "gencore", flow, flow.log_prob),
                 Provider("eager", "gencore", eager, eager.log_prob),
                 Provider("eager, AdamW foreach", "gencore", eager_foreach, eager_foreach.log_prob)]
    failures: dict[str, str] = {}
    for name, pkg, builder in BUILDERS:
        if _version(pkg) == "not installed":
            failures[name] = f"{pkg} is not installed (pip install -r requirements-bench.txt)"
            continue
        try:
            torch.manual_seed(seed)
            module, log_prob = builder()
            module.train()
            if hasattr(module, "zuko_init"):
                module.zuko_init(init)
            log_prob(init)  # data-dependent ActNorm initialisation on the same examples
            providers.append(Provider(name, pkg, module, log_prob))
        except Exception as e:  # noqa: BLE001 - any failure to build is reported, not hidden
            failures[name] = f"failed to build: {type(e).__name__}: {e}".splitlines()[0][:300]
            traceback.print_exc(file=sys.stderr)
    return providers, failures


def check(providers, x: torch.Tensor) -> dict[str, dict]:
    """Finite log-likelihood of shape (B,), its mean NLL at init, the parameter count."""
    out = {}
    for p in providers:
        with torch.no_grad():
            lp = p.log_prob(x)
        if lp.shape != (x.shape[0],):
            raise AssertionError(f"{p.name}: log_prob has shape {tuple(lp.shape)}, expected ({x.shape[0]},)")
        if not torch.isfinite(lp).all():
            raise AssertionError(f"{p.name}: non-finite log-likelihood")
        out[p.name] = {"params": _n_params(p.module), "nll0": -lp.mean().item()}
    return out


def run(batches=(512, 64), warmup: int = 10, reps: int = 60):
    data, _ = load_dataset("digits", "train")  # (1347, 64), dequantized, in [0, 1)
    rows, failures_all, checks_all = [], {}, {}
    for b in batches:
        x = data[:b]
        providers, failures = build_providers(data)
        failures_all.update(failures)
        checks = check(providers, x)
        checks_all[b] = checks
        fns = {}
        for p in providers:
            if p.name == "eager, AdamW foreach":
                fns[p.name] = _step_fn(p.module, x, fused=False)  # bench_flows.py's eager step
            else:
                fns[p.name] = _adamw_step(p.module, p.log_prob, x)
        times = time_interleaved(fns, torch.device("cpu"), warmup=warmup, reps=reps)
        for p in providers:
            med, p20, p80 = times[p.name]
            rows.append({"case": f"RealNVP step, batch {b}", "batch": b, "provider": p.name,
                         "library": p.library, "version": _version(p.library) if p.library != "gencore"
                         else _version("gencore"), "median_ms": med, "p20_ms": p20, "p80_ms": p80,
                         **checks[p.name]})
        print(f"batch {b}: " + ", ".join(f"{n} {t[0]:.2f} ms" for n, t in times.items()), flush=True)
    for r in rows:
        ref = {q["provider"]: q["median_ms"] for q in rows if q["batch"] == r["batch"]}
        r["x_gencore"] = r["median_ms"] / ref["gencore"]
        r["x_eager"] = r["median_ms"] / ref["eager"]
    return rows, failures_all


def markdown(rows, failures, info, reps: int) -> str:
    lines = [f"Device: {info['device']} · torch {info['torch']} · commit {info['commit']} · {info['date']} "
             f"· load average {info['load']}", "",
             "One RealNVP training step (8 affine couplings, MLP 32→256→256→64, ActNorm, AdamW fused, "
             f"lr {LR:g}) on digits, median of {reps} interleaved steps. "
             "Ratio = provider's time / gencore's time (> 1: gencore faster).", "",
             "| case | provider | version | params | median (ms) | p20–p80 (ms) | × gencore | × eager |",
             "|---|---|---|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['provider']} | {r['version']} | {r['params']:,} | {r['median_ms']:.2f} "
                     f"| {r['p20_ms']:.2f}–{r['p80_ms']:.2f} | {r['x_gencore']:.2f} | {r['x_eager']:.2f} |")
    package = {n: pkg for n, pkg, _ in BUILDERS}
    for name in failures:
        lines.append(f"| – | {name} | {_version(package[name])} | – | – | – | – | – |")
    if failures:
        lines += ["", "Not measured: " + "; ".join(f"**{n}**: {w}" for n, w in failures.items()) + "."]
    lines += ["", "Configuration differences from gencore's RealNVP:", ""]
    lines += [f"- **{n}**: {NOTES[n]}" for n in NOTES if n not in ("gencore", "eager")]
    return "\n".join(lines) + "\n"


def write_csv(rows, failures, info, path: Path) -> None:
    cols = ["case", "mode", "provider", "median_ms", "p20_ms", "p80_ms", "peak_mib", "ratio_vs_gencore",
            "ratio_vs_eager", "params", "library_version", "nll_at_init", "status"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*cols, *info])
        for r in rows:
            w.writerow([r["case"], "train step", r["provider"], f"{r['median_ms']:.4f}", f"{r['p20_ms']:.4f}",
                        f"{r['p80_ms']:.4f}", "", f"{r['x_gencore']:.4f}", f"{r['x_eager']:.4f}", r["params"],
                        r["version"], f"{r['nll0']:.4f}", "ok", *info.values()])
        for name, why in failures.items():
            w.writerow(["RealNVP step", "train step", name, "", "", "", "", "", "", "", "", "", why, *info.values()])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few repetitions, for a smoke test")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--batches", type=int, nargs="+", default=[512, 64])
    p.add_argument("--out", type=Path, default=None, help=f"write {STEM}.md and .csv here")
    a = p.parse_args(argv)
    reps = a.reps or (5 if a.quick else 60)
    load0 = os.getloadavg()[0]
    rows, failures = run(tuple(a.batches), warmup=2 if a.quick else 10, reps=reps)
    info = machine_info(torch.device("cpu"))
    # 1-minute load average before / after: the machine may be shared (ratios hold up
    # better than absolute times under load, but check this before quoting them).
    info["load"] = f"{load0:.2f} / {os.getloadavg()[0]:.2f}"
    print("\nParameters and NLL at initialisation (nats/example; same ActNorm data, conditioners zeroed):")
    for r in rows:
        print(f"  batch {r['batch']:>3}  {r['provider']:<24} {r['params']:>9,} params  NLL0 {r['nll0']:9.3f}")
    text = markdown(rows, failures, info, reps)
    print()
    print(text)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"{STEM}.md").write_text(text)
        write_csv(rows, failures, info, a.out / f"{STEM}.csv")
        print(f"wrote {a.out / (STEM + '.md')} and .csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
