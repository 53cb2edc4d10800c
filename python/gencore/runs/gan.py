"""Runs of the GAN (:class:`gencore.models.GAN`): the two-player game on the toys, the digits
and your own data, with the lecture's sample-quality reports (:mod:`gencore.metrics.reports`)
and figures (:mod:`gencore.plotting`).

Training fits the ``"fit"`` split; every evaluation records the critic's IPM estimate
``E_p f - E_q f`` on the ``"val"`` split (``eval_loss``), and for 2-D data 1000 samples per
evaluation in ``snapshots.safetensors``. ``evaluate`` compares samples with the ``"test"``
split.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gencore import metrics
from gencore.data import TOYS, load_dataset
from gencore.data.files import read_once
from gencore.models import build
from gencore.runs.common import (
    best_record,
    class_count,
    data_kind,
    fresh_dequantization,
    is_user_data,
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

# Measured while building the GAN (CPU, a few thousand steps): on 8gaussians both the
# non-saturating loss and WGAN-GP with a small gradient-penalty weight (0.1, as in Gulrajani
# et al.'s toy experiments; with 10 the samples kept oscillating between the modes) reach
# high-quality samples; on digits the non-saturating MLP pair's discriminator won the game
# (samples of one class) while WGAN-GP learned every class.
DEFAULTS = {
    "toy": {"loss": "non_saturating", "latent_dim": 8, "hidden": [256, 256, 256], "gp_weight": 0.1},
    "digits": {"loss": "wasserstein_gp", "latent_dim": 32, "hidden": [256, 256], "output": "sigmoid"},
    "image": {"loss": "wasserstein_gp", "latent_dim": 32, "hidden": 32, "output": "sigmoid", "arch": "conv"},
}
#: Adam learning rate of the generator (the discriminator's is lr * lr_ratio), per data kind.
LR = {"toy": 1e-3, "digits": 5e-4, "image": 5e-4}
STEPS = {"toy": 3000, "digits": 3000, "image": 3000}
SNAPSHOTS = "snapshots.safetensors"


def default_steps(kind: str, options: dict) -> int:
    return STEPS[kind]


def train(spec, data: str, out, *, steps: int, batch_size: int, lr: float | None, seed: int, progress: bool,
          allow_changes: bool, overrides: dict, conditional: bool = False, image: bool = False, hidden=None, ema=None,
          **gan_options) -> dict:
    """Defaults per data kind in :data:`DEFAULTS` (options override them: ``loss``,
    ``n_critic`` (5 for ``"wasserstein_gp"`` unless given), ``latent_dim``, ``hidden``,
    ``gp_weight``, ``r1_weight``, ``spectral_norm``, ``ema``); digits train on a fresh
    dequantization of every batch; ``conditional`` makes a class-conditional GAN."""
    from safetensors.torch import load_file, save

    from gencore.metrics.reports import eight_gaussians_modes
    from gencore.train import _atomic_write

    if data in TOYS and (conditional or image):
        raise ValueError("train: --conditional and --image apply to labelled or image data, not to the 2-D toys")
    digits = data == "digits"  # your own data: as load_dataset returns it
    with read_once():  # your own data: one read for both splits and the fingerprint
        x, y = load_dataset(data, "fit", seed=seed, image=image, **({"dequantized": False} if digits else {}))
        xv, yv = load_dataset(data, "val", image=image)
        record = run_metadata(data, out, conditional=conditional, image=image)
    kind = data_kind(data, image, x)
    steps = steps_for(spec, steps, kind, {"conditional": conditional, "image": image, "hidden": hidden, "ema": ema,
                                          **gan_options})
    if conditional:
        one_hot(y)  # labels present and 0..9
    config = model_config(DEFAULTS[kind], x, image, hidden=hidden, ema_decay=ema, **gan_options)
    if config.get("loss") == "wasserstein_gp" and gan_options.get("n_critic") is None:
        config["n_critic"] = 5
    if conditional:
        config["n_classes"] = 10
    config.update(overrides)
    torch.manual_seed(seed)
    net = build("gan", config)
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
        _atomic_write(snap_path, save(snaps))

    res = fit(net, (x, y) if conditional else x, steps=steps, batch_size=batch_size,
              lr=LR[kind] if lr is None else lr, seed=seed, eval_data=(xv, yv) if conditional else xv,
              checkpoint_dir=out, progress=progress, batch_transform=fresh_dequantization if digits else None,
              callback=snapshot, metadata=record,
              allow_changes=allow_changes)
    last = best_record(res.history, out, last=True)
    return {"model": "gan", "data": data, "steps": res.step, "loss": net.loss_kind,
            "final_val_ipm": last.get("eval_loss"), "final_train_ipm": last.get("train_ipm")}


def evaluate(run, net, meta: dict, data: str) -> dict:
    """:func:`gencore.metrics.toy_sample_report` (2000 samples) on 2-D toys, MMD^2 to the
    test split on your own data, or :func:`gencore.metrics.digits_sample_report` (1000
    samples, 100 per class when conditional) with :func:`gencore.metrics.digits_real_reference`
    beside it on digits; plus the last IPM estimates."""
    g = torch.Generator().manual_seed(0)
    if data in TOYS:
        if net.event_shape != (2,):
            raise ValueError(f"eval: the GAN generates {net.event_shape}, {data} is 2-D")
        rep = metrics.toy_sample_report(net.sample(2000, generator=g), data)
    elif is_user_data(data):
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
        rep = metrics.digits_sample_report(net.sample(1000, labels=labels, generator=g), labels)
        rep["real_reference"] = metrics.digits_real_reference()
    hist = meta.get("extra", {}).get("history", [])
    out = {"model": meta["model"], "data": data, "step": meta["step"], "loss": net.loss_kind,
           "val_ipm": hist[-1].get("eval_loss") if hist else None,
           "train_ipm": hist[-1].get("train_ipm") if hist else None, **rep}
    return write_eval(run, out)


def sample(run, net, meta: dict, n: int, out_png, generator: torch.Generator) -> Path:
    """A scatter over held-out data for 2-D, else an image grid (for a class-conditional GAN,
    label ``i % K`` for sample i over the data's K classes: columns of classes); the samples
    as data for a ``.npy`` / ``.npz`` / ``.csv`` / ``.safetensors`` path
    (:func:`common.save_samples`)."""
    from gencore.plotting import save_image_grid, save_scatter_over_data

    data = run_record(meta).get("data", "")
    k = min(net.n_classes, class_count(data)) if net.n_classes else None  # sample i: class i % k
    labels = torch.arange(n) % k if k else None
    xs = net.sample(n, labels=labels, generator=generator)
    if writes_samples(out_png):
        return save_samples(xs, out_png, labels)
    if xs.shape[1:] == (2,):
        ref = load_dataset(data, "test")[0] if data in TOYS else None
        return save_scatter_over_data(xs, out_png, data=ref,
                                      title=f"GAN ({net.loss_kind}) on {data or '2-D data'}: {n} samples")
    shape = picture_shape(data, xs)
    title = "GAN samples" + (f" (rows of classes 0-{k - 1})" if k else "")
    return save_image_grid(xs, out_png, nrow=k, title=title, shape=shape)


def figures(run, meta: dict, out_png) -> list[Path]:
    """``<stem>-ipm.png`` (the critic's IPM estimate against steps) and, for 2-D data,
    ``<stem>-snapshots.png`` (samples over training), beside ``out_png``."""
    from safetensors.torch import load_file

    from gencore.plotting import save_ipm_history, save_snapshots

    stem = Path(out_png).with_suffix("")
    paths = [save_ipm_history({f"GAN ({meta['config'].get('loss')})": meta["extra"].get("history", [])},
                              f"{stem}-ipm.png")]
    snap = Path(run, SNAPSHOTS)
    if snap.exists():
        snaps = {int(k.split("_")[1]): v for k, v in load_file(str(snap)).items()}
        data = run_record(meta).get("data", "")
        ref = load_dataset(data, "test")[0] if data in TOYS else None
        paths.append(save_snapshots(snaps, f"{stem}-snapshots.png", data=ref))
    return paths


register(ModelSpec(name="gan", family="gan", summary="GAN: the two-player game (non-saturating, WGAN-GP, hinge)",
                   datasets=(*TOYS, "digits"), user_data=True,
                   options=("hidden", "latent_dim", "conditional", "image", "loss", "n_critic", "gp_weight",
                            "r1_weight", "spectral_norm", "ema"),
                   batch_size=256, default_steps=default_steps, train=train, evaluate=evaluate, sample=sample,
                   figures=figures))
