"""What every model family's run shares: the run record, data kinds, the one fresh
dequantization and the one one-hot, eval.json."""

from __future__ import annotations

import json
import math
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


def steps_for(spec, steps: int | None, kind: str, options: dict) -> int:
    """The steps to train: ``steps``, or, when it is None (no ``--steps`` for your own
    vectors, whose default depends on their values: :func:`data_kind`), the model's default
    for ``kind``."""
    return spec.default_steps(kind, options) if steps is None else steps


def data_fingerprint(data: str) -> str | None:
    """The sha256 of your own data (:attr:`gencore.data.files.UserData.sha256`: of each file
    the loader reads, its relative path, size and the sha256 of its contents), recorded with
    a run so that resuming it on data whose contents changed under the same path is refused
    like any other change of data; None for an embedded dataset. Inside
    :func:`gencore.data.files.read_once` (where the runs load their splits) it is the
    fingerprint of the very bytes the splits were decoded from."""
    from gencore.data.files import read_data

    return read_data(data).sha256 if is_user_data(data) else None


def run_metadata(data: str, out, **fields) -> dict:
    """What a run records about itself (``extra["run"]``): the dataset, its fingerprint if it
    is your own data (:func:`data_fingerprint`), and the given fields. A run folder whose
    checkpoint predates fingerprints keeps resuming without one."""
    from gencore.train import MANIFEST, CheckpointError, _read_meta

    record = {"data": data, **fields}
    fingerprint = data_fingerprint(data)
    if fingerprint is not None:
        record["data_sha256"] = fingerprint
        manifest = Path(out) / MANIFEST
        try:
            saved = run_record(_read_meta(Path(out))) if manifest.exists() else None
        except CheckpointError:
            saved = None  # (fit reports the damage)
        if saved is not None and saved.get("data") == data and "data_sha256" not in saved:
            del record["data_sha256"]
    return record


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


def picture_shape(data: str, xs: torch.Tensor) -> tuple[int, ...]:
    """The ``(C, H, W)`` of an image grid of samples ``xs`` of a run on ``data``: the samples'
    own for images, 8 x 8 for the digits' vectors, the images' of a PNG folder (or image
    array) that a model without ``--image`` learned as flat vectors; samples of your own
    vectors (other than 2-D, which are drawn as a scatter) have no picture: a clear error
    rather than an image grid of the wrong shape."""
    if xs.dim() == 4:
        return tuple(xs.shape[1:])
    if not is_user_data(data):
        return (1, 8, 8)
    from gencore.data.files import example_shape

    shape, image = example_shape(data)  # a PNG folder: its first image, not the whole folder
    if image and math.prod(shape) == xs.shape[1]:
        return shape
    raise ValueError(f"sample: samples of {xs.shape[1]}-D vectors have no picture: {data} holds vectors, not images "
                     "(2-D data is drawn as a scatter, images as a grid); write them as data instead: --out "
                     "samples.npy, .npz, .csv or .safetensors")


#: ``sample --out`` suffixes that write the samples as data instead of a picture: the
#: formats :func:`gencore.data.load_dataset` reads.
SAMPLE_FORMATS = (".npy", ".npz", ".csv", ".safetensors")


def writes_samples(out) -> bool:
    """Whether ``sample``'s output path asks for the samples as data (:data:`SAMPLE_FORMATS`)."""
    return Path(out).suffix.lower() in SAMPLE_FORMATS


def class_count(data: str) -> int:
    """The classes a class-conditional run on ``data`` draws samples for: the embedded
    datasets' 10; your own data's labels ``0..K-1`` (its largest label + 1; ``--conditional``
    takes at most :data:`N_CLASSES`), so that no sample is drawn for a class the model never
    saw."""
    if not is_user_data(data):
        return N_CLASSES
    from gencore.data import files

    if Path(data).expanduser().is_dir():  # a PNG folder: its class subfolders, without decoding an image
        classes = files._png_files(Path(data).expanduser())[2]
        return min(N_CLASSES, len(classes)) if classes else N_CLASSES
    y = files.read_data(data).y
    return N_CLASSES if y is None or not len(y) else min(N_CLASSES, int(y.max()) + 1)


def save_samples(xs: torch.Tensor, out, labels: torch.Tensor | None = None) -> Path:
    """Write samples ``(N, ...)`` (and the class each was drawn for, ``(N,)``) as data, in the
    formats :func:`gencore.data.load_dataset` reads back, streamed and atomically: ``.npy``
    the samples as float32 in the shape the model draws them (no labels); ``.npz`` and
    ``.safetensors`` arrays ``x`` and, with labels, ``y``; ``.csv`` one flattened sample per
    row under a header ``x0, x1, ...`` and, with labels, a ``label`` column, with nine
    significant digits (every float32 back exactly). The values are the model's, on the
    scale of its training data and not clipped. Missing folders are created; samples with
    NaN or infinite values are refused (nothing is written). Returns the path."""
    import numpy as np

    from gencore.train import _atomic_write

    out = Path(out)
    # contiguous: safetensors writes a strided view's buffer as it lies (a VAE's decoder means are one)
    x = np.ascontiguousarray(xs.detach().to("cpu", torch.float32).numpy())
    bad = ~np.isfinite(x.reshape(len(x), -1))
    if bad.any():
        row = int(np.flatnonzero(bad.any(1))[0])
        raise ValueError(f"sample: {int(bad.any(1).sum())} of the {len(x)} samples hold NaN or infinite values, the "
                         f"first sample {row} (has the model diverged?); nothing written to {out}")
    y = None if labels is None else labels.detach().to("cpu", torch.int64).numpy()
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    ext = out.suffix.lower()
    if ext == ".npy":
        def write(fh):
            np.save(fh, x)
    elif ext == ".npz":
        def write(fh):
            np.savez(fh, **arrays)
    elif ext == ".safetensors":
        from safetensors.numpy import save

        def write(fh):
            fh.write(save(arrays))
    elif ext == ".csv":
        flat = x.reshape(len(x), -1)
        head = [f"x{j}" for j in range(flat.shape[1])] + ([] if y is None else ["label"])
        fmt = ",".join(["%.9g"] * flat.shape[1] + ([] if y is None else ["%d"]))

        def write(fh):
            fh.write((",".join(head) + "\n").encode())
            for start in range(0, len(flat), 4096):  # blocks of rows: never the whole text at once
                block = flat[start:start + 4096]
                rows = block.tolist() if y is None else [[*r, int(c)] for r, c in zip(block.tolist(),
                                                                                      y[start:start + 4096])]
                fh.write("".join(fmt % tuple(r) + "\n" for r in rows).encode())
    else:
        raise ValueError(f"sample: --out {out}: samples are written as {', '.join(SAMPLE_FORMATS)} files or a picture")
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, write)
    return out


def model_config(defaults: dict, x: torch.Tensor, image: bool, **overrides) -> dict:
    """A model config: the defaults, the overrides that are set, and the data's feature size
    (``(C, H, W)`` for images, whose convolutional networks take one hidden width: the first
    of ``hidden``)."""
    hidden = overrides.get("hidden")
    if image and isinstance(hidden, (list, tuple)) and len(hidden) > 1:
        raise ValueError(f"train: --hidden: an image model's convolutional networks take one width, got "
                         f"{','.join(map(str, hidden))}")
    config = dict(defaults)
    config.update({k: v for k, v in overrides.items() if v is not None})
    if image and isinstance(config.get("hidden"), list):
        config["hidden"] = config["hidden"][0]
    config["features"] = list(x.shape[1:]) if image else int(x.shape[1])
    return config


def labelled(x: torch.Tensor, y: torch.Tensor | None, conditional: bool):
    """``(x, one_hot(y))`` for a conditional model, else ``x``: what ``fit`` trains on."""
    return (x, one_hot(y)) if conditional else x


def best_record(history: list[dict], out, *, last: bool = False) -> dict:
    """The record of ``fit``'s history with the lowest ``eval_loss`` (``last``: the last
    one): the run's best (final) validation number. A history without one (a checkpoint
    whose manifest lost its records) is reported naming the run folder."""
    evaluated = [h for h in history if "eval_loss" in h]
    if not evaluated:
        from gencore.train import CheckpointError

        raise CheckpointError(f"run folder {out}: the checkpoint's history holds no evaluation to report")
    return evaluated[-1] if last else min(evaluated, key=lambda h: h["eval_loss"])
