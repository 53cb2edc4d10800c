"""What every model family's run shares: the run record, data kinds, the one fresh
dequantization and the one one-hot, eval.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gencore.data import PAIRED_DATASETS, TOYS, dequantize, is_data_path

N_CLASSES = 10  # the embedded digits; --conditional takes labels 0..9


def fresh_dequantization(batch, generator: torch.Generator):
    """``fit``'s ``batch_transform`` for 8-bit-level data: a new uniform dequantization of
    the first tensor of every training batch (``(levels + u) / 17``), the rest unchanged."""
    if isinstance(batch, tuple):
        return (dequantize(batch[0], generator), *batch[1:])
    return dequantize(batch, generator)


def one_hot(labels: torch.Tensor | None, *, what: str = "--conditional") -> torch.Tensor:
    """Class labels ``(N,)`` in ``0..9`` as float one-hot rows ``(N, 10)``; a clear error for a
    dataset without labels or with more classes."""
    if labels is None:
        raise ValueError(f"{what} needs a labelled dataset (digits, or a data file with labels)")
    if labels.numel() and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"{what} takes labels 0..{N_CLASSES - 1} ({N_CLASSES} classes); the data has labels "
                         f"{int(labels.min())}..{int(labels.max())}")
    return torch.nn.functional.one_hot(labels.long(), N_CLASSES).float()


def is_user_data(data: str) -> bool:
    """A path to the user's own data (not an embedded dataset's name)."""
    return data not in (*TOYS, "digits", *PAIRED_DATASETS) and is_data_path(data)


def resolve_data(data) -> str:
    """``data`` as the run records it: an embedded dataset's name, or your own data's absolute path."""
    data = str(data)
    return str(Path(data).expanduser().resolve()) if is_user_data(data) else data


def data_kind(data: str, image: bool = False, x: torch.Tensor | None = None) -> str:
    """``"toy"`` (2-D toys; your own vectors outside [0, 1]), ``"image"`` (``--image``) or
    ``"digits"`` (the digits; your own vectors in [0, 1]): which defaults apply."""
    if data in TOYS:
        return "toy"
    if image:
        return "image"
    if is_user_data(data) and x is not None and (x.min() < 0 or x.max() > 1):
        return "toy"
    return "digits"


def run_record(meta: dict) -> dict:
    """What the run layer recorded about a run (``extra["run"]`` of its checkpoint): the
    dataset and the options it was trained with."""
    extra = meta.get("extra", {})
    rec = extra.get("run")
    if not isinstance(rec, dict):  # a checkpoint written by fit directly, or an older run
        rec = {k: extra[k] for k in ("data", "conditional", "image") if k in extra}
    return rec


def write_eval(run, out: dict) -> dict:
    """Write ``run/eval.json`` (atomically: a killed eval leaves the previous one) and return ``out``."""
    from gencore.train import _atomic_write

    _atomic_write(Path(run) / "eval.json", json.dumps(out, indent=1).encode())
    return out


def check_picture(data: str, xs: torch.Tensor) -> None:
    """Samples of your own vectors (other than 2-D) have no picture: a clear error rather than
    an image grid of the wrong shape."""
    if is_user_data(data) and xs.dim() == 2 and xs.shape[1] != 2:
        raise ValueError(f"sample: samples of {xs.shape[1]}-D vectors have no picture (2-D data is drawn as a "
                         "scatter, images as a grid: train image data with --image)")


def model_config(defaults: dict, x: torch.Tensor, image: bool, **overrides) -> dict:
    """A model config: the defaults, the overrides that are set, and the data's feature size
    (``(C, H, W)`` for images, whose convolutional networks take one hidden width: the first
    of ``hidden``)."""
    config = dict(defaults)
    config.update({k: v for k, v in overrides.items() if v is not None})
    if image and isinstance(config.get("hidden"), list):
        config["hidden"] = config["hidden"][0]
    config["features"] = list(x.shape[1:]) if image else int(x.shape[1])
    return config


def labelled(x: torch.Tensor, y: torch.Tensor | None, conditional: bool):
    """``(x, one_hot(y))`` for a conditional model, else ``x``: what ``fit`` trains on."""
    return (x, one_hot(y)) if conditional else x
