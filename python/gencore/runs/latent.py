"""Runs of the auto-encoder line: PCA, auto-encoders and VAEs, on the digits or your own data.

Digits train on a fresh dequantization of every batch and the VAE decodes a categorical
distribution over the 17 levels; your own data (vectors, or PNG images with ``--image`` for
the auto-encoder) is used as :func:`gencore.data.load_dataset` returns it, and the VAE's
decoder is a Gaussian with a learned variance per pixel (``likelihood="gaussian_learned"``).

* ``pca``: fitted in closed form (dequantized once with the run's seed). Without
  ``--latent-dim`` the number of components is chosen by the probabilistic-PCA likelihood
  of the ``"val"`` split (PCA fitted on ``"fit"``), then PCA is refitted on ``"train"``;
  eval reports the test NLL (nats, bits/dim) and the reconstruction error; sample draws
  from the probabilistic-PCA Gaussian.
* ``ae``: trained on the squared reconstruction error of ``"fit"`` (a fresh dequantization
  of every batch), keeping the parameters with the best ``"val"`` error; eval reports the
  test reconstruction error next to PCA's at the same latent size; sample shows test digits
  above their reconstructions (an auto-encoder has no prior to sample from).
* ``vae``: the same training on the negative ELBO; eval reports the test ELBO, rate and
  distortion, the importance-weighted log-likelihood (K samples) and bits/dim; sample
  decodes prior draws (class columns when conditional).
* ``hvae``: the hierarchical VAE (:class:`gencore.models.HierarchicalVAE`, the digits only:
  its decoder is the categorical one), trained and scored as ``vae``; eval adds the KL and
  the active units of every stochastic layer (``z_1`` first).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from gencore import metrics
from gencore.data import DIGITS_LEVELS, dequantize, load_dataset
from gencore.data.files import read_once
from gencore.models import PCA, build
from gencore.runs.common import (best_record, class_count, data_kind, fresh_dequantization, labelled, one_hot,
                                 picture_shape, run_metadata, run_record, save_samples, steps_for, write_eval,
                                 writes_samples)
from gencore.runs.registry import ModelSpec, register
from gencore.train import _check_resume, _read_meta, fit, run_lock, save_checkpoint

DEFAULTS = {
    "ae": {"latent_dim": 8, "hidden": [256, 128]},
    "vae": {"latent_dim": 16, "hidden": [256, 256], "likelihood": "categorical"},
    "hvae": {"latent_dims": [16, 8], "hidden": [256, 256]},
}
#: Your own data: continuous values, so a Gaussian decoder with learned variances.
USER_VAE = {"likelihood": "gaussian_learned"}
LR = 2e-3
#: Evaluate on val (and checkpoint) at least every EVAL_EVERY steps: the VAE's best comes early.
EVAL_EVERY = 100
STEPS = {"ae": 2000, "vae": 3000, "hvae": 3000}
#: Numbers of components ``pca`` chooses from on the val split.
PCA_CANDIDATES = tuple(range(4, 61, 4))


def _load(data: str, split: str, *, seed: int = 0, image: bool = False, levels: bool = False):
    """``(x, y)`` of a split; ``levels=True`` gives the digits' integer levels (for a fresh
    dequantization per batch), your own data as stored."""
    if data == "digits" and levels:
        return load_dataset(data, split, seed=seed, image=image, dequantized=False)
    return load_dataset(data, split, seed=seed, image=image)


def _candidates(d: int) -> tuple[int, ...]:
    """PCA sizes to choose from for ``d`` features: :data:`PCA_CANDIDATES` below ``d`` (the
    digits), else up to 16 sizes spread over ``1..d-1``."""
    if d > PCA_CANDIDATES[-1]:
        return PCA_CANDIDATES
    return tuple(sorted({max(1, round(i * (d - 1) / 16)) for i in range(1, 17)})) if d > 1 else (1,)


def _train_pca(data: str, out, *, seed: int, allow_changes: bool, latent_dim: int | None) -> dict:
    g = torch.Generator().manual_seed(seed)
    chosen, scores = latent_dim, {}
    digits = data == "digits"
    with read_once():  # your own data: one read for the three splits and the fingerprint
        if latent_dim is None:
            x_fit = _load(data, "fit", seed=seed, levels=True)[0]
            xv, _ = _load(data, "val")
        x = _load(data, "train", seed=seed, levels=True)[0]
        run = run_metadata(data, out, conditional=False, image=False)
    if latent_dim is None:
        x_fit = dequantize(x_fit, g) if digits else x_fit
        scores = {k: PCA(k).fit(x_fit).score(xv) for k in _candidates(x_fit.shape[1])}
        chosen = max(scores, key=scores.get)
    x = dequantize(x, torch.Generator().manual_seed(seed)) if digits else x
    net = PCA(chosen).fit(x)
    if scores:
        run["val_log_likelihood_nats"] = {str(k): v for k, v in scores.items()}
    with run_lock(out):
        if (Path(out) / "checkpoint.json").exists():
            _check_resume(Path(out), _read_meta(Path(out)), net, {"seed": seed, "run": run}, allow_changes)
        save_checkpoint(out, net, step=0, extra={"seed": seed, "run": run})
    return {"model": "pca", "data": data, "n_components": net.n_components_,
            "chosen_on": "val" if scores else "--latent-dim"}


def train(spec, data: str, out, *, steps: int, batch_size: int, lr: float | None, seed: int, progress: bool,
          allow_changes: bool, overrides: dict, latent_dim: int | None = None, hidden: list[int] | None = None,
          conditional: bool = False, image: bool = False, latent_dims: list[int] | None = None) -> dict:
    model = spec.name
    if model == "pca":
        if overrides:
            raise ValueError(f"train: pca takes no config overrides, got {sorted(overrides)}")
        return _train_pca(data, out, seed=seed, allow_changes=allow_changes, latent_dim=latent_dim)
    digits = data == "digits"
    config = dict(DEFAULTS[model])
    if model == "vae" and not digits:
        config.update(USER_VAE)
    config.update({k: v for k, v in {"hidden": hidden, "latent_dim": latent_dim, "latent_dims": latent_dims}.items()
                   if v is not None})
    # Fit on "fit", select on "val" (both carved from "train"): the test split stays unseen
    # until eval.
    with read_once():  # your own data: one read for both splits and the fingerprint
        x_levels, y = _load(data, "fit", seed=seed, image=image, levels=True)
        xv, yv = _load(data, "val", image=image)
        record = run_metadata(data, out, conditional=conditional, image=image)
    steps = steps_for(spec, steps, data_kind(data, image, x_levels),
                      {"latent_dim": latent_dim, "hidden": hidden, "conditional": conditional, "image": image})
    config["features"] = list(x_levels.shape[1:]) if image else x_levels.shape[1]
    if image:
        config["kind"] = "conv"
    if conditional:
        config["context_features"] = 10
    config.update(overrides)
    torch.manual_seed(seed)
    net = build(model, config)
    res = fit(net, labelled(x_levels, y, conditional), steps=steps, batch_size=batch_size,
              lr=LR if lr is None else lr, seed=seed, eval_data=labelled(xv, yv, conditional), checkpoint_dir=out,
              eval_every=max(1, min(EVAL_EVERY, steps // 10)),
              progress=progress, schedule="cosine", batch_transform=fresh_dequantization if digits else None,
              keep_best=True,
              metadata=record, allow_changes=allow_changes)
    best = best_record(res.history, out)
    return {"model": model, "data": data, "steps": res.step, "best_val_loss": best["eval_loss"],
            "best_step": best["step"]}


@torch.no_grad()
def evaluate(run, net, meta: dict, data: str, *, n_samples: int = 1000) -> dict:
    rec = run_record(meta)
    image = bool(rec.get("image"))
    name = meta["model"]
    with read_once():  # your own data: one read for both splits
        xt, yt = _load(data, "test", image=image)
        x_train = _load(data, "train")[0] if name == "ae" else None  # (the PCA baseline's)
    expected = tuple(getattr(net, "event_shape", ())) or (getattr(net, "n_features_in_", xt.shape[1]),)
    if tuple(xt.shape[1:]) != expected:
        raise ValueError(f"eval: the model expects examples of shape {expected}, {data} has {tuple(xt.shape[1:])}")
    digits = data == "digits"
    out: dict = {"model": name, "data": data, "step": meta["step"]}
    d = xt[0].numel()
    if name == "pca":
        nll = -net.score(xt)
        out.update(test_nll_nats=nll, reconstruction_error=net.reconstruction_error(xt).mean().item(),
                   n_components=net.n_components_)
    elif name == "ae":
        err = net.reconstruction_error(xt).mean().item()
        pca = PCA(min(net.latent_dim, d)).fit(x_train.reshape(-1, d))
        out.update(reconstruction_error=err,
                   pca_reconstruction_error=pca.reconstruction_error(xt.reshape(-1, d)).mean().item(),
                   latent_dim=net.latent_dim)
    else:
        ctx = one_hot(yt) if rec.get("conditional") else None
        g = torch.Generator().manual_seed(0)
        if name == "hvae":  # one pass gives the rate, its layers and the distortion
            terms = net.terms(xt, generator=g)
            rate, distortion = terms["rate"], terms["distortion"]
        else:
            rate, distortion = net.rate_distortion(xt, ctx, generator=g)
        ll = net.log_likelihood(xt, n_samples, ctx, generator=g).mean().item()
        out.update(elbo_nats=-(rate + distortion).mean().item(), rate_nats=rate.mean().item(),
                   distortion_nats=distortion.mean().item(), iw_samples=n_samples, test_nll_nats=-ll,
                   reconstruction_error=(net.reconstruct(xt, ctx) - xt).pow(2).reshape(len(xt), -1).sum(1)
                   .mean().item())
        if name == "hvae":  # what each stochastic layer carries (z_1 first): collapse shows as ~0
            out.update(latent_dims=list(net.latent_dims),
                       kl_per_layer_nats=terms["kl"].mean(0).tolist(),
                       active_units=net.active_units(xt))
    if digits and "test_nll_nats" in out:
        out["bits_per_dim"] = metrics.bits_per_dim(out["test_nll_nats"], 64, levels=DIGITS_LEVELS)
        out["uniform_bits_per_dim"] = math.log2(DIGITS_LEVELS)
    return write_eval(run, out)


@torch.no_grad()
def sample(run, net, meta: dict, n: int, out_png, generator: torch.Generator) -> Path:
    """Model samples (pca, vae) or test examples over their reconstructions (ae): an image
    grid for images, a scatter for 2-D data; the samples as data for a ``.npy`` / ``.npz`` /
    ``.csv`` / ``.safetensors`` path (:func:`common.save_samples`; not for the ae, which has
    no generator)."""
    from gencore.plotting import save_image_grid, save_scatter_over_data

    name, rec = meta["model"], run_record(meta)
    data = rec.get("data", "digits")
    if name == "ae":
        if writes_samples(out_png):
            raise ValueError("sample: an auto-encoder has no generator (its picture shows held-out examples over "
                             "their reconstructions): there are no samples to write as data")
        xt, _ = _load(data, "test", image=bool(rec.get("image")))
        k = max(1, min(n, 32, len(xt)))  # (a small test split may hold fewer)
        recon = net.reconstruct(xt[:k])
        if xt[0].numel() == 2:
            return save_scatter_over_data(recon.reshape(k, 2), out_png, data=xt.reshape(len(xt), 2),
                                          title="reconstructions of held-out points (red) over the data")
        shape = picture_shape(data, recon)
        pics = torch.cat([xt[:k].reshape(k, -1), recon.reshape(k, -1)])
        return save_image_grid(pics, out_png, nrow=k if k <= 16 else 16, shape=shape,
                               title="held-out examples (top rows) and their reconstructions (bottom rows)")
    ctx = k = None
    if name == "pca":
        chol = torch.linalg.cholesky(net.get_covariance().double())
        z = torch.randn(n, chol.shape[0], generator=generator, dtype=torch.float64)
        xs = (net.mean_.double() + z @ chol.T).float()
        title = f"probabilistic PCA (r={net.n_components_}) samples"
    else:
        k = class_count(data) if rec.get("conditional") else None  # sample i: class i % k
        ctx = one_hot(torch.arange(n) % k) if k else None
        xs = net.sample(n, generator=generator, context=ctx)
        title = ("hierarchical VAE" if name == "hvae" else "VAE") + " samples (decoder means)" \
            + (f" (classes 0-{k - 1} by column)" if k else "")
    if writes_samples(out_png):
        return save_samples(xs, out_png, None if ctx is None else ctx.argmax(1))
    if xs[0].numel() == 2:
        return save_scatter_over_data(xs.reshape(n, 2), out_png, title=title)
    return save_image_grid(xs, out_png, nrow=k, title=title,
                           shape=picture_shape(data, xs))


def _spec(name: str, summary: str, options: tuple[str, ...], user_data: bool = True) -> ModelSpec:
    return register(ModelSpec(name=name, family="latent", summary=summary, datasets=("digits",), user_data=user_data,
                              options=options, batch_size=128,
                              default_steps=(lambda kind, opts: STEPS[name]) if name in STEPS else None,
                              train=train, evaluate=evaluate, sample=sample))


_spec("pca", "probabilistic PCA, the linear auto-encoder (closed form)", ("latent_dim",))
_spec("ae", "auto-encoder (MLP, or convolutional with --image)", ("latent_dim", "hidden", "image"))
_spec("vae", "VAE with a categorical decoder over the 17 pixel levels", ("latent_dim", "hidden", "conditional"))
_spec("hvae", "hierarchical VAE: stochastic layers inferred top-down against learned priors, categorical decoder",
      ("latent_dims", "hidden"), user_data=False)
