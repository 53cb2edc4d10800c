"""Runs: train a registered model into a run folder, evaluate it, sample from it.

What ``gencore train / eval / sample`` and the demo do, callable from Python::

    from gencore import runs

    runs.train("realnvp", "checkerboard", "runs/ck")     # default steps and config
    runs.evaluate("runs/ck")                             # test NLL, gap to the true entropy
    runs.sample("runs/ck", 512, "ck.png")

A run folder holds a crash-safe checkpoint (:func:`gencore.train.save_checkpoint`) whose
``extra["run"]`` records the dataset and options, so ``evaluate`` and ``sample`` need only
the folder; ``eval.json`` is written beside it. The models, their datasets, options and
defaults are in the registry (:mod:`gencore.runs.registry`, :data:`REGISTRY`). Splits: every
model trains on ``"fit"``, selects (``keep_best``, PCA's size) on ``"val"``, and ``evaluate``
scores ``"test"`` once (:func:`gencore.data.load_dataset`).

Resuming: training into a folder that holds a checkpoint continues it, exactly, when the
model, data, options and training settings are the same (``steps`` may grow); otherwise it
is refused unless ``allow_changes=True`` (``--allow-changes``). A folder is locked while a
run trains into it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gencore.data.files import read_once
from gencore.runs import contrastive, flows, gan, latent, text2image, vqvae  # noqa: F401  (register the models)
from gencore.runs.common import data_kind, is_user_data, resolve_data, run_record
from gencore.runs.registry import OPTIONS, REGISTRY, ModelSpec, check_options, get, models

#: Bounds on the training-length arguments: a typo must not start a run of days.
MAX_STEPS = 10_000_000
MAX_BATCH_SIZE = 1 << 20
#: Training seeds are in [0, MAX_SEED] (the batch order multiplies the seed, in 64 bits);
#: sampling seeds in [0, MAX_SAMPLE_SEED] (a torch.Generator's range).
MAX_SEED = (1 << 32) - 1
MAX_SAMPLE_SEED = (1 << 64) - 1
#: The most images one ``sample`` call draws, ``n * candidates``.
MAX_DRAWS = 100_000


def _seed(seed, command: str) -> int:
    from gencore.metrics._checks import check_int

    return check_int(seed, f"{command}: --seed", 0, MAX_SEED if command == "train" else MAX_SAMPLE_SEED)


def _positive_int(v, name: str, bound: int) -> int:
    from gencore.metrics._checks import check_int  # the one integer validator

    return check_int(v, f"train: {name}", 1, bound)


def _check_data(spec: ModelSpec, data) -> str:
    data = str(data)
    if data in spec.datasets:
        return data
    if spec.user_data and is_user_data(data):
        return resolve_data(data)
    own = " or your own data (a .npy, .npz, .csv or .safetensors file, or a folder of PNG images)" \
        if spec.user_data else ""
    raise ValueError(f"train: {spec.name} trains on {', '.join(spec.datasets)}{own}; got --data {data}")


def train(model: str, data: str, out, *, steps: int | None = None, batch_size: int | None = None,
          lr: float | None = None, seed: int = 0, progress: bool = True, allow_changes: bool = False,
          config: dict | None = None, **options) -> dict:
    """Train ``model`` (a key of :data:`REGISTRY`) on ``data`` into run folder ``out``.

    Args:
        model: ``nice``, ``realnvp``, ``glow``, ``nsf``, ``gan``, ``pca``, ``ae``, ``vae``, ``hvae``, ``vqvae``, ``simclr``,
            ``clip``, ``text2image``.
        data: an embedded dataset the model trains on, or (flows, gan) the path of your own data.
        out: the run folder (resumed if it holds a checkpoint of the same run).
        steps: optimizer steps; default: the model's (``ModelSpec.default_steps``); pca takes none.
        batch_size: default: the model's (``ModelSpec.batch_size``).
        lr: default: the family's.
        seed: seeds the model's initialisation, the batch order and the dequantization noise.
        progress: a progress bar.
        allow_changes: resume a checkpoint trained with other settings (see the module docstring).
        config: Python only: entries of the model's config that override the defaults and the
            options (e.g. ``{"kind": "mlp"}`` for SimCLR's encoder); checked by the model.
        **options: the model's options (:data:`OPTIONS`, ``ModelSpec.options``): ``couplings``,
            ``hidden`` (a list of ints), ``latent_dim``, ``latent_dims`` (hvae), ``conditional``, ``image``,
            GAN options.

    Returns:
        A summary dict (model, data, steps, the best validation number).

    Raises:
        ValueError: an unknown model, a dataset or option that does not apply to it, bad sizes;
        :class:`gencore.train.CheckpointError` for a folder in use or a refused resume.
    """
    spec = get(model)
    seed = _seed(seed, "train")
    options = {k: v for k, v in options.items() if v is not None}
    check_options(spec, options)
    data = _check_data(spec, data)
    if "hidden" in options and not isinstance(options["hidden"], (list, tuple)):
        options["hidden"] = [options["hidden"]]  # one width; the model checks the values, build bounds them
    for key in ("conditional", "image"):
        options[key] = bool(options.get(key, False)) if key in spec.options else None
    options = {k: v for k, v in options.items() if v is not None}
    if spec.default_steps is None:
        if steps is not None:
            raise ValueError(f"train: {model} is fitted in closed form and takes no --steps")
        steps = 0
    elif steps is None:
        if not (is_user_data(data) and not options.get("image")):
            steps = spec.default_steps(data_kind(data, bool(options.get("image"))), options)
        # else None: your own vectors outside [0, 1] take the toys' defaults, so the family
        # picks the default once it has read them (common.steps_for)
    else:
        steps = _positive_int(steps, "steps", MAX_STEPS)
    batch_size = spec.batch_size if batch_size is None else _positive_int(batch_size, "batch_size", MAX_BATCH_SIZE)
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"train: config must be a dict of model arguments, got {type(config).__name__}")
    return spec.train(spec, data, out, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
                      allow_changes=allow_changes, overrides=config or {}, **options)


def load_run(run) -> tuple[torch.nn.Module, dict]:
    """The model of run folder ``run`` (the best validation state when the run kept one)
    and its checkpoint's manifest."""
    from gencore.train import _read_meta, load_checkpoint

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run} is not a run folder" + ("" if run.exists() else " (it does not exist)"))
    meta = _read_meta(run)
    model, meta = load_checkpoint(run, best="best" in meta.get("files", {}))
    model.eval()
    return model, meta


def evaluate(run, data: str | None = None) -> dict:
    """The test-split numbers of a run (per family: see :mod:`gencore.runs.flows`,
    :mod:`~gencore.runs.gan`, :mod:`~gencore.runs.latent`, :mod:`~gencore.runs.vqvae`,
    :mod:`~gencore.runs.contrastive`, :mod:`~gencore.runs.text2image`),
    written to ``run/eval.json`` and returned. ``data``: another dataset of the same shape
    (default: the one the run trained on)."""
    net, meta = load_run(run)
    spec = get(meta["model"])
    data = data or run_record(meta).get("data")
    if data is None:
        raise ValueError("eval: the checkpoint does not record its dataset; pass --data")
    from gencore.data import DATASETS, PAIRED_DATASETS

    if data in (*DATASETS, *PAIRED_DATASETS) and data not in spec.datasets:
        raise ValueError(f"eval: {spec.name} runs evaluate on {', '.join(spec.datasets)}"
                         f"{' or your own data' if spec.user_data else ''}, not {data}")
    return spec.evaluate(run, net, meta, resolve_data(data))


def sample(run, n: int, out_png, *, seed: int = 0, caption: str | None = None, candidates: int = 1) -> Path:
    """Draw ``n`` samples into a PNG (an image grid, or a scatter for 2-D data), or, for an
    ``out_png`` ending in ``.npy``, ``.npz`` or ``.csv``, into a data file that
    :func:`gencore.data.load_dataset` reads back (the samples in the training data's units and,
    for a class-conditional model, the class each was drawn for:
    :func:`gencore.runs.common.save_samples`); returns the path written. ``caption`` and
    ``candidates`` (text2image only): draw every image for this caption, each the best of
    ``candidates`` by the model's CLIP re-ranker (default: one column per class, no
    re-ranking)."""
    from gencore.metrics._checks import check_int

    check_int(n, "n")
    if n < 1:
        raise ValueError(f"sample: -n must be a positive int, got {n!r}")
    check_int(candidates, "candidates")
    if candidates < 1:
        raise ValueError(f"sample: --candidates must be a positive int, got {candidates!r}")
    if n * candidates > MAX_DRAWS:
        raise ValueError(f"sample: -n {n} times --candidates {candidates} draws {n * candidates:,} images, more than "
                         f"{MAX_DRAWS:,} (gencore.runs.MAX_DRAWS)")
    seed = _seed(seed, "sample")
    net, meta = load_run(run)
    spec = get(meta["model"])
    if spec.sample is None:
        raise ValueError(f"sample: {spec.name} learns representations and has no generator to sample from")
    if spec.name != "text2image" and (caption is not None or candidates != 1):
        raise ValueError(f"sample: --caption and --candidates apply to text2image runs, not {spec.name}")
    g = torch.Generator().manual_seed(seed)
    with read_once():  # your own data: one read for the pictures' shape and the examples drawn with them
        if spec.name == "text2image":
            return spec.sample(run, net, meta, n, out_png, g, caption=caption, candidates=candidates)
        return spec.sample(run, net, meta, n, out_png, g)


def figures(run, out_png) -> list[Path]:
    """Extra figures of a run beside ``out_png`` (a GAN's IPM curve and snapshots); others: none."""
    from gencore.train import _read_meta

    meta = _read_meta(Path(run))
    spec = get(meta["model"])
    return spec.figures(run, meta, out_png) if spec.figures is not None else []


__all__ = ["train", "evaluate", "sample", "figures", "load_run", "REGISTRY", "OPTIONS", "ModelSpec", "get",
           "models", "check_options"]
