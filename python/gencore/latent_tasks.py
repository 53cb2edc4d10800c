"""``gencore train / eval / sample`` for the auto-encoder line: PCA, auto-encoders and VAEs.

Run folders are the same as for the flows: a checkpoint (``checkpoint.json`` + safetensors)
whose ``extra`` records the dataset. All three work on the embedded digits (64 pixels in
[0, 1), or ``(1, 8, 8)`` images for the convolutional auto-encoder).

* ``pca``: fitted in closed form on the train split (dequantized once with the run's seed);
  eval reports the probabilistic-PCA held-out NLL (nats, bits/dim) and the reconstruction
  error; sample draws from the probabilistic-PCA Gaussian.
* ``ae``: trained by ``gencore.train.fit`` on the squared reconstruction error; eval
  reports held-out reconstruction error next to PCA's at the same latent size; sample
  shows held-out digits above their reconstructions (an auto-encoder has no prior to
  sample from).
* ``vae``: trained on a fresh dequantization of every batch of the ``"fit"`` split (1212
  digits: train without val) with ``keep_best`` selecting on the ``"val"`` split (135); eval
  reports the held-out ELBO, rate and distortion, the importance-weighted log-likelihood
  (K samples) and bits/dim; sample decodes prior draws (class rows when conditional).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from gencore import metrics
from gencore.data import DIGITS_LEVELS, dequantize, load_dataset
from gencore.models import PCA, build
from gencore.train import fit, record_run_extra, save_checkpoint

LATENT_MODELS = ("pca", "ae", "vae")
DEFAULTS = {
    "pca": {"n_components": 16},
    "ae": {"latent_dim": 8, "hidden": [256, 128]},
    "vae": {"latent_dim": 16, "hidden": [256, 256], "likelihood": "categorical"},
}


def _onehot(y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, 10).float()


def train_latent(model: str, data: str, *, steps: int, out, batch_size: int = 128, lr: float | None = None,
                 seed: int = 0, conditional: bool = False, image: bool = False, progress: bool = True,
                 latent_dim: int | None = None, hidden=None, **model_kwargs) -> dict:
    """Fit PCA or train an auto-encoder / VAE on digits; ``out`` is the run folder."""
    if model not in LATENT_MODELS:
        raise ValueError(f"train: model must be one of {', '.join(LATENT_MODELS)}, got {model!r}")
    if data != "digits":
        raise ValueError(f"train: {model} trains on --data digits, got {data!r} (data files are for the flows "
                         "and gan)")
    if conditional and model != "vae":
        raise ValueError("train: --conditional applies to vae")
    if image and model != "ae":
        raise ValueError("train: --image applies to ae (the convolutional auto-encoder)")
    config = dict(DEFAULTS[model])
    config.update({k: v for k, v in model_kwargs.items() if v is not None})
    if hidden is not None:
        config["hidden"] = list(hidden)
    if latent_dim is not None:
        config["n_components" if model == "pca" else "latent_dim"] = latent_dim
    # The VAE keeps its best evaluation (keep_best): it fits on "fit" and is selected on "val",
    # both carved from the train split, so the test split stays unseen until eval.
    fit_split, eval_split = ("fit", "val") if model == "vae" else ("train", "test")
    x_levels, y = load_dataset("digits", fit_split, dequantized=False, image=image)
    xt, yt = load_dataset("digits", eval_split, image=image)
    torch.manual_seed(seed)
    if model == "pca":
        config.pop("hidden", None)
        net = PCA(**config).fit(dequantize(x_levels, torch.Generator().manual_seed(seed)))
        save_checkpoint(out, net, step=0)
        record_run_extra(out, {"data": data, "conditional": False, "image": False})
        return {"model": model, "data": data, "n_components": net.n_components_,
                "test_nll_nats": -net.score(xt)}
    config["features"] = list(x_levels.shape[1:]) if image else x_levels.shape[1]
    if image:
        config["kind"] = "conv"
    if conditional:
        config["context_features"] = 10
    net = build(model, config)
    train = (x_levels, _onehot(y)) if conditional else x_levels
    held_out = (xt, _onehot(yt)) if conditional else xt

    def fresh_dequantization(batch, g):
        if isinstance(batch, tuple):
            return (dequantize(batch[0], g), *batch[1:])
        return dequantize(batch, g)

    res = fit(net, train, steps=steps, batch_size=batch_size, lr=2e-3 if lr is None else lr, seed=seed,
              eval_data=held_out, checkpoint_dir=out, progress=progress, schedule="cosine",
              batch_transform=fresh_dequantization, keep_best=model == "vae")
    if model == "vae":  # the checkpoint holds the best evaluation's parameters
        save_checkpoint(out, net, step=res.step, extra=json.loads((Path(out) / "checkpoint.json").read_text())["extra"])
    record_run_extra(out, {"data": data, "conditional": conditional, "image": image})
    return {"model": model, "data": data, "steps": res.step, "final_eval_loss": res.history[-1]["eval_loss"]}


@torch.no_grad()
def evaluate_latent(run, net, meta: dict, *, n_samples: int = 1000) -> dict:
    """Held-out numbers of a PCA / auto-encoder / VAE run, written to ``run/eval.json``."""
    extra = meta.get("extra", {})
    image = bool(extra.get("image"))
    xt, yt = load_dataset("digits", "test", image=image)
    name = meta["model"]
    out: dict = {"model": name, "data": "digits", "step": meta["step"]}
    if name == "pca":
        nll = -net.score(xt)
        out.update(test_nll_nats=nll, bits_per_dim=metrics.bits_per_dim(nll, 64, levels=DIGITS_LEVELS),
                   reconstruction_error=net.reconstruction_error(xt).mean().item(), n_components=net.n_components_)
    elif name == "ae":
        err = net.reconstruction_error(xt).mean().item()
        x_train = load_dataset("digits", "train")[0].reshape(-1, 64)
        pca = PCA(net.latent_dim).fit(x_train)
        out.update(reconstruction_error=err, pca_reconstruction_error=pca.reconstruction_error(xt.reshape(-1, 64)).mean().item(),
                   latent_dim=net.latent_dim)
    else:
        ctx = _onehot(yt) if extra.get("conditional") else None
        g = torch.Generator().manual_seed(0)
        rate, distortion = net.rate_distortion(xt, ctx, generator=g)
        ll = net.log_likelihood(xt, n_samples, ctx, generator=g).mean().item()
        out.update(elbo_nats=-(rate + distortion).mean().item(), rate_nats=rate.mean().item(),
                   distortion_nats=distortion.mean().item(), iw_samples=n_samples, test_nll_nats=-ll,
                   bits_per_dim=metrics.bits_per_dim(-ll, 64, levels=DIGITS_LEVELS),
                   uniform_bits_per_dim=math.log2(DIGITS_LEVELS),
                   reconstruction_error=(net.reconstruct(xt, ctx) - xt).pow(2).sum(1).mean().item())
    Path(run, "eval.json").write_text(json.dumps(out, indent=1))
    return out


@torch.no_grad()
def sample_latent(net, meta: dict, n: int, out_png, generator: torch.Generator) -> Path:
    """An image grid: model samples (pca, vae) or held-out digits over reconstructions (ae)."""
    from gencore.plotting import save_image_grid

    name, extra = meta["model"], meta.get("extra", {})
    if name == "pca":
        chol = torch.linalg.cholesky(net.get_covariance().double())
        z = torch.randn(n, chol.shape[0], generator=generator, dtype=torch.float64)
        xs = (net.mean_.double() + z @ chol.T).float()
        return save_image_grid(xs, out_png, title=f"probabilistic PCA (r={net.n_components_}) samples")
    if name == "ae":
        xt, _ = load_dataset("digits", "test", image=bool(extra.get("image")))
        k = max(1, min(n, 32))
        pics = torch.cat([xt[:k].reshape(k, -1), net.reconstruct(xt[:k]).reshape(k, -1)])
        return save_image_grid(pics, out_png, nrow=k if k <= 16 else 16,
                               title="held-out digits (top rows) and their reconstructions (bottom rows)")
    ctx = _onehot(torch.arange(n) % 10) if extra.get("conditional") else None
    xs = net.sample(n, generator=generator, context=ctx)
    title = "VAE samples (decoder means)" + (" (classes 0-9 by column)" if ctx is not None else "")
    return save_image_grid(xs, out_png, nrow=10 if ctx is not None else None, title=title)


__all__ = ["LATENT_MODELS", "train_latent", "evaluate_latent", "sample_latent"]
