"""``gencore demo``: the library working end to end on embedded data.

Every model family of the lecture is trained briefly on the embedded digits and judged
with the metrics that apply to it; one comparison table is printed, figures are written
as PNG into the output folder, and the run ends with the fused-op benchmark ratios.
The representation learners (SimCLR, CLIP) get a table of their own: they are judged by
what their frozen features are good for, not by likelihood or samples; so does text to
image (DALL-E), judged by whether its images show what their captions say.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from gencore import metrics, runs
from gencore.data import DIGITS_LEVELS, load_dataset
from gencore.nn import MLP, AffineCoupling
from gencore.plotting import save_image_grid
from gencore.runs.common import one_hot



def _coupling_stack(d: int, depth: int, hidden: int, zero_init: bool) -> nn.ModuleList:
    layers = []
    for i in range(depth):
        n_a = (d + 1) // 2 if i % 2 == 0 else d // 2
        cond = MLP(n_a, 2 * (d - n_a), hidden=(hidden, hidden), zero_init=zero_init)
        layers.append(AffineCoupling(d, cond, mask="alternate", swap=i % 2 == 1))
    return nn.ModuleList(layers)


def _bits_per_dim(nll_nats: float, d: int) -> float:
    return metrics.bits_per_dim(nll_nats, d, levels=DIGITS_LEVELS)


def section_inversion() -> dict:
    print("== fused affine coupling: exact inversion and log-determinant ==")
    torch.manual_seed(0)
    d = 11
    layers = _coupling_stack(d, 16, 32, zero_init=False)
    x = torch.randn(256, d)
    with torch.no_grad():
        y, total = x, torch.zeros(256)
        for layer in layers:
            y, ld = layer(y)
            total += ld
        back, total_inv = y, torch.zeros(256)
        for layer in reversed(layers):
            back, ld = layer.inverse(back)
            total_inv += ld
    err = (back - x).abs().max().item()
    print(f"16 layers, D={d}, B=256, float32: max |inverse(forward(x)) - x| = {err:.2e}, "
          f"max |logdet + inverse logdet| = {(total + total_inv).abs().max().item():.2e}")
    layers64 = layers.double()
    xi = x[:1].double()

    def f(v):
        for layer in layers64:
            v, _ = layer(v)
        return v

    jac = torch.autograd.functional.jacobian(lambda v: f(v[None])[0], xi[0])
    exact = torch.linalg.slogdet(jac).logabsdet.item()
    fused = 0.0
    with torch.no_grad():
        v = xi
        for layer in layers64:
            v, ld = layer(v)
            fused += ld.item()
    print(f"log|det J| of the stack at one point (float64): fused {fused:.10f}, "
          f"slogdet of the autograd Jacobian {exact:.10f}")
    return {"inversion_max_error": err, "logdet_fused": fused, "logdet_slogdet": exact}


def _run(out: Path, name: str, model: str, data: str, steps: int, **options):
    """Train ``model`` through :func:`gencore.runs.train` (the code of ``gencore train``) into
    ``out/runs/name``, score it with :func:`gencore.runs.evaluate`; returns ``(model, eval
    dict, checkpoint manifest, seconds)``."""
    t0 = time.perf_counter()
    runs.train(model, data, out / "runs" / name, steps=steps, progress=False, **options)
    res = runs.evaluate(out / "runs" / name)
    net, meta = runs.load_run(out / "runs" / name)
    return net, res, meta, time.perf_counter() - t0


def _best(meta: dict) -> dict:
    return min(meta["extra"]["history"], key=lambda h: h["eval_loss"])


def section_flow(steps: int, out: Path) -> dict:
    """RealNVP by maximum likelihood through ``gencore.runs``: trained on the ``fit`` split
    (1212 digits, a fresh dequantization per batch), keeping the parameters with the best
    validation NLL (135 digits): 1212 digits in 64 dimensions overfit a flow within a few
    hundred steps. The test split is scored once, at the end. A class-conditional RealNVP
    trained the same way provides labelled samples for the train-on-synthetic / test-on-real
    accuracy."""
    print("\n== flows on the embedded digits (64-D, 1212 fit / 135 validation / 450 test) ==")
    out_d = {}
    for name, cond in (("flow", False), ("conditional", True)):
        net, res, meta, secs = _run(out, f"realnvp{'-conditional' if cond else ''}", "realnvp", "digits", steps,
                                    batch_size=128, conditional=cond)
        best = _best(meta)
        print(f"{'class-conditional ' if cond else ''}RealNVP: {steps} AdamW steps (batch 128, {secs:.1f} s); kept "
              f"step {best['step']} (best validation NLL {best['eval_loss']:.1f} nats); test NLL "
              f"{res['test_nll_nats']:.1f} nats = {res['bits_per_dim']:.3f} bits/dim (uniform over the 17 levels: "
              f"{math.log2(DIGITS_LEVELS):.3f})")
        out_d[name] = {"model": net, "test_nll_nats": res["test_nll_nats"], "bits_per_dim": res["bits_per_dim"],
                       "best_step": best["step"]}
    # The neural spline flow (rational-quadratic spline couplings, gencore.ops.rq_spline) on
    # the same data, steps and selection.
    net, res, meta, secs = _run(out, "nsf", "nsf", "digits", steps, batch_size=128)
    best = _best(meta)
    print(f"neural spline flow: {steps} AdamW steps (batch 128, {secs:.1f} s); kept step {best['step']} (best "
          f"validation NLL {best['eval_loss']:.1f} nats); test NLL {res['test_nll_nats']:.1f} nats = "
          f"{res['bits_per_dim']:.3f} bits/dim")
    out_d["spline"] = {"model": net, "test_nll_nats": res["test_nll_nats"], "bits_per_dim": res["bits_per_dim"],
                       "best_step": best["step"]}
    out_d["x_train"] = load_dataset("digits", "train")[0]
    out_d["x_test"] = load_dataset("digits", "test")[0]
    out_d["test_nll_nats"], out_d["bits_per_dim"] = out_d["flow"]["test_nll_nats"], out_d["flow"]["bits_per_dim"]
    out_d["model"] = out_d["flow"]["model"]
    return out_d


def section_autoencoders(steps: int, out: Path) -> dict:
    """PCA (closed form, its size chosen on the validation split), a non-linear auto-encoder
    at latent size r = 8 beside PCA at the same size, and a VAE (categorical decoder over the
    17 levels) with its importance-weighted likelihood, plus a class-conditional VAE for
    labelled samples, a hierarchical VAE with two stochastic layers and a VQ-VAE; all through
    ``gencore.runs``."""
    print("\n== PCA, auto-encoder and VAE on the embedded digits (fit on 1212, selected on 135, tested on 450) ==")
    _, pca, _, _ = _run(out, "pca", "pca", "digits", None)
    print(f"probabilistic PCA (r={pca['n_components']}, chosen on the validation split): test NLL "
          f"{pca['test_nll_nats']:.1f} nats = {pca['bits_per_dim']:.3f} bits/dim")
    r = 8
    _, ae, _, secs = _run(out, "ae", "ae", "digits", steps, latent_dim=r)
    print(f"MLP auto-encoder (r={r}, {steps} steps, {secs:.1f} s): test reconstruction error "
          f"{ae['reconstruction_error']:.3f} per digit; PCA at r={r}: {ae['pca_reconstruction_error']:.3f} "
          f"({ae['reconstruction_error'] / ae['pca_reconstruction_error']:.2f}x PCA's)")
    result = {"pca": {"reconstruction_error": ae["pca_reconstruction_error"], "test_nll_nats": pca["test_nll_nats"],
                      "bits_per_dim": pca["bits_per_dim"], "n_components": pca["n_components"]},
              "ae": {"reconstruction_error": ae["reconstruction_error"]}}
    for name, cond in (("vae", False), ("cvae", True)):
        vae, res, meta, secs = _run(out, name, "vae", "digits", steps, conditional=cond)
        print(f"{'class-conditional ' if cond else ''}VAE (r=16, {steps} steps, {secs:.1f} s with evaluation; kept "
              f"step {_best(meta)['step']}): test ELBO {res['elbo_nats']:.1f} nats, importance-weighted log p(x) "
              f"(K=1000) {-res['test_nll_nats']:.1f} nats = {res['bits_per_dim']:.3f} bits/dim")
        result[name] = {"model": vae, "elbo_nats": res["elbo_nats"], "test_nll_nats": res["test_nll_nats"],
                        "bits_per_dim": res["bits_per_dim"]}
    hv_steps = min(steps, 800)  # its validation loss is best near step 200-500 (bench/results/hvae-quality.md)
    hv, res, meta, secs = _run(out, "hvae", "hvae", "digits", hv_steps)
    print(f"hierarchical VAE (z_1, z_2 = 16, 8; {hv_steps} steps, {secs:.1f} s with evaluation; kept step "
          f"{_best(meta)['step']}): test ELBO {res['elbo_nats']:.1f} nats, importance-weighted log p(x) (K=1000) "
          f"{-res['test_nll_nats']:.1f} nats = {res['bits_per_dim']:.3f} bits/dim; KL per layer (z_1, z_2) "
          f"{', '.join(f'{v:.1f}' for v in res['kl_per_layer_nats'])} nats, active units "
          f"{', '.join(map(str, res['active_units']))}")
    result["hvae"] = {"model": hv, **{k: res[k] for k in ("elbo_nats", "test_nll_nats", "bits_per_dim",
                                                           "kl_per_layer_nats", "active_units")}}
    vq_steps = min(steps, 1500)  # its validation bound is best near step 900 (docs/models/latent.md)
    vq, res, meta, secs = _run(out, "vqvae", "vqvae", "digits", vq_steps)
    print(f"VQ-VAE (64 codes on a 4 x 4 grid = {res['latent_bits']:.0f} bits, {vq_steps} steps, {secs:.1f} s; kept "
          f"step {_best(meta)['step']}): test bound -log p(x|z_q) - log p(z_q) = {res['test_nll_bound_nats']:.1f} nats "
          f"= {res['bits_per_dim']:.3f} bits/dim (prior {res['prior_nll_nats']:.1f} nats), reconstruction error "
          f"{res['reconstruction_error']:.3f}, codes in use {res['code_perplexity']:.1f} of {res['num_codes']}")
    result["vqvae"] = {"model": vq, **{k: res[k] for k in ("test_nll_bound_nats", "bits_per_dim", "reconstruction_error",
                                                            "code_perplexity", "latent_bits")}}
    cvq, res, meta, secs = _run(out, "cvqvae", "vqvae", "digits", vq_steps, conditional=True)
    print(f"class-conditional VQ-VAE (prior p(z | y), {vq_steps} steps, {secs:.1f} s; kept step {_best(meta)['step']}): "
          f"test bound -log p(x|z_q) - log p(z_q|y) = {res['test_nll_bound_nats']:.1f} nats = "
          f"{res['bits_per_dim']:.3f} bits/dim")
    result["cvqvae"] = {"model": cvq, **{k: res[k] for k in ("test_nll_bound_nats", "bits_per_dim",
                                                              "reconstruction_error")}}
    return result


def section_gan(steps: int, out: Path) -> dict:
    """A class-conditional WGAN-GP (MLP pair, per-sample gradient penalty, 5 critic updates
    per generator update, EMA generator) on the digits through ``gencore.runs``, with the
    critic's IPM estimate."""
    print("\n== class-conditional GAN (WGAN-GP) on the embedded digits ==")
    gan, _, meta, secs = _run(out, "gan", "gan", "digits", steps, batch_size=128, conditional=True, ema=0.999)
    ipm = [h.get("train_ipm") for h in meta["extra"]["history"]]
    print(f"{steps} generator steps ({secs:.1f} s with evaluation); critic's estimate E_p f - E_q f on training "
          f"batches over training: {', '.join(f'{v:.2f}' for v in ipm if v is not None)}")
    return {"model": gan, "ipm_history": ipm}


def _sample_metrics(samples: torch.Tensor, x_train: torch.Tensor, x_test: torch.Tensor) -> dict:
    is_mean, is_std = metrics.digits_inception_score(samples)
    mem = metrics.memorization_report(samples, x_train, x_test)
    return {"inception_score": is_mean.item(), "inception_score_std": is_std.item(),
            "near_copy_fraction": mem["near_copy_fraction"], "nn_ratio": mem["nn_ratio"]}


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    head = ("| family | held-out NLL (nats) | bits/dim | reconstruction error | inception-style score (max 10) "
            "| train-on-samples accuracy | near-copies (expected 1%) | NN-distance ratio | status |")
    print(head)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        recon = _fmt(r.get("recon"), ".3f") + (f" ({r['recon_note']})" if r.get("recon_note") else "")
        print(f"| {r['family']} | {_fmt(r.get('test_nll_nats'), '.1f')} | {_fmt(r.get('bits_per_dim'), '.3f')} | {recon} "
              f"| {_fmt(r.get('inception_score'), '.2f')} | {r.get('tstr', '–')} "
              f"| {_fmt(None if r.get('near_copy_fraction') is None else 100 * r['near_copy_fraction'], '.1f')}"
              f"{'%' if r.get('near_copy_fraction') is not None else ''} "
              f"| {_fmt(r.get('nn_ratio'), '.2f')} | {r['status']} |")


def section_contrastive(steps: int, out: Path) -> list[dict]:
    """SimCLR on the digits and CLIP on digits with generated captions, both on the fused
    tiled losses, trained and evaluated through the same code as ``gencore train`` /
    ``gencore eval`` (held-out split; probes fitted on the train split's frozen features)."""
    print("\n== contrastive representations: SimCLR (two views) and CLIP (digit + caption) ==")
    rows = []
    for model, data, family in (("simclr", "digits", "SimCLR (conv encoder, 128 features)"),
                                ("clip", "digits-captions", "CLIP (conv image + token text encoder)")):
        _, r, _, secs = _run(out, model, model, data, steps)
        print(f"{family}: {steps} steps ({secs:.1f} s with evaluation)")
        row = {"family": family, "status": "trained", "probe": r["linear_probe_accuracy"],
               "knn": r["knn_accuracy"], "knn_aug": r["augmented_test_knn_accuracy"],
               "random_probe": r["baselines"]["random_init_encoder"]["linear_probe_accuracy"]}
        if model == "clip":
            row.update(zero_shot=r["zero_shot_accuracy"],
                       i2t=r["retrieval"]["image_to_text"]["recall@1"],
                       t2i=r["retrieval"]["text_to_image"]["recall@1"],
                       arithmetic=r["caption_arithmetic"]["both_hit_rate"])
        rows.append(row)
    raw = r["baselines"]["raw_pixels"]
    rows.insert(0, {"family": "reference: raw pixels", "status": "data", "probe": raw["linear_probe_accuracy"],
                    "knn": raw["knn_accuracy"], "knn_aug": raw["augmented_test_knn_accuracy"]})
    return rows


def print_representation_table(rows: list[dict]) -> None:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    print("| representation | linear probe | kNN (k=5) | kNN, augmented digits | probe of the untrained encoder "
          "| zero-shot | recall@1 image→text / text→image | caption arithmetic (property and class) | status |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---|")
    for r in rows:
        ret = f"{pct(r['i2t'])} / {pct(r['t2i'])}" if "i2t" in r else "–"
        print(f"| {r['family']} | {pct(r.get('probe'))} | {pct(r.get('knn'))} | {pct(r.get('knn_aug'))} "
              f"| {pct(r.get('random_probe'))} | {pct(r.get('zero_shot'))} | {ret} | {pct(r.get('arithmetic'))} "
              f"| {r['status']} |")


#: The captions of the demo's text-to-image grid: one row each (the last two name
#: combinations held out of training, gencore.runs.text2image.HELD_OUT_COMBOS).
DEMO_CAPTIONS = ("bold upright seven", "thin upright seven", "thin left one", "bold right one", "regular upright two",
                 "bold left three", "thin right four", "regular upright zero", "regular left seven",
                 "bold upright eight")


def section_text_to_image(steps: int, out: Path) -> dict:
    """DALL-E on the captioned digits (:class:`gencore.models.TextToImage`) through
    ``gencore.runs``: trained with ten (stroke, slant, class) combinations held out, scored
    on the test captions by ``gencore eval`` (class by the digits classifier, stroke and
    slant by the captions' own rule, retrieval by an independent CLIP), and a caption ->
    image grid."""
    print("\n== text to image: caption tokens, then VQ code tokens, one transformer (DALL-E) ==")
    net, r, meta, secs = _run(out, "text2image", "text2image", "digits-captions", steps)
    from gencore.runs.text2image import CANDIDATES, SAMPLING

    s = SAMPLING
    print(f"{steps} steps ({secs:.1f} s with evaluation; kept step {_best(meta)['step']}); sampling: guidance "
          f"{s['guidance']}, temperature {s['temperature']}; re-ranked: best of {CANDIDATES} by the model's CLIP")
    g = torch.Generator().manual_seed(0)
    images = net.generate([c for c in DEMO_CAPTIONS for _ in range(8)], candidates=CANDIDATES, generator=g, **s)
    save_image_grid(images, out / "text2image.png", nrow=8, row_labels=DEMO_CAPTIONS,
                    title=f"text to image (best of {CANDIDATES} by CLIP); the last two captions never seen in training")
    tc, ho = r["test_captions"], r["held_out_combos"]
    mem = r["diversity_and_memorization"]
    rows = [{"family": "reference: real test digits", **tc["real_test_digits"],
             "near_copy_fraction": mem["real_test_digits"]["near_copy_fraction"]},
            {"family": "chance", **tc["chance"]},
            {"family": "generated", **tc["generated"], "near_copy_fraction": mem["generated"]["near_copy_fraction"]},
            {"family": f"generated, re-ranked (best of {CANDIDATES})", **tc["generated_reranked"],
             "near_copy_fraction": mem["generated_reranked"]["near_copy_fraction"]},
            {"family": "held-out combinations, re-ranked", **ho["generated_reranked"]}]
    return {"rows": rows, "perplexity_per_code": r["prior"]["perplexity_per_code"],
            "unigram_perplexity_per_code": r["prior"]["unigram_perplexity_per_code"], "seconds": secs}


def print_text_to_image_table(t2i: dict) -> None:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    print("| text to image, test captions | class | stroke | slant | all three | CLIP recall@1 | near-copies |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in t2i["rows"]:
        print(f"| {r['family']} | {pct(r['class_accuracy'])} | {pct(r['stroke_accuracy'])} "
              f"| {pct(r['slant_accuracy'])} | {pct(r['all_accuracy'])} | {pct(r.get('clip_recall@1'))} "
              f"| {pct(r.get('near_copy_fraction'))} |")
    print(f"\nthe prior's perplexity on the test digits' codes: {t2i['perplexity_per_code']:.1f} codes per token "
          f"(unigram frequencies: {t2i['unigram_perplexity_per_code']:.1f}; uniform: 64)")


def section_bench(quick: bool, out: Path) -> None:
    print("\n== fused ops vs eager PyTorch and torch.compile ==")
    from gencore.benchmarks import contrastive, coupling, reparam, vq

    for bench in (coupling, reparam):
        bench.main((["--quick"] if quick else []) + ["--out", str(out)])
    # The full contrastive and VQ benchmarks (N up to 65536) take many minutes: `make bench` runs them.
    contrastive.main(["--quick", "--out", str(out)])
    vq.main(["--quick", "--out", str(out)])


def main(quick: bool = False, out: str | Path = "demo-out") -> int:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "runs", ignore_errors=True)  # the demo's own run folders: start afresh
    t_start = time.perf_counter()
    results: dict = {"inversion": section_inversion()}

    flow = section_flow(200 if quick else 1500, out)
    samples = flow["model"].sample(450, generator=torch.Generator().manual_seed(0))
    flow_row = {"family": "Normalizing flow (RealNVP, 8 couplings)", "status": "trained",
                "test_nll_nats": flow["test_nll_nats"], "bits_per_dim": flow["bits_per_dim"],
                **_sample_metrics(samples, flow["x_train"], flow["x_test"])}
    spline = flow["spline"]
    spline_samples = spline["model"].sample(450, generator=torch.Generator().manual_seed(0))
    spline_row = {"family": "Normalizing flow (neural spline, 8 couplings)", "status": "trained",
                  "test_nll_nats": spline["test_nll_nats"], "bits_per_dim": spline["bits_per_dim"],
                  "tstr": "n/a (unconditional)", **_sample_metrics(spline_samples, flow["x_train"], flow["x_test"])}
    x_tr, y_tr = load_dataset("digits", "train")
    x_te, y_te = load_dataset("digits", "test")
    labels = torch.arange(1000) % 10
    cond = flow["conditional"]
    cond_samples = cond["model"].sample(1000, generator=torch.Generator().manual_seed(1), context=one_hot(labels))
    tstr = metrics.classification_accuracy_score(cond_samples, labels, x_te, y_te)
    cond_row = {"family": "Class-conditional flow (RealNVP)", "status": "trained",
                "test_nll_nats": cond["test_nll_nats"], "bits_per_dim": cond["bits_per_dim"],
                "tstr": f"{100 * tstr:.1f}%", **_sample_metrics(cond_samples[:450], flow["x_train"], flow["x_test"])}
    flow_row["tstr"] = "n/a (unconditional)"
    real_row = {"family": "reference: held-out real digits", "status": "data",
                "tstr": f"{100 * metrics.classification_accuracy_score(x_tr, y_tr, x_te, y_te):.1f}%",
                **_sample_metrics(flow["x_test"], flow["x_train"], flow["x_test"])}
    ae = section_autoencoders(300 if quick else 2000, out)
    pca_row = {"family": f"PCA (r={ae['pca']['n_components']}, probabilistic)", "status": "fitted",
               "test_nll_nats": ae["pca"]["test_nll_nats"], "bits_per_dim": ae["pca"]["bits_per_dim"],
               "recon": ae["pca"]["reconstruction_error"]}
    ae_row = {"family": "Auto-encoder (MLP, r=8)", "status": "trained", "recon": ae["ae"]["reconstruction_error"]}
    pca_row["recon_note"] = "r=8"
    vae_samples = ae["vae"]["model"].sample(450, generator=torch.Generator().manual_seed(0))
    vae_row = {"family": "VAE (r=16, categorical decoder)", "status": "trained",
               "test_nll_nats": ae["vae"]["test_nll_nats"], "bits_per_dim": ae["vae"]["bits_per_dim"],
               "tstr": "n/a (unconditional)", **_sample_metrics(vae_samples, flow["x_train"], flow["x_test"])}
    cvae_samples = ae["cvae"]["model"].sample(1000, generator=torch.Generator().manual_seed(1), context=one_hot(labels))
    cvae_row = {"family": "Class-conditional VAE", "status": "trained",
                "test_nll_nats": ae["cvae"]["test_nll_nats"], "bits_per_dim": ae["cvae"]["bits_per_dim"],
                "tstr": f"{100 * metrics.classification_accuracy_score(cvae_samples, labels, x_te, y_te):.1f}%",
                **_sample_metrics(cvae_samples[:450], flow["x_train"], flow["x_test"])}
    hv_samples = ae["hvae"]["model"].sample(450, generator=torch.Generator().manual_seed(0))
    hv_row = {"family": "Hierarchical VAE (z: 16, 8)", "status": "trained",
              "test_nll_nats": ae["hvae"]["test_nll_nats"], "bits_per_dim": ae["hvae"]["bits_per_dim"],
              "tstr": "n/a (unconditional)", **_sample_metrics(hv_samples, flow["x_train"], flow["x_test"])}
    vq_samples = ae["vqvae"]["model"].sample(450, generator=torch.Generator().manual_seed(0)).reshape(450, -1)
    vq_row = {"family": f"VQ-VAE (64 codes, {ae['vqvae']['latent_bits']:.0f} bits; NLL: upper bound)",
              "status": "trained", "test_nll_nats": ae["vqvae"]["test_nll_bound_nats"],
              "bits_per_dim": ae["vqvae"]["bits_per_dim"], "recon": ae["vqvae"]["reconstruction_error"],
              "tstr": "n/a (unconditional)", **_sample_metrics(vq_samples, flow["x_train"], flow["x_test"])}
    cvq_samples = ae["cvqvae"]["model"].sample(1000, generator=torch.Generator().manual_seed(1),
                                               labels=labels).reshape(1000, -1)
    cvq_row = {"family": "Class-conditional VQ-VAE (NLL: upper bound)", "status": "trained",
               "test_nll_nats": ae["cvqvae"]["test_nll_bound_nats"], "bits_per_dim": ae["cvqvae"]["bits_per_dim"],
               "recon": ae["cvqvae"]["reconstruction_error"],
               "tstr": f"{100 * metrics.classification_accuracy_score(cvq_samples, labels, x_te, y_te):.1f}%",
               **_sample_metrics(cvq_samples[:450], flow["x_train"], flow["x_test"])}
    gan = section_gan(200 if quick else 2000, out)
    gan_samples = gan["model"].sample(1000, labels=labels, generator=torch.Generator().manual_seed(1))
    gan_row = {"family": "Class-conditional GAN (WGAN-GP)", "status": "trained",
               "tstr": f"{100 * metrics.classification_accuracy_score(gan_samples, labels, x_te, y_te):.1f}%",
               **_sample_metrics(gan_samples[:450], flow["x_train"], flow["x_test"])}
    save_image_grid(gan_samples[:100], out / "gan_class_samples.png", nrow=10,
                    title="class-conditional GAN: column k is class k")
    save_image_grid(vae_samples[:64], out / "vae_samples.png", title="VAE samples (decoder means)")
    save_image_grid(cvae_samples[:100], out / "vae_class_samples.png", nrow=10,
                    title="class-conditional VAE: column k is class k")
    save_image_grid(vq_samples[:64], out / "vqvae_samples.png", title="VQ-VAE samples (prior codes, decoder means)")
    save_image_grid(hv_samples[:64], out / "hvae_samples.png", title="hierarchical VAE samples (decoder means)")
    rows = [real_row, flow_row, spline_row, cond_row, pca_row, ae_row, vae_row, cvae_row, hv_row, vq_row, cvq_row,
            gan_row]
    representation = section_contrastive(steps=60 if quick else 800, out=out)
    from gencore.runs.text2image import STEPS as T2I_STEPS

    t2i = section_text_to_image(60 if quick else T2I_STEPS, out)
    save_image_grid(flow["x_test"][:64], out / "digits_real.png", title="held-out digits")
    save_image_grid(samples[:64], out / "flow_samples.png", title="RealNVP samples")
    save_image_grid(cond_samples[:100], out / "flow_class_samples.png", nrow=10,
                    title="class-conditional RealNVP: column k is class k")
    print("\n== comparison on the held-out digits ==")
    print_table(rows)
    print("\n== representations on the held-out digits ==")
    print_representation_table(representation)
    print("\n== text to image on the test captions (class: digits classifier; stroke, slant: the captions' rule) ==")
    print_text_to_image_table(t2i)
    results["table"] = rows
    results["representation"] = representation
    results["text_to_image"] = t2i
    section_bench(quick, out)
    results["seconds"] = time.perf_counter() - t_start
    (out / "demo.json").write_text(json.dumps(results, indent=2, default=float))
    for r in rows:
        r.pop("model", None)
    print(f"\nfigures (digits_real.png, flow_samples.png, flow_class_samples.png, vae_samples.png, "
          f"vae_class_samples.png, hvae_samples.png, vqvae_samples.png, gan_class_samples.png, text2image.png), demo.json and benchmark tables in {out}/ "
          f"({results['seconds']:.0f} s)")
    return 0
