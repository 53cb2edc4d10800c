#!/usr/bin/env python
"""Full-length quality runs of gencore's GAN (CPU), written to bench/results/gan-quality.*

1. 8gaussians, one GAN per loss (non-saturating, WGAN-GP, hinge): modes covered, samples
   within 3 standard deviations of a mode, MMD^2 to held-out data at the median and at a
   within-mode bandwidth, next to three reference generators: one collapsed onto one mode, a
   uniform ring through the 8 centres (covers the modes, has none) and real training data
   (the noise floor); the critic's IPM estimate E_p f - E_q f against steps (gan-ipm.png)
   and samples over training (gan-snapshots.png).
2. The lecture's ways the game goes wrong, measured: the generator collapsed onto one mode
   (above); a generator trained against a fixed discriminator, which finds what that
   discriminator rates real and outputs only that; a much stronger discriminator (5 updates
   per round at 10x the learning rate) against a small generator, next to a balanced game.
3. Digits: a class-conditional WGAN-GP. Inception-style score under gencore's digits
   classifier, train-on-synthetic / test-on-real accuracy and the memorization report, next
   to the same numbers for real training data, held-out data and (when gencore has it) a
   class-conditional VAE.

    python examples/gan_quality.py            # about 7 minutes on 2 busy cores
    python examples/gan_quality.py --quick    # about 3 minutes, shorter runs
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from gencore import metrics
from gencore.data import dequantize, load_dataset
from gencore.models import GAN
from gencore.metrics import digits_real_reference, digits_sample_report, eight_gaussians_modes, toy_sample_report
from gencore.plotting import pyplot, save_figure, save_image_grid, save_ipm_history, save_snapshots
from gencore.train import fit

OUT = Path(__file__).resolve().parent.parent / "bench" / "results"
N_EVAL = 2000  # samples per 2-D evaluation (against as many held-out points)

# One configuration per loss on 8gaussians (Adam betas (0.5, 0.9), batch 256, latent 8).
TOY_RUNS = {
    "non_saturating": dict(loss="non_saturating", hidden=[256, 256, 256], lr=1e-3),
    "wasserstein_gp": dict(loss="wasserstein_gp", n_critic=5, gp_weight=0.1, hidden=[256, 256], lr=1e-3),
    "hinge": dict(loss="hinge", hidden=[256, 256, 256], lr=1e-3),
}


def _sample(gan, n=N_EVAL, seed=0):
    return gan.sample(n, generator=torch.Generator().manual_seed(seed))


def toy_runs(steps: int, out: Path, suffix: str) -> tuple[list[dict], dict]:
    x, _ = load_dataset("8gaussians", "train")
    xe, _ = load_dataset("8gaussians", "test")
    rows, models, histories, snapshots = [], {}, {}, {}
    for name, cfg in TOY_RUNS.items():
        cfg = dict(cfg)
        lr = cfg.pop("lr")
        torch.manual_seed(0)
        gan = GAN(features=2, latent_dim=8, **cfg)
        snaps = {}

        def snapshot(model, rec, snaps=snaps):
            xs = _sample(model, 1000)
            snaps[rec["step"]] = xs
            c = eight_gaussians_modes(xs)
            rec.update(modes_covered=c["modes_covered"], high_quality_fraction=c["high_quality_fraction"])

        t0 = time.perf_counter()
        res = fit(gan, x, steps=steps, batch_size=256, lr=lr, eval_data=xe[:N_EVAL], eval_every=max(1, steps // 20),
                  progress=False, callback=snapshot)
        rep = toy_sample_report(_sample(gan), "8gaussians", n=N_EVAL)
        rows.append({"run": f"GAN {name}", "steps": steps, "lr": lr, **{k: v for k, v in cfg.items()},
                     **rep, "seconds": time.perf_counter() - t0})
        print({k: v for k, v in rows[-1].items() if k not in ("mode_fractions", "references")}, flush=True)
        models[name], histories[name], snapshots[name] = gan, res.history, snaps
    save_ipm_history({f"{k} (critic scores: {'logits' if k == 'non_saturating' else 'f'})": h
                      for k, h in histories.items()}, out / f"gan-ipm{suffix}.png",
                     title="8gaussians: the critic's estimate E_p f - E_q f during training")
    save_snapshots(snapshots["wasserstein_gp"], out / f"gan-snapshots{suffix}.png", data=xe[:N_EVAL])
    ipm = {k: [{"step": h["step"], "train_ipm": h["train_ipm"], "eval_ipm": h["eval_loss"],
                "modes_covered": h["modes_covered"], "high_quality_fraction": h["high_quality_fraction"]}
               for h in hist] for k, hist in histories.items()}
    return rows, {"models": models, "ipm_history": ipm}


def fixed_discriminator(trained: GAN, steps: int) -> dict:
    """The lecture: 'if we fix the discriminator, the generator can find a picture that the
    discriminator thinks is real and only output that one'. The discriminator of a trained
    non-saturating GAN is frozen; the generator alone keeps minimising its loss."""
    gan = copy.deepcopy(trained)
    gan.discriminator.requires_grad_(False)
    opt = torch.optim.Adam(gan.generator.parameters(), lr=1e-3, betas=gan.betas)
    torch.manual_seed(1)

    def state():
        xs = _sample(gan)
        with torch.no_grad():
            fooled = (torch.sigmoid(gan.critic(xs)) > 0.5).double().mean().item()
        rep = toy_sample_report(xs, "8gaussians", n=N_EVAL)
        return {**{k: rep[k] for k in ("modes_covered", "high_quality_fraction", "mmd2_vs_heldout",
                                       "mmd2_local_vs_heldout")},
                "rated_real_by_the_fixed_discriminator": fooled,
                "spread_std": xs.std(0).mean().item()}

    before = state()
    for _ in range(steps):
        loss = gan.generator_loss(256)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    res = {"generator_steps": steps, "before": before, "after": state(), "samples": _sample(gan)}
    print({k: v for k, v in res.items() if k != "samples"}, flush=True)
    return res


def stronger_discriminator(steps: int) -> dict:
    """A much stronger player: the same generator and discriminator (256x3 MLPs, the
    non-saturating loss), once with one discriminator update per round at the generator's
    learning rate (balanced), once with 5 updates per round at 10x the rate."""
    x, _ = load_dataset("8gaussians", "train")
    xe = load_dataset("8gaussians", "test")[0][:N_EVAL]
    out = {}
    for name, n_critic, ratio in (("balanced", 1, 1.0), ("stronger", 5, 10.0)):
        torch.manual_seed(0)
        gan = GAN(features=2, latent_dim=8, hidden=[256, 256, 256], loss="non_saturating", n_critic=n_critic,
                  lr_ratio=ratio)
        t0 = time.perf_counter()
        res = fit(gan, x, steps=steps, batch_size=256, lr=2e-4, progress=False, eval_every=max(1, steps // 10))
        xs = _sample(gan)
        with torch.no_grad():
            real_acc = (gan.critic(xe) > 0).double().mean().item()
            fake_acc = (gan.critic(xs) < 0).double().mean().item()
        rep = toy_sample_report(xs, "8gaussians", n=N_EVAL)
        out[name] = {"n_critic": n_critic, "lr_ratio": ratio, "steps": steps,
                     "discriminator_accuracy_real": real_acc, "discriminator_accuracy_fake": fake_acc,
                     "final_train_loss_g": res.history[-1]["train_loss_g"],
                     "final_train_ipm": res.history[-1]["train_ipm"],
                     **{k: rep[k] for k in ("modes_covered", "high_quality_fraction", "mmd2_vs_heldout",
                                            "mmd2_local_vs_heldout")},
                     "seconds": time.perf_counter() - t0, "samples": xs}
        print(name, {k: v for k, v in out[name].items() if k != "samples"}, flush=True)
    return out


def _fresh(batch, g):
    return (dequantize(batch[0], g), *batch[1:])


def digits(steps: int, out: Path, suffix: str) -> list[dict]:
    levels, y = load_dataset("digits", "train", dequantized=False)
    labels = torch.arange(1000) % 10
    rows = [{"samples": "real digits (score, accuracy: the 1347 training digits; memorization: "
                        "half of the held-out digits)", **digits_real_reference()}]
    xtr, _ = load_dataset("digits", "train")
    xt, _ = load_dataset("digits", "test")
    rows.append({"samples": "real training digits replayed (a copying generator)",
                 "memorization": metrics.memorization_report(xtr, xtr, xt)})
    torch.manual_seed(0)
    gan = GAN(features=64, latent_dim=32, hidden=[256, 256], n_classes=10, output="sigmoid",
              loss="wasserstein_gp", n_critic=5, ema_decay=0.999)
    t0 = time.perf_counter()
    fit(gan, (levels, y), steps=steps, batch_size=128, lr=5e-4, progress=False, batch_transform=_fresh)
    secs = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    xs = gan.sample(1000, labels=labels, generator=g)
    rows.append({"samples": f"class-conditional WGAN-GP (MLP 256x2, EMA), {steps} steps",
                 **digits_sample_report(xs, labels), "seconds": secs})
    raw = gan.sample(1000, labels=labels, generator=torch.Generator().manual_seed(0), use_ema=False)
    rows.append({"samples": "  same GAN, last generator (no EMA)", **digits_sample_report(raw, labels)})
    save_image_grid(xs[:100], out / f"gan-digits{suffix}.png", nrow=10,
                    title="class-conditional WGAN-GP: column k is class k")
    rows.append(vae_row(steps, levels, y, labels))
    for r in rows:
        print({k: v for k, v in r.items()}, flush=True)
    return rows


def vae_row(steps: int, levels, y, labels) -> dict:
    """The same numbers for a class-conditional VAE's samples."""
    from gencore.models import VAE

    torch.manual_seed(0)
    vae = VAE(64, latent_dim=16, hidden=(256, 256), context_features=10)
    onehot = torch.nn.functional.one_hot(y, 10).float()
    t0 = time.perf_counter()
    fit(vae, (levels, onehot), steps=steps, batch_size=128, lr=1e-3, progress=False, batch_transform=_fresh)
    secs = time.perf_counter() - t0
    xs = vae.sample(1000, generator=torch.Generator().manual_seed(0),
                    context=torch.nn.functional.one_hot(labels, 10).float())
    return {"samples": f"class-conditional VAE ({vae.likelihood} decoder, mean), {steps} steps",
            **digits_sample_report(xs, labels), "seconds": secs}


def scatter_figure(panels: dict, data, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3.0), dpi=110, squeeze=False)
    for ax, (title, xs) in zip(axes[0], panels.items()):
        ax.scatter(data[:, 0], data[:, 1], s=1, c="0.75", alpha=0.5)
        ax.scatter(xs[:, 0], xs[:, 1], s=1, c="tab:red", alpha=0.5)
        # Wide enough for the samples too: a generator fooling a fixed discriminator may leave the data.
        pts = torch.cat([data, xs.to(data.dtype)])
        lo, hi = min(-4.5, pts.quantile(0.002).item()), max(4.5, pts.quantile(0.998).item())
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def markdown(res: dict) -> str:
    first = res["toys"][0]
    lines = ["### 8gaussians (2000 samples against 2000 held-out points)", "",
             f"| generator | modes covered | within 3 std of a mode | MMD² (h = {first['mmd_bandwidth']:.2f}) "
             f"| MMD² (h = {first['mmd_local_bandwidth']:g}) | steps | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def row(name, r, steps="–", secs="–"):
        return (f"| {name} | {r['modes_covered']}/8 | {100 * r['high_quality_fraction']:.1f}% "
                f"| {r['mmd2_vs_heldout']:.4f} | {r['mmd2_local_vs_heldout']:.4f} | {steps} | {secs} |")

    for r in res["toys"]:
        lines.append(row(r["run"], r, r["steps"], f"{r['seconds']:.0f}"))
    refs = first["references"]
    lines.append(row("reference: collapsed onto one mode", refs["collapsed_one_mode"]))
    lines.append(row("reference: uniform on the circle through the centres", refs["uniform_ring"]))
    lines.append(row("reference: real training data", refs["real_train"]))
    f, s = res["fixed_discriminator"], res["stronger_discriminator"]
    lines += ["", f"MMD²: RBF kernel, unbiased, against held-out data; h = {first['mmd_bandwidth']:.2f} is the "
              "median distance within held-out data (the global shape), h = "
              f"{first['mmd_local_bandwidth']:g} the within-mode scale.", "",
              "### When the game goes wrong", "",
              "| experiment | modes covered | within 3 std | MMD² (median h) | MMD² (local h) | note |",
              "|---|---:|---:|---:|---:|---|"]
    for when, label in (("before", "the trained non-saturating GAN"),
                        ("after", f"its discriminator frozen, {f['generator_steps']} generator-only steps")):
        v = f[when]
        lines.append(f"| {label} | {v['modes_covered']}/8 | {100 * v['high_quality_fraction']:.1f}% "
                     f"| {v['mmd2_vs_heldout']:.4f} | {v['mmd2_local_vs_heldout']:.4f} | rated real by the frozen "
                     f"discriminator: {100 * v['rated_real_by_the_fixed_discriminator']:.0f}%; "
                     f"sample std {v['spread_std']:.2f} |")
    for name, v in s.items():
        who = "balanced game" if name == "balanced" else "much stronger discriminator"
        lines.append(f"| {who}: {v['n_critic']} discriminator update(s) per round at {v['lr_ratio']:g}x "
                     f"the generator's lr, {v['steps']} steps | {v['modes_covered']}/8 "
                     f"| {100 * v['high_quality_fraction']:.1f}% | {v['mmd2_vs_heldout']:.4f} "
                     f"| {v['mmd2_local_vs_heldout']:.4f} "
                     f"| discriminator accuracy real {100 * v['discriminator_accuracy_real']:.0f}% / fake "
                     f"{100 * v['discriminator_accuracy_fake']:.0f}%; critic's E_p f - E_q f "
                     f"{v['final_train_ipm']:.2f} |")
    lines += ["", "### Digits (1000 samples, 100 per class; classifier trained inside gencore)", "",
              "| samples | inception-style score (max 10) | train on them, test on real | NN distance to train "
              "(median) | / held-out's | near copies (expected 1%) |", "|---|---:|---:|---:|---:|---:|"]
    for r in res["digits"]:
        if "note" in r:
            lines.append(f"| {r['samples']} | {r['note']} | | | | |")
            continue
        m = r["memorization"]
        lines.append(f"| {r['samples']} | {_fmt(r.get('inception_score'), '.2f')} "
                     f"| {_fmt(r.get('tstr_accuracy'), '.3f')} | {m['sample_nn_median']:.3f} "
                     f"| {m['nn_ratio']:.2f} | {100 * m['near_copy_fraction']:.1f}% |")
    lines.append(f"\nTotal {res['seconds'] / 60:.1f} min on {res['machine']}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter runs (a smoke test of the script)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: these networks are small, and the CPU is shared)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if a.quick else ""
    t0 = time.perf_counter()
    toy_steps = 600 if a.quick else 3000
    rows, toy = toy_runs(toy_steps, a.out, suffix)
    fixed = fixed_discriminator(toy["models"]["non_saturating"], 100 if a.quick else 500)
    strong = stronger_discriminator(300 if a.quick else 1500)
    xe = load_dataset("8gaussians", "test")[0][:N_EVAL]
    panels = {f"{k}": _sample(m) for k, m in toy["models"].items()}
    panels["fixed discriminator"] = fixed.pop("samples")
    panels["balanced game"] = strong["balanced"].pop("samples")
    panels["much stronger discriminator"] = strong["stronger"].pop("samples")
    scatter_figure(panels, xe, a.out / f"gan-8gaussians{suffix}.png")
    res = {"toys": rows, "fixed_discriminator": fixed, "stronger_discriminator": strong,
           "ipm_history": toy["ipm_history"], "digits": digits(500 if a.quick else 3000, a.out, suffix)}
    res["seconds"] = time.perf_counter() - t0
    res["machine"] = f"CPU, {a.threads} torch thread(s), torch {torch.__version__}"
    (a.out / f"gan-quality{suffix}.json").write_text(json.dumps(res, indent=1))
    text = markdown(res)
    (a.out / f"gan-quality{suffix}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
