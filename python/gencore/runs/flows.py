"""Runs of the normalizing flows: NICE, RealNVP, Glow and the neural spline flow (coupling or
autoregressive form), on the toys, the digits (vectors
or ``(1, 8, 8)`` images with ``--image``) and your own data.

Training fits the ``"fit"`` split (digits: a fresh dequantization of every batch) and keeps
the parameters with the best NLL on the ``"val"`` split (1212 digits overfit a flow within
a few hundred steps); ``evaluate`` scores the ``"test"`` split once: NLL in nats per
example, bits/dim for digits, the gap to the true entropy on toys with an exact density.
"""

from __future__ import annotations

import math

import torch

from gencore import metrics
from gencore.data import DIGITS_LEVELS, EXACT_TOYS, TOYS, load_dataset, toy_entropy, toy_log_prob
from gencore.data.files import read_once
from gencore.models import build
from gencore.runs.common import (
    best_record,
    class_count,
    data_kind,
    fresh_dequantization,
    labelled,
    model_config,
    one_hot,
    picture_shape,
    run_metadata,
    run_record,
    save_samples,
    steps_for,
    write_eval,
    writes_samples,
)
from gencore.runs.registry import ModelSpec, register
from gencore.train import fit

DEFAULTS = {
    ("realnvp", "toy"): {"n_couplings": 8, "hidden": [128, 128]},
    ("realnvp", "digits"): {"n_couplings": 8, "hidden": [256, 256]},
    ("realnvp", "image"): {"n_couplings": 3, "hidden": 64},
    ("nice", "toy"): {"n_couplings": 4, "hidden": [128, 128]},
    ("nice", "digits"): {"n_couplings": 4, "hidden": [256, 256]},
    ("glow", "toy"): {"steps": 8, "hidden": [128, 128]},
    ("glow", "digits"): {"steps": 8, "hidden": [256, 256]},
    ("glow", "image"): {"steps": 4, "n_levels": 2, "hidden": 64},
    # Toys: about RealNVP's parameter count (135k): 8 spline couplings of 8 bins.
    ("nsf", "toy"): {"n_couplings": 8, "hidden": [118, 118], "bins": 8, "bound": 4.0},
    ("nsf", "digits"): {"n_couplings": 8, "hidden": [256, 256], "bins": 4, "bound": 4.0},
    # The autoregressive form (--autoregressive); toys: about RealNVP's parameter count again
    # (136,884 counting the MADEs' masked-out weights).
    ("nsf-ar", "toy"): {"n_couplings": 8, "hidden": [108, 108], "bins": 8, "bound": 4.0, "autoregressive": True},
    ("nsf-ar", "digits"): {"n_couplings": 8, "hidden": [256, 256], "bins": 4, "bound": 4.0, "autoregressive": True},
}
#: ``--couplings`` sets this config key.
DEPTH_KEY = {"nice": "n_couplings", "realnvp": "n_couplings", "glow": "steps", "nsf": "n_couplings"}
LR = 1e-3
#: Steps without ``--steps``. Toys: RealNVP reaches a gap to the true entropy of 0.119 nats
#: on checkerboard at 10000 steps (docs/cli.md); digits: the validation NLL bottoms out well
#: before 3000 steps.
STEPS = {"toy": 10000, "digits": 3000, "image": 3000}
#: Evaluations (and checkpoints) on images at least this often: the best validation NLL comes
#: within a few hundred steps. Toys: 10 per run.
EVAL_EVERY = 100


def default_steps(kind: str, options: dict) -> int:
    return STEPS[kind]


def train(spec, data: str, out, *, steps: int, batch_size: int, lr: float | None, seed: int, progress: bool,
          allow_changes: bool, overrides: dict, couplings: int | None = None, hidden: list[int] | None = None,
          conditional: bool = False, image: bool = False, autoregressive: bool = False) -> dict:
    model = spec.name
    if image and data in TOYS:
        raise ValueError(f"train: --image applies to image data (digits, PNG folders), not to {data}")
    # Digits train on a fresh dequantization of every batch (levels in, noise per step); your
    # own data as load_dataset returns it (8-bit images: one dequantization, drawn with the seed).
    digits = data == "digits"
    with read_once():  # your own data: one read for both splits and the fingerprint
        x, y = load_dataset(data, "fit", seed=seed, image=image, **({"dequantized": False} if digits else {}))
        xv, yv = load_dataset(data, "val", image=image)
        record = run_metadata(data, out, conditional=conditional, image=image)
    kind = data_kind(data, image, x)
    steps = steps_for(spec, steps, kind, {"couplings": couplings, "hidden": hidden, "conditional": conditional,
                                          "image": image, "autoregressive": autoregressive})
    if kind != "image" and x[0].numel() < 2:
        raise ValueError(f"train: {model} needs at least 2 features per example (its layers transform some "
                         f"features given the others); {data} has {x[0].numel()}")
    config = model_config(DEFAULTS[(model + ("-ar" if autoregressive else ""), kind)], x, image, hidden=hidden)
    if couplings is not None:
        config[DEPTH_KEY[model]] = couplings
    if conditional:
        config["context_features"] = 10
    config.update(overrides)
    torch.manual_seed(seed)
    net = build(model, config)
    res = fit(net, labelled(x, y, conditional), steps=steps, batch_size=batch_size, lr=LR if lr is None else lr,
              seed=seed, eval_data=labelled(xv, yv, conditional), checkpoint_dir=out, progress=progress,
              eval_every=None if kind == "toy" else max(1, min(EVAL_EVERY, steps // 10)),
              schedule="cosine", batch_transform=fresh_dequantization if digits else None, keep_best=True,
              metadata=record, allow_changes=allow_changes)
    best = best_record(res.history, out)
    return {"model": model, "data": data, "steps": res.step, "best_val_nll_nats": best["eval_loss"],
            "best_step": best["step"]}


def evaluate(run, net, meta: dict, data: str) -> dict:
    rec = run_record(meta)
    xt, yt = load_dataset(data, "test", image=bool(rec.get("image")))
    if xt.shape[1:] != tuple(net.event_shape):
        raise ValueError(f"eval: the model expects examples of shape {net.event_shape}, "
                         f"{data} has {tuple(xt.shape[1:])}")
    ctx = one_hot(yt) if rec.get("conditional") else None
    with torch.no_grad():
        nll = metrics.negative_log_likelihood(net.log_prob(xt, ctx)).item()
    out = {"model": meta["model"], "data": data, "step": meta["step"], "test_nll_nats": nll}
    if data == "digits":
        out["bits_per_dim"] = metrics.bits_per_dim(nll, xt[0].numel(), levels=DIGITS_LEVELS)
        out["uniform_bits_per_dim"] = math.log2(DIGITS_LEVELS)
    if data in EXACT_TOYS:
        h = toy_entropy(data)
        out["true_entropy_nats"] = h
        out["gap_to_entropy_nats"] = nll - h
    return write_eval(run, out)


def sample(run, net, meta: dict, n: int, out_png, generator: torch.Generator):
    """An image grid for images, a scatter over the model's density for 2-D data; the
    samples as data for a ``.npy`` / ``.npz`` / ``.csv`` / ``.safetensors`` path
    (:func:`common.save_samples`); a class-conditional run draws sample i for class i % K
    over its data's K classes (:func:`common.class_count`)."""
    from gencore.plotting import save_density_scatter, save_image_grid

    rec = run_record(meta)
    data = rec.get("data", "")
    k = class_count(data) if rec.get("conditional") else None  # sample i: class i % k
    ctx = one_hot(torch.arange(n) % k) if k else None
    xs = net.sample(n, generator=generator, context=ctx)
    if writes_samples(out_png):
        return save_samples(xs, out_png, None if ctx is None else ctx.argmax(1))
    if data in TOYS or xs.shape[1:] == (2,):
        def density(points):
            with torch.no_grad():
                return net.log_prob(points.to(xs.dtype)).exp()

        exact = (lambda pts: toy_log_prob(data, pts).exp()) if data in EXACT_TOYS else None
        return save_density_scatter(xs, out_png, density=density, true_density=exact,
                                    title=f"{meta['model']} on {data or '2-D data'}: {n} samples")
    shape = picture_shape(data, xs)
    title = f"{meta['model']} samples" + (f" (rows of classes 0-{k - 1})" if k else "")
    return save_image_grid(xs, out_png, nrow=k, title=title, shape=shape)


_COMMON = dict(family="flow", datasets=(*TOYS, "digits"), user_data=True, batch_size=256,
               default_steps=default_steps, train=train, evaluate=evaluate, sample=sample)
register(ModelSpec(name="nice", summary="NICE: additive couplings", options=("couplings", "hidden", "conditional"),
                   **_COMMON))
register(ModelSpec(name="realnvp", summary="RealNVP: affine couplings (multi-scale with --image)",
                   options=("couplings", "hidden", "conditional", "image"), **_COMMON))
register(ModelSpec(name="glow", summary="Glow: ActNorm, invertible 1x1 convolutions, affine couplings",
                   options=("couplings", "hidden", "conditional", "image"), **_COMMON))
register(ModelSpec(name="nsf", summary="Neural spline flow: rational-quadratic spline couplings, or the "
                                      "autoregressive (MADE) form (vectors)",
                   options=("couplings", "hidden", "conditional", "autoregressive"), **_COMMON))
