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
from gencore.contrastive_tasks import CONTRASTIVE_MODELS, evaluate_contrastive, train_contrastive
from gencore.data import (
    DIGITS_LEVELS,
    EXACT_TOYS,
    PAIRED_DATASETS,
    TOYS,
    dequantize,
    is_data_path,
    load_dataset,
    toy_entropy,
    toy_log_prob,
)
from gencore.models import MODELS, build
from gencore.latent_tasks import LATENT_MODELS, evaluate_latent, sample_latent, train_latent
from gencore.train import fit, load_checkpoint, record_run_extra

FLOW_MODELS = ("nice", "realnvp", "glow")
GAN_MODELS = ("gan",)

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


def _kind(data: str, image: bool = False, x: torch.Tensor | None = None) -> str:
    if data in TOYS:
        return "toy"
    if image:
        return "image"
    # Your own vectors (a path): the toys' defaults unless they lie in [0, 1] like the digits.
    if is_data_path(data) and x is not None and (x.min() < 0 or x.max() > 1):
        return "toy"
    return "digits"


def _config(defaults: dict, overrides: dict, x: torch.Tensor, image: bool) -> dict:
    """A model config: the defaults, the overrides that are set, and the data's feature size
    (``(C, H, W)`` for images, whose convolutional networks take one hidden width)."""
    config = dict(defaults)
    config.update({k: v for k, v in overrides.items() if v is not None})
    if image and isinstance(config.get("hidden"), list):
        config["hidden"] = config["hidden"][0]
    config["features"] = list(x.shape[1:]) if image else x.shape[1]
    return config


def _context(y: torch.Tensor | None, conditional: bool) -> torch.Tensor | None:
    if not conditional:
        return None
    if y is None:
        raise ValueError("--conditional needs a labelled dataset (digits, or a data file with labels)")
    if y.numel() and y.max() >= 10:
        raise ValueError(f"--conditional takes labels 0..9 (10 classes); the data has labels up to {int(y.max())}")
    return torch.nn.functional.one_hot(y, 10).float()


def train_model(model: str, data: str, *, steps: int, out, batch_size: int = 256, lr: float | None = None,
                seed: int = 0, conditional: bool = False, image: bool = False, progress: bool = True,
                depth: int | None = None, **model_kwargs) -> dict:
    """Train a registered model on an embedded dataset; the run folder is ``out``.

    ``image=True`` trains on digits as ``(1, 8, 8)`` images (RealNVP's and Glow's
    convolutional multi-scale architectures; the GAN's convolutional pair); ``depth`` sets
    the number of couplings / steps. ``lr`` defaults to 1e-3 (flows) or :data:`GAN_LR`.
    ``pca``, ``ae`` and ``vae`` go to :func:`gencore.latent_tasks.train_latent`; ``simclr`` and
    ``clip`` to :func:`gencore.contrastive_tasks.train_contrastive`. ``data`` may also be the
    path of your own data (:mod:`gencore.data.files`; flows and gan), recorded as an absolute
    path for eval and sample.
    """
    if is_data_path(data) and data not in TOYS + PAIRED_DATASETS + ("digits",):
        data = str(Path(data).expanduser().resolve())
    if model in CONTRASTIVE_MODELS:
        return train_contrastive(model, data, steps=steps, out=out, batch_size=batch_size, lr=lr, seed=seed,
                                 conditional=conditional, image=image, progress=progress, depth=depth,
                                 **model_kwargs)
    if data in PAIRED_DATASETS:
        raise ValueError(f"train: --data {data} is image-caption pairs, for clip; {model} trains on digits")
    if model in LATENT_MODELS:
        if depth is not None:
            raise ValueError(f"train: --couplings applies to flows, not to {model}")
        return train_latent(model, data, steps=steps, out=out, batch_size=batch_size, lr=lr, seed=seed,
                            conditional=conditional, image=image, progress=progress, **model_kwargs)
    if model in GAN_MODELS:
        if depth is not None:
            raise ValueError("train: --couplings applies to flows, not to gan")
        return train_gan(data, steps=steps, out=out, batch_size=batch_size, lr=lr, seed=seed,
                         conditional=conditional, image=image, progress=progress, **model_kwargs)
    lr = 1e-3 if lr is None else lr
    if model not in FLOW_MODELS:
        raise ValueError(f"train: model must be one of {', '.join(FLOW_MODELS + GAN_MODELS + LATENT_MODELS)}, "
                         f"got {model!r}")
    if image and (data in TOYS or model == "nice"):
        raise ValueError("train: --image applies to digits with realnvp or glow")
    # Digits train on a fresh dequantization of every batch (levels in, noise per step); your
    # own data as load_dataset returns it (8-bit images: one dequantization, drawn with the seed).
    digits = data == "digits"
    x, y = load_dataset(data, "train", seed=seed, image=image, **({"dequantized": False} if digits else {}))
    xt, yt = load_dataset(data, "test", image=image)
    config = _config(DEFAULTS[(model, _kind(data, image, x))], model_kwargs, x, image)
    if depth is not None:
        config[DEPTH_KEY[model]] = depth
    if conditional:
        config["context_features"] = 10
    torch.manual_seed(seed)
    net = build(model, config)
    c, ct = _context(y, conditional), _context(yt, conditional)
    train_data = (x, c) if conditional else x
    eval_data = (xt, ct) if conditional else xt
    res = fit(net, train_data, steps=steps, batch_size=batch_size, lr=lr, seed=seed, eval_data=eval_data,
              checkpoint_dir=out, progress=progress, schedule="cosine",
              batch_transform=_fresh_dequantization if digits else None)
    # Record what eval/sample need next to the checkpoint.
    record_run_extra(out, {"data": data, "conditional": conditional, "image": image})
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
    if meta["model"] in GAN_MODELS:
        return evaluate_gan(run, net, meta, data)
    if meta["model"] in LATENT_MODELS:
        return evaluate_latent(run, net, meta)
    if meta["model"] in CONTRASTIVE_MODELS:
        return evaluate_contrastive(run, net, meta)
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


def _check_picture(data: str, xs: torch.Tensor) -> None:
    """Samples of your own vectors (other than 2-D) have no picture: a clear error rather than
    an image grid of the wrong shape."""
    if data not in ("digits", *PAIRED_DATASETS) and is_data_path(data) and xs.dim() == 2:
        raise ValueError(f"sample: samples of {xs.shape[1]}-D vectors have no picture (2-D data is drawn as a "
                         "scatter, images as a grid: train image data with --image)")


def sample(run, n: int, out_png, *, seed: int = 0) -> Path:
    """Draw ``n`` samples: an image grid for digits, a scatter over the model's density for 2-D."""
    from gencore.plotting import save_density_scatter, save_image_grid

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"sample: -n must be a positive int, got {n!r}")
    net, meta = load_checkpoint(run)
    net.eval()
    extra = meta.get("extra", {})
    g = torch.Generator().manual_seed(seed)
    if meta["model"] in GAN_MODELS:
        return sample_gan(net, meta, n, out_png, g)
    if meta["model"] in LATENT_MODELS:
        return sample_latent(net, meta, n, out_png, g)
    if meta["model"] in CONTRASTIVE_MODELS:
        raise ValueError(f"sample: {meta['model']} learns representations and has no generator to sample from")
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
    _check_picture(data, xs)
    title = f"{meta['model']} samples" + (" (rows of classes 0-9)" if ctx is not None else "")
    return save_image_grid(xs, out_png, nrow=10 if ctx is not None else None, title=title)


# ---------------------------------------------------------------------------------------------
# GANs: train / eval / sample, the sample-quality reports of the lecture's GAN section and
# the figures (samples over the data, snapshots over training, the IPM estimate against steps).
# ---------------------------------------------------------------------------------------------

# Measured while building the GAN (CPU, a few thousand steps): on 8gaussians both the
# non-saturating loss and WGAN-GP with a small gradient-penalty weight (0.1, as in Gulrajani
# et al.'s toy experiments; with 10 the samples kept oscillating between the modes) reach
# high-quality samples; on digits the non-saturating MLP pair's discriminator won the game
# (samples of one class) while WGAN-GP learned every class.
GAN_DEFAULTS = {
    "toy": {"loss": "non_saturating", "latent_dim": 8, "hidden": [256, 256, 256], "gp_weight": 0.1},
    "digits": {"loss": "wasserstein_gp", "latent_dim": 32, "hidden": [256, 256], "output": "sigmoid"},
    "image": {"loss": "wasserstein_gp", "latent_dim": 32, "hidden": 32, "output": "sigmoid", "arch": "conv"},
}
# Adam learning rate of the generator (the discriminator's is lr * lr_ratio), per data kind.
GAN_LR = {"toy": 1e-3, "digits": 5e-4, "image": 5e-4}
SNAPSHOTS = "snapshots.safetensors"


def _fresh_dequantization(batch, g):
    if isinstance(batch, tuple):
        return (dequantize(batch[0], g), *batch[1:])
    return dequantize(batch, g)


def train_gan(data: str, *, steps: int, out, batch_size: int = 256, lr: float | None = None, seed: int = 0,
              conditional: bool = False, image: bool = False, progress: bool = True, **gan_kwargs) -> dict:
    """Train :class:`gencore.models.GAN` on an embedded dataset through :func:`gencore.train.fit`.

    Defaults per data kind in :data:`GAN_DEFAULTS` (``gan_kwargs`` override them: ``loss``,
    ``n_critic`` (5 for ``"wasserstein_gp"`` unless given), ``latent_dim``, ``hidden``,
    ``gp_weight``, ``r1_weight``, ``spectral_norm``, ``ema_decay``...). Digits train on a fresh
    dequantization of every batch; ``conditional`` makes a class-conditional GAN. Every
    evaluation records the critic's IPM estimate ``E_p f - E_q f`` on held-out data
    (``eval_loss``); for 2-D data 1000 samples are kept per evaluation in ``snapshots.safetensors``
    (and, on 8gaussians, the mode coverage in the history).
    """
    from safetensors.torch import load_file, save_file

    if data in TOYS and (conditional or image):
        raise ValueError("train: --conditional and --image apply to digits")
    digits = data == "digits"  # your own data: as load_dataset returns it
    x, y = load_dataset(data, "train", seed=seed, image=image, **({"dequantized": False} if digits else {}))
    xt, yt = load_dataset(data, "test", image=image)
    kind = _kind(data, image, x)
    if conditional:
        _context(y, True)  # labels present and 0..9
    config = _config(GAN_DEFAULTS[kind], gan_kwargs, x, image)
    if config.get("loss") == "wasserstein_gp" and gan_kwargs.get("n_critic") is None:
        config["n_critic"] = 5
    if conditional:
        config["n_classes"] = 10
    torch.manual_seed(seed)
    net = build("gan", config)
    lr = GAN_LR[kind] if lr is None else lr
    snap_path = Path(out) / SNAPSHOTS

    def snapshot(model, rec):
        if model.event_shape != (2,):
            return
        labels = torch.arange(1000) % model.n_classes if model.n_classes else None  # conditional 2-D data
        xs = model.sample(1000, labels=labels, generator=torch.Generator().manual_seed(seed))
        if data == "8gaussians":
            cov = eight_gaussians_modes(xs)
            rec.update(modes_covered=cov["modes_covered"], high_quality_fraction=cov["high_quality_fraction"])
        snaps = load_file(str(snap_path)) if snap_path.exists() else {}
        snaps[f"step_{rec['step']}"] = xs.contiguous()
        snap_path.parent.mkdir(parents=True, exist_ok=True)
        save_file(snaps, str(snap_path))

    res = fit(net, (x, y) if conditional else x, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
              eval_data=(xt, yt) if conditional else xt, checkpoint_dir=out, progress=progress,
              batch_transform=_fresh_dequantization if digits else None, callback=snapshot)
    record_run_extra(out, {"data": data, "conditional": conditional, "image": image})
    last = res.history[-1]
    return {"model": "gan", "data": data, "steps": res.step, "loss": net.loss_kind,
            "final_eval_ipm": last.get("eval_loss"), "final_train_ipm": last.get("train_ipm")}


def eight_gaussians_modes(samples, *, n_sigma: float = 3.0, min_fraction: float = 0.01) -> dict:
    """Mode coverage of 2-D samples on ``8gaussians``.

    Each sample goes to its nearest of the 8 centres; it is a high-quality sample when it
    lies within ``n_sigma`` standard deviations of that centre (the components' std is
    ``1 / (2 sqrt 2)``, so 3 std = 1.06); a mode is covered when its high-quality samples are
    at least ``min_fraction`` of all samples (a fair share is 1/8). Real data scores 8 modes
    and ``1 - exp(-n_sigma^2 / 2)`` (98.9% for 3 std) high-quality samples.

    Returns:
        ``{"modes_covered": 0..8, "high_quality_fraction", "mode_fractions": [8 floats]}``
        (the fraction of all samples that are high-quality samples of each mode).
    """
    from gencore.data.toys import _S8, _centers8

    x = torch.as_tensor(samples).detach().double().cpu()
    if x.dim() != 2 or x.shape[1] != 2 or len(x) == 0:
        raise ValueError(f"samples must be (N, 2) with N >= 1, got {tuple(x.shape)}")
    d, k = torch.cdist(x, _centers8()).min(1)
    good = d < n_sigma * _S8
    frac = torch.bincount(k[good], minlength=8).double() / len(x)
    return {"modes_covered": int((frac >= min_fraction).sum()), "high_quality_fraction": good.double().mean().item(),
            "mode_fractions": frac.tolist()}


def collapsed_8gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 2)`` samples of a generator that collapsed onto one mode of ``8gaussians``: all
    from the first component, exactly (the best a one-mode generator can do)."""
    from gencore.data.toys import _S8, _centers8

    return _centers8()[0] + _S8 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def ring_8gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 2)`` points uniform on the circle through the 8 centres of ``8gaussians``: a
    generator that covers every mode but has no modes (what a loose quality criterion misses)."""
    from gencore.data.toys import _R8

    a = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi
    return torch.stack([a.cos(), a.sin()], 1) * _R8


LOCAL_BANDWIDTH = 0.5  # data units; the 8gaussians components have std 0.35


def toy_sample_report(samples, data: str, *, n: int = 2000, seed: int = 0) -> dict:
    """Sample quality of 2-D samples on a toy, with reference generators beside them.

    MMD^2 (RBF kernel, unbiased) of ``n`` samples to ``n`` held-out points at two fixed
    bandwidths: the median distance within held-out data (``mmd2_vs_heldout``; the global
    shape: about 4 on 8gaussians, where it cannot tell the 8 modes from a ring through them)
    and :data:`LOCAL_BANDWIDTH` (``mmd2_local_vs_heldout``; within-mode detail). On
    ``8gaussians`` also :func:`eight_gaussians_modes`.

    ``references``: the same numbers for ``n`` real training points (the noise floor) and, on
    8gaussians, a generator collapsed onto one mode (:func:`collapsed_8gaussians`, whose
    MMD^2 is repeated as ``mmd2_collapsed_vs_heldout``) and a uniform ring through the centres
    (:func:`ring_8gaussians`).
    """
    x = torch.as_tensor(samples).detach().double().cpu()
    if x.dim() != 2 or x.shape[1] != 2 or len(x) < n:
        raise ValueError(f"samples must be (N, 2) with N >= {n}, got {tuple(x.shape)}")
    held = load_dataset(data, "test", dtype=torch.float64)[0][:n]
    h = metrics.median_bandwidth(held[: n // 2], held[n // 2:]).item()

    def scores(v):
        out = {"mmd2_vs_heldout": metrics.mmd(v[:n], held, bandwidth=h).item(),
               "mmd2_local_vs_heldout": metrics.mmd(v[:n], held, bandwidth=LOCAL_BANDWIDTH).item()}
        if data == "8gaussians":
            out.update(eight_gaussians_modes(v))
        return out

    refs = {"real_train": scores(load_dataset(data, "train", dtype=torch.float64)[0][:n])}
    if data == "8gaussians":
        refs["collapsed_one_mode"] = scores(collapsed_8gaussians(n, torch.Generator().manual_seed(seed)))
        refs["uniform_ring"] = scores(ring_8gaussians(n, torch.Generator().manual_seed(seed)))
    out = {"n": n, "mmd_bandwidth": h, "mmd_local_bandwidth": LOCAL_BANDWIDTH, **scores(x)}
    if data == "8gaussians":
        out["mmd2_collapsed_vs_heldout"] = refs["collapsed_one_mode"]["mmd2_vs_heldout"]
    out["references"] = refs
    return out


def digits_sample_report(samples, labels=None) -> dict:
    """Sample quality on digits: the inception-style score under gencore's digits classifier
    (1 to 10), train-on-synthetic / test-on-real accuracy when the samples carry labels, and
    the memorization report (nearest-neighbour distances to the training set against those
    of held-out digits)."""
    x = torch.as_tensor(samples).detach().float().cpu()
    x = x.reshape(len(x), -1)
    xtr, _ = load_dataset("digits", "train")
    xt, yt = load_dataset("digits", "test")
    is_mean, is_std = metrics.digits_inception_score(x)
    out = {"n_samples": len(x), "inception_score": is_mean.item(), "inception_score_std": is_std.item(),
           "tstr_accuracy": None, "memorization": metrics.memorization_report(x, xtr, xt)}
    if labels is not None:
        labels = torch.as_tensor(labels)
        clf = metrics.digits_classifier()  # trained on first use: not under no_grad
        with torch.no_grad():
            pred = clf(x).argmax(1)
        out["classified_as_their_label"] = (pred == labels).double().mean().item()
        out["tstr_accuracy"] = metrics.classification_accuracy_score(x, labels, xt, yt)
    return out


def digits_real_reference() -> dict:
    """The same numbers for real digits: the inception-style score of the training set,
    train-on-real / test-on-real accuracy, and the memorization report of half of the
    held-out digits against the other half (what a generator that does not copy scores)."""
    xtr, ytr = load_dataset("digits", "train")
    xt, yt = load_dataset("digits", "test")
    half = len(xt) // 2
    return {"n_samples": len(xtr), "inception_score": metrics.digits_inception_score(xtr)[0].item(),
            "tstr_accuracy": metrics.classification_accuracy_score(xtr, ytr, xt, yt),
            "memorization": metrics.memorization_report(xt[:half], xtr, xt[half:])}


def evaluate_gan(run, net, meta: dict, data: str) -> dict:
    """``gencore eval`` for a GAN: :func:`toy_sample_report` (2000 samples) on 2-D data, or
    :func:`digits_sample_report` (1000 samples, 100 per class when conditional) with
    :func:`digits_real_reference` beside it; plus the last IPM estimates. Written to
    ``run/eval.json``."""
    g = torch.Generator().manual_seed(0)
    if data in TOYS:
        if net.event_shape != (2,):
            raise ValueError(f"eval: the GAN generates {net.event_shape}, {data} is 2-D")
        rep = toy_sample_report(net.sample(2000, generator=g), data)
    elif is_data_path(data) and data not in ("digits", *PAIRED_DATASETS):
        # Your own data: MMD^2 (RBF kernel, median bandwidth, unbiased) to its test split.
        held = load_dataset(data, "test", image=len(net.event_shape) > 1, dtype=torch.float64)[0]
        if held.shape[1:] != tuple(net.event_shape):
            raise ValueError(f"eval: the GAN generates {net.event_shape}, {data} has {tuple(held.shape[1:])}")
        n = min(2000, len(held))
        labels = torch.arange(n) % net.n_classes if net.n_classes else None
        xs = net.sample(n, labels=labels, generator=g).detach().double().reshape(n, -1)
        rep = {"n": n, "mmd2_vs_heldout": metrics.mmd(xs, held.reshape(len(held), -1)[:n]).item()}
    else:
        if net.event_shape not in ((64,), (1, 8, 8)):
            raise ValueError(f"eval: the GAN generates {net.event_shape}, digits are (64,) or (1, 8, 8)")
        labels = torch.arange(1000) % net.n_classes if net.n_classes else None
        rep = digits_sample_report(net.sample(1000, labels=labels, generator=g), labels)
        rep["real_reference"] = digits_real_reference()
    hist = meta.get("extra", {}).get("history", [])
    out = {"model": meta["model"], "data": data, "step": meta["step"], "loss": net.loss_kind,
           "eval_ipm": hist[-1].get("eval_loss") if hist else None,
           "train_ipm": hist[-1].get("train_ipm") if hist else None, **rep}
    Path(run, "eval.json").write_text(json.dumps(out, indent=1))
    return out


def sample_gan(net, meta: dict, n: int, out_png, generator: torch.Generator) -> Path:
    """A GAN's samples: a scatter over held-out data for 2-D, else an image grid (for a
    class-conditional GAN, label ``i % K`` for sample i: columns of classes)."""
    from gencore.plotting import save_image_grid

    labels = torch.arange(n) % net.n_classes if net.n_classes else None
    xs = net.sample(n, labels=labels, generator=generator)
    data = meta.get("extra", {}).get("data", "")
    if xs.shape[1:] == (2,):
        ref = load_dataset(data, "test")[0] if data in TOYS else None
        return save_scatter_over_data(xs, out_png, data=ref,
                                      title=f"GAN ({net.loss_kind}) on {data or '2-D data'}: {n} samples")
    _check_picture(data, xs)
    title = "GAN samples" + (" (rows of classes 0-9)" if labels is not None else "")
    return save_image_grid(xs, out_png, nrow=net.n_classes or None, title=title)


def training_figures(run, out_png) -> list[Path]:
    """Figures of a GAN run next to ``out_png``: ``<stem>-ipm.png`` (the critic's IPM
    estimate against steps) and, for 2-D data, ``<stem>-snapshots.png`` (samples over
    training). Other models: none."""
    from safetensors.torch import load_file

    meta = json.loads(Path(run, "checkpoint.json").read_text())
    if meta.get("model") not in GAN_MODELS:
        return []
    out_png = Path(out_png)
    stem = out_png.with_suffix("")
    paths = [save_ipm_history({f"GAN ({meta['config'].get('loss')})": meta["extra"].get("history", [])},
                              f"{stem}-ipm.png")]
    snap = Path(run, SNAPSHOTS)
    if snap.exists():
        snaps = {int(k.split("_")[1]): v for k, v in load_file(str(snap)).items()}
        data = meta["extra"].get("data", "")
        ref = load_dataset(data, "test")[0] if data in TOYS else None
        paths.append(save_snapshots(snaps, f"{stem}-snapshots.png", data=ref))
    return paths


def _scatter(ax, xs, data, extent, size=2):
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=1, c="0.75", alpha=0.5, label="held-out data")
    ax.scatter(xs[:, 0], xs[:, 1], s=size, c="tab:red", alpha=0.5, label="samples")
    ax.set_xlim(*extent)
    ax.set_ylim(*extent)
    ax.set_aspect("equal")


def _extent(*arrays):
    pts = torch.cat([torch.as_tensor(a).double().reshape(-1, 2) for a in arrays if a is not None])
    lo, hi = pts.quantile(0.002, 0).min().item(), pts.quantile(0.998, 0).max().item()
    pad = 0.1 * (hi - lo)
    return (lo - pad, hi + pad)


def save_scatter_over_data(samples, path, *, data=None, title: str | None = None) -> Path:
    """2-D samples ``(N, 2)`` (red) over data ``(M, 2)`` (grey) as a PNG."""
    from gencore.plotting import pyplot, save_figure

    xs = torch.as_tensor(samples).detach().double().cpu()
    if xs.dim() != 2 or xs.shape[1] != 2:
        raise ValueError(f"samples must be (N, 2), got {tuple(xs.shape)}")
    fig, ax = pyplot().subplots(figsize=(4.5, 4.5), dpi=110)
    _scatter(ax, xs, data, _extent(xs, data))
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def save_snapshots(snapshots: dict, path, *, data=None, max_panels: int = 6) -> Path:
    """Samples at several training steps ``{step: (N, 2)}``, one panel each (at most
    ``max_panels``, evenly spaced, the last always included)."""
    from gencore.plotting import pyplot, save_figure

    steps = sorted(snapshots)
    if not steps:
        raise ValueError("no snapshots to plot")
    if len(steps) > max_panels:
        idx = torch.linspace(0, len(steps) - 1, max_panels).round().long().tolist()
        steps = [steps[i] for i in idx]
    ext = _extent(data, *(snapshots[s] for s in steps))
    fig, axes = pyplot().subplots(1, len(steps), figsize=(2.4 * len(steps), 2.6), dpi=110, squeeze=False)
    for ax, s in zip(axes[0], steps):
        _scatter(ax, torch.as_tensor(snapshots[s]).double(), data, ext, size=1)
        ax.set_title(f"step {s}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def save_ipm_history(histories: dict, path, *, title: str | None = None) -> Path:
    """The critic's IPM estimate ``E_p f - E_q f`` against training steps, one panel per run
    ``{label: fit history}``: on held-out data at each evaluation (``eval_loss``) and the
    running mean over the training steps since the previous one (``train_ipm``)."""
    from gencore.plotting import pyplot, save_figure

    fig, axes = pyplot().subplots(1, len(histories), figsize=(4.2 * len(histories), 3.2), dpi=110, squeeze=False)
    for ax, (label, hist) in zip(axes[0], histories.items()):
        steps = [h["step"] for h in hist]
        if any("train_ipm" in h for h in hist):
            ax.plot(steps, [h.get("train_ipm", math.nan) for h in hist], "--", label="training batches")
        if any("eval_loss" in h for h in hist):
            ax.plot(steps, [h.get("eval_loss", math.nan) for h in hist], "o-", ms=3, label="held-out data")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("critic's E_p f - E_q f")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)



__all__ = ["train_model", "evaluate", "sample", "MODELS", "FLOW_MODELS", "CONTRASTIVE_MODELS"]
__all__ += ["GAN_MODELS", "train_gan", "evaluate_gan", "sample_gan", "training_figures", "eight_gaussians_modes",
            "collapsed_8gaussians", "ring_8gaussians", "toy_sample_report", "digits_sample_report",
            "digits_real_reference", "save_scatter_over_data", "save_snapshots", "save_ipm_history"]
