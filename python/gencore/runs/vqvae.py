"""Runs of the VQ-VAE (:class:`gencore.models.VQVAE`) on the digits.

``gencore train vqvae --data digits --out DIR`` trains the encoder, the codebook (EMA updates
with dead-code restarts), the categorical decoder and the autoregressive prior together on
the ``"fit"`` split (a fresh dequantization of every batch), keeping the parameters with the
best ``"val"`` bound; ``--conditional`` makes the prior class-conditional (``p(z | y)``: its
samples have labels, for train-on-samples accuracy). ``gencore eval DIR`` reports, on the
test split: the bound ``-log p(x | z_q) - log p(z_q)`` on the NLL (nats, bits/dim) and its
two terms, the reconstruction error (squared, summed over the 64 pixels, as the
auto-encoder's), the latent bits per digit and the codebook's usage (perplexity of the codes
over the test digits). ``gencore sample DIR`` decodes prior samples (class columns when
conditional).
"""

from __future__ import annotations

from pathlib import Path

import torch

from gencore import metrics
from gencore.data import DIGITS_LEVELS, load_dataset
from gencore.models import build
from gencore.runs.common import (best_record, fresh_dequantization, run_metadata, run_record, save_samples,
                                 write_eval, writes_samples)
from gencore.runs.registry import ModelSpec, register
from gencore.train import fit

STEPS = 3000
LR = 2e-3
EVAL_EVERY = 100
DEFAULT_CODES = 64


def train(spec, data: str, out, *, steps: int, batch_size: int, lr: float | None, seed: int, progress: bool,
          allow_changes: bool, overrides: dict, num_codes: int | None = None, conditional: bool = False,
          no_restart: bool = False) -> dict:
    x_levels, y = load_dataset(data, "fit", seed=seed, image=True, dequantized=False)
    xv, yv = load_dataset(data, "val", image=True)
    config = {"features": list(x_levels.shape[1:]), "num_codes": DEFAULT_CODES if num_codes is None else num_codes,
              "restart_dead_codes": not no_restart, "classes": 10 if conditional else 0}
    config.update(overrides)
    torch.manual_seed(seed)
    net = build("vqvae", config)
    fit_data, val_data = ((x_levels, y), (xv, yv)) if conditional else (x_levels, xv)
    res = fit(net, fit_data, steps=steps, batch_size=batch_size, lr=LR if lr is None else lr, seed=seed,
              eval_data=val_data, checkpoint_dir=out, eval_every=max(1, min(EVAL_EVERY, steps // 10)),
              progress=progress, schedule="cosine", batch_transform=fresh_dequantization, keep_best=True,
              metadata=run_metadata(data, out, conditional=conditional, image=True), allow_changes=allow_changes)
    best = best_record(res.history, out)
    return {"model": "vqvae", "data": data, "steps": res.step, "best_val_loss": best["eval_loss"],
            "best_step": best["step"]}


@torch.no_grad()
def evaluate(run, net, meta: dict, data: str) -> dict:
    rec = run_record(meta)
    xt, yt = load_dataset(data, "test", image=True)
    labels = yt if rec.get("conditional") else None
    net.eval()
    terms = net.terms(xt, labels)
    bound = terms["bound"].mean().item()
    out = {"model": "vqvae", "data": data, "step": meta["step"], "test_nll_bound_nats": bound,
           "distortion_nats": terms["distortion"].mean().item(), "prior_nll_nats": terms["prior_nll"].mean().item(),
           "bits_per_dim": metrics.bits_per_dim(bound, xt[0].numel(), levels=DIGITS_LEVELS),
           "reconstruction_error": (net.reconstruct(xt) - xt).pow(2).flatten(1).sum(1).mean().item(),
           "latent_bits": net.latent_bits, "num_codes": net.num_codes,
           "code_perplexity": net.code_perplexity(xt)}
    out["code_usage"] = out["code_perplexity"] / net.num_codes
    return write_eval(run, out)


@torch.no_grad()
def sample(run, net, meta: dict, n: int, out_png, generator: torch.Generator) -> Path:
    from gencore.plotting import save_image_grid

    conditional = bool(run_record(meta).get("conditional"))
    labels = torch.arange(n) % 10 if conditional else None
    xs = net.sample(n, generator=generator, labels=labels)
    if writes_samples(out_png):
        return save_samples(xs, out_png, labels)
    title = "VQ-VAE samples (prior codes, decoder means)" + (" (classes 0-9 by column)" if conditional else "")
    return save_image_grid(xs.reshape(n, -1), out_png, nrow=10 if conditional else None, title=title, shape=(8, 8))


register(ModelSpec(name="vqvae", family="latent",
                   summary="VQ-VAE: a 4 x 4 grid of codes, a categorical decoder and a transformer prior",
                   datasets=("digits",), user_data=False, options=("num_codes", "conditional", "no_restart"),
                   batch_size=128, default_steps=lambda kind, opts: STEPS, train=train, evaluate=evaluate,
                   sample=sample))
