"""What the ``gencore train / eval / sample`` commands do, callable from Python too.

A run folder holds a checkpoint (``checkpoint.json`` + safetensors) whose ``extra`` records
the dataset it was trained on, so ``eval`` and ``sample`` need only the folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from gencore import metrics
from gencore.data import DIGITS_LEVELS, EXACT_TOYS, TOYS, dequantize, load_dataset, toy_entropy, toy_log_prob
from gencore.models import MODELS, build
from gencore.train import fit, load_checkpoint

FLOW_MODELS = ("nice", "realnvp", "glow")

# Defaults per (model, data kind).
DEFAULTS = {
    ("realnvp", "toy"): {"n_couplings": 8, "hidden": [128, 128]},
    ("realnvp", "digits"): {"n_couplings": 8, "hidden": [256, 256]},
    ("realnvp", "image"): {"n_couplings": 3, "hidden": 64},
    ("nice", "toy"): {"n_couplings": 4, "hidden": [128, 128]},
    ("nice", "digits"): {"n_couplings": 4, "hidden": [256, 256]},
    ("glow", "toy"): {"steps": 8, "hidden": [128, 128]},
    ("glow", "digits"): {"steps": 8, "hidden": [256, 256]},
    ("glow", "image"): {"steps": 4, "n_levels": 2, "hidden": 64},
}
# The CLI's --couplings sets this config key.
DEPTH_KEY = {"nice": "n_couplings", "realnvp": "n_couplings", "glow": "steps"}


def _kind(data: str, image: bool = False) -> str:
    return "toy" if data in TOYS else ("image" if image else "digits")


def _context(y: torch.Tensor | None, conditional: bool) -> torch.Tensor | None:
    if not conditional:
        return None
    if y is None:
        raise ValueError("--conditional needs a labelled dataset (digits)")
    return torch.nn.functional.one_hot(y, 10).float()


def train_model(model: str, data: str, *, steps: int, out, batch_size: int = 256, lr: float = 1e-3,
                seed: int = 0, conditional: bool = False, image: bool = False, progress: bool = True,
                depth: int | None = None, **model_kwargs) -> dict:
    """Train a registered model on an embedded dataset; the run folder is ``out``.

    ``image=True`` trains on digits as ``(1, 8, 8)`` images (RealNVP's and Glow's
    convolutional multi-scale architectures); ``depth`` sets the number of couplings / steps.
    """
    if model not in FLOW_MODELS:
        raise ValueError(f"train: model must be one of {', '.join(FLOW_MODELS)} (more arrive with later "
                         f"releases), got {model!r}")
    if image and (data in TOYS or model == "nice"):
        raise ValueError("train: --image applies to digits with realnvp or glow")
    digits = data not in TOYS
    # Digits train on a fresh dequantization of every batch (levels in, noise per step).
    x, y = load_dataset(data, "train", seed=seed, image=image, **({"dequantized": False} if digits else {}))
    xt, yt = load_dataset(data, "test", image=image)
    config = dict(DEFAULTS[(model, _kind(data, image))])
    if depth is not None:
        config[DEPTH_KEY[model]] = depth
    config.update({k: v for k, v in model_kwargs.items() if v is not None})
    if image and isinstance(config.get("hidden"), list):
        config["hidden"] = config["hidden"][0]
    config["features"] = list(x.shape[1:]) if image else x.shape[1]
    if conditional:
        config["context_features"] = 10
    torch.manual_seed(seed)
    net = build(model, config)
    c, ct = _context(y, conditional), _context(yt, conditional)
    train_data = (x, c) if conditional else x
    eval_data = (xt, ct) if conditional else xt
    def fresh_dequantization(batch, g):
        if isinstance(batch, tuple):
            return (dequantize(batch[0], g), *batch[1:])
        return dequantize(batch, g)

    res = fit(net, train_data, steps=steps, batch_size=batch_size, lr=lr, seed=seed, eval_data=eval_data,
              checkpoint_dir=out, progress=progress, schedule="cosine",
              batch_transform=fresh_dequantization if digits else None)
    # Record what eval/sample need next to the checkpoint.
    meta_path = Path(out) / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["extra"].update({"data": data, "conditional": conditional, "image": image})
    meta_path.write_text(json.dumps(meta, indent=1))
    return {"model": model, "data": data, "steps": res.step, "final_eval_nll": res.history[-1]["eval_loss"]}


def evaluate(run, data: str | None = None) -> dict:
    """Test NLL (nats per example), bits/dim for digits, the gap to the true entropy for toys
    with an exact density. Written to ``run/eval.json`` and returned."""
    net, meta = load_checkpoint(run)
    extra = meta.get("extra", {})
    data = data or extra.get("data")
    if data is None:
        raise ValueError("eval: the checkpoint does not record its dataset; pass --data")
    net.eval()
    xt, yt = load_dataset(data, "test", image=bool(extra.get("image")))
    if xt.shape[1:] != tuple(net.event_shape):
        raise ValueError(f"eval: the model expects examples of shape {net.event_shape}, "
                         f"{data} has {tuple(xt.shape[1:])}")
    ctx = _context(yt, bool(extra.get("conditional")))
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
    Path(run, "eval.json").write_text(json.dumps(out, indent=1))
    return out


def sample(run, n: int, out_png, *, seed: int = 0) -> Path:
    """Draw ``n`` samples: an image grid for digits, a scatter over the model's density for 2-D."""
    from gencore.plotting import save_density_scatter, save_image_grid

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"sample: -n must be a positive int, got {n!r}")
    net, meta = load_checkpoint(run)
    net.eval()
    extra = meta.get("extra", {})
    g = torch.Generator().manual_seed(seed)
    ctx = None
    if extra.get("conditional"):
        labels = torch.arange(n) % 10
        ctx = _context(labels, True)
    xs = net.sample(n, generator=g, context=ctx)
    data = extra.get("data", "")
    if data in TOYS or xs.shape[1:] == (2,):
        def density(points):
            with torch.no_grad():
                return net.log_prob(points.to(xs.dtype)).exp()

        exact = (lambda pts: toy_log_prob(data, pts).exp()) if data in EXACT_TOYS else None
        return save_density_scatter(xs, out_png, density=density, true_density=exact,
                                    title=f"{meta['model']} on {data or '2-D data'}: {n} samples")
    title = f"{meta['model']} samples" + (" (rows of classes 0-9)" if ctx is not None else "")
    return save_image_grid(xs, out_png, nrow=10 if ctx is not None else None, title=title)


__all__ = ["train_model", "evaluate", "sample", "MODELS", "FLOW_MODELS"]
