#!/usr/bin/env python
"""Hierarchical VAE against the single-layer VAE on the digits: importance-weighted test NLL
(K = 1000), and the KL and active units of every stochastic layer; written to
bench/results/hvae-quality.{md,json}.

Every model trains through ``gencore.runs`` the same way (AdamW, lr 2e-3 with a cosine
schedule, batch 128, a fresh dequantization of every batch of the fit split, the state with
the best val loss kept; the test split scored once), for each seed, into ``--runs``
(default ``examples-out/hvae``; a finished run is reused):

* ``vae``: :class:`gencore.models.VAE` (r = 16, MLP 256-256, no normalisation);
* ``hvae-16``: :class:`gencore.models.HierarchicalVAE` with one layer (r = 16): the
  single-layer VAE built from the hierarchical model's networks (batch normalisation);
* ``hvae-16-8`` and ``hvae-16-8-4``: two and three stochastic layers;
* ``hvae-32``: one layer of 32, as many latent coordinates as the hierarchies have or more;
* ``hvae-16-8-nobn``: two layers without batch normalisation.

    python examples/hvae_quality.py                 # about 15 minutes on 2 cores
    python examples/hvae_quality.py --steps 500 --seeds 0   # quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from gencore import runs
from gencore.benchmarks.harness import machine_info

OUT = Path(__file__).resolve().parent.parent / "bench" / "results"
MODELS = {
    "vae": ("vae", {}, "VAE (one layer, r = 16)"),
    "hvae-16": ("hvae", {"latent_dims": [16]}, "HierarchicalVAE, one layer (16)"),
    "hvae-16-8": ("hvae", {"latent_dims": [16, 8]}, "HierarchicalVAE, two layers (16, 8)"),
    "hvae-16-8-4": ("hvae", {"latent_dims": [16, 8, 4]}, "HierarchicalVAE, three layers (16, 8, 4)"),
    "hvae-32": ("hvae", {"latent_dims": [32]}, "HierarchicalVAE, one layer (32)"),
    "hvae-16-8-nobn": ("hvae", {"latent_dims": [16, 8], "config": {"batch_norm": False}},
                       "HierarchicalVAE (16, 8) without batch norm"),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--runs", type=Path, default=Path("examples-out/hvae"))
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    t0 = time.perf_counter()
    res: dict = {"steps": a.steps, "seeds": a.seeds, "models": {}}
    for name in a.models:
        model, kw, _ = MODELS[name]
        rows = []
        for seed in a.seeds:
            run = a.runs / f"{name}-s{seed}"
            summary = runs.train(model, "digits", run, steps=a.steps, seed=seed, progress=False, **kw)
            ev = runs.evaluate(run)
            ev.update(best_step=summary["best_step"], best_val_loss=summary["best_val_loss"])
            rows.append(ev)
            print(f"{name} seed {seed}: test NLL {ev['test_nll_nats']:.2f} nats (best step {summary['best_step']})",
                  flush=True)
        res["models"][name] = rows
    res["seconds"] = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "hvae-quality.json").write_text(json.dumps(res, indent=2))
    info = machine_info(torch.device("cpu"))
    lines = [f"Device: {info['device']} · torch {info['torch']} · commit {info['commit']} · {info['date']} · "
             f"{a.steps} steps per model, seeds {', '.join(map(str, a.seeds))}, total {res['seconds'] / 60:.1f} min",
             "", "Held-out digits (test split, 450), each model's state chosen on the val split. NLL = minus the "
             "importance-weighted log-likelihood with K = 1000 samples, in nats per digit of the dequantized data "
             "(lower is better); ELBO, KL and active units (Var_x E_q[z] > 0.01) on the test split; KL and active "
             "units listed z_1 (next to the data) first.", "",
             "| model | test NLL, K = 1000 (nats), per seed | mean | -ELBO (nats) | KL per layer (nats) "
             "| active units per layer | best step |", "|---|---|---:|---:|---|---|---|"]
    means = {}
    for name, rows in res["models"].items():
        nll = [r["test_nll_nats"] for r in rows]
        means[name] = statistics.mean(nll)
        kl = " / ".join(f"{statistics.mean(r['kl_per_layer_nats'][i] for r in rows):.1f}"
                        for i in range(len(rows[0]["kl_per_layer_nats"]))) if "kl_per_layer_nats" in rows[0] else "–"
        au = ", ".join("/".join(map(str, r["active_units"])) for r in rows) if "active_units" in rows[0] else "–"
        lines.append(f"| {MODELS[name][2]} | {', '.join(f'{v:.2f}' for v in nll)} | {means[name]:.2f} | "
                     f"{statistics.mean(-r['elbo_nats'] for r in rows):.2f} | {kl} (rate {statistics.mean(r['rate_nats'] for r in rows):.1f}) | "
                     f"{au} | {', '.join(str(r['best_step']) for r in rows)} |")
    if "vae" in means:
        lines += ["", "Test NLL of each model minus the VAE's (mean over seeds; negative: better than the VAE):", ""]
        lines += [f"- {MODELS[n][2]}: {m - means['vae']:+.2f} nats" for n, m in means.items() if n != "vae"]
    (a.out / "hvae-quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
