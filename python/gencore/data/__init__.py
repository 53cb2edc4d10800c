"""Embedded datasets: nothing is downloaded.

2-D toys (``8gaussians``, ``checkerboard``, ``moons``, ``rings``, ``2spirals``) are generated
from a seed; ``toy_log_prob(name, x)`` gives the exact density where one exists
(``8gaussians``, ``checkerboard``) and ``toy_entropy(name)`` the data's entropy in nats, so a
model's test NLL can be set against the best achievable.

``digits`` is scikit-learn's 8x8 handwritten digits (1797 images, shipped inside the
scikit-learn package), split 75/25 with a fixed stratified split. Pixel levels 0..16
are dequantized as ``(x + u) / 17`` with ``u ~ U[0, 1)``, so values lie in ``[0, 1)``
and a density model's NLL converts to bits/dim with
``(nll_nats + D * ln 17) / (D * ln 2)`` (a uniform model scores log2(17) = 4.09).
The test split is dequantized with a fixed seed, so evaluations are repeatable.

``digits-captions`` is the same split with a three-word caption per digit (class, stroke
mass, slant; :mod:`gencore.data.captions`): ``load_dataset("digits-captions", split)``
returns ``(x, tokens, y)``. :mod:`gencore.data.augment` holds the random views of digits
that SimCLR trains on.

Splits: ``"train"`` and ``"test"`` as above; ``"val"``, a validation split carved
reproducibly from ``"train"`` for model selection (digits: a fixed stratified 10%, 135
digits, dequantized with its own fixed seed; toys: an independent fixed draw of 5000), and
``"fit"``, ``"train"`` without ``"val"`` (digits: 1212; toys: the same as ``"train"``): fit
on ``"fit"``, select on ``"val"``, report on ``"test"``.

Your own data: ``load_dataset(PATH)`` reads a ``.npy`` / ``.npz`` / ``.csv`` /
``.safetensors`` array file or a folder of PNG images, with labels where the file has them,
and splits it into train / val / test with a fixed seed (:mod:`gencore.data.files`).
"""

from __future__ import annotations

import numpy as np
import torch

from gencore._arguments import int_in
from gencore.data.augment import (
    DEFAULT_AUGMENT,
    add_noise,
    augment_digits,
    digit_views,
    intensity_jitter,
    random_affine,
    random_erase,
    random_shift,
)
from gencore.data.captions import VOCAB, class_prompts, decode_caption, encode_caption, load_captioned_digits
from gencore.data.files import SPLITS, is_data_path, load_user_dataset, split_indices
from gencore.data.toys import EXACT as EXACT_TOYS
from gencore.data.toys import TOYS, sample_toy, toy_entropy, toy_log_prob

__all__ = ["load_dataset", "dequantize", "DATASETS", "DIGITS_LEVELS", "TOYS", "EXACT_TOYS", "toy_log_prob",
           "toy_entropy", "sample_toy", "SPLITS", "is_data_path", "split_indices"]
__all__ += ["PAIRED_DATASETS", "digit_views", "augment_digits", "random_shift", "random_affine", "intensity_jitter",
            "add_noise", "random_erase", "DEFAULT_AUGMENT", "VOCAB", "encode_caption", "decode_caption",
            "class_prompts", "load_captioned_digits"]

DIGITS_LEVELS = 17
DATASETS = ("digits",) + TOYS
# Datasets of (image, caption) pairs: load_dataset returns (x, tokens, y).
PAIRED_DATASETS = ("digits-captions",)
TOY_SIZES = {"train": 20000, "val": 5000, "test": 5000}
_SPLIT_SEED = 0
_TEST_DEQUANT_SEED = 12345
_VAL_SEED = 54321  # digits: the val split and its dequantization noise; toys: the val draw
VAL_FRACTION = 0.1  # of the train split


def _digits_split():
    """``(data, target, train_idx, test_idx, val_idx, fit_idx)``: val (a stratified 10% of
    train) and fit (the rest of train) as positions in ``train_idx``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("gencore.data: the digits dataset needs scikit-learn") from e
    d = load_digits()
    idx = np.arange(len(d.target))
    train_idx, test_idx = train_test_split(idx, test_size=0.25, stratify=d.target,
                                           random_state=_SPLIT_SEED)
    pos = np.arange(len(train_idx))
    fit_pos, val_pos = train_test_split(pos, test_size=VAL_FRACTION, stratify=d.target[train_idx],
                                        random_state=_VAL_SEED)
    return (d.data.astype(np.float64), d.target.astype(np.int64), train_idx, test_idx, np.sort(val_pos),
            np.sort(fit_pos))


def dequantize(levels: torch.Tensor, generator: torch.Generator | None = None, *,
               n_levels: int = DIGITS_LEVELS) -> torch.Tensor:
    """``(levels + u) / n_levels`` with fresh ``u ~ U[0, 1)``: integer levels to ``[0, 1)``
    (17 levels for the digits, 256 for 8-bit images of your own, :mod:`gencore.data.files`).

    Training on a new dequantization of each batch (``fit(..., batch_transform=...)``) keeps
    a density model from overfitting one fixed draw of the noise.
    """
    from gencore._arguments import check_generator, check_int

    check_int(n_levels, "dequantize: n_levels", 2)
    if not isinstance(levels, torch.Tensor) or not levels.dtype.is_floating_point:
        raise TypeError(f"dequantize: levels must be a floating tensor, got "
                        f"{levels.dtype if isinstance(levels, torch.Tensor) else type(levels).__name__}")
    if levels.device.type == "meta":
        raise ValueError("dequantize: levels is on the meta device (a shape without values)")
    check_generator(generator, "dequantize: generator")
    # u is drawn where the generator lives (without one: on the levels' device) and moved to them
    u = torch.rand(levels.shape, generator=generator, dtype=levels.dtype,
                   device=generator.device if generator is not None else levels.device)
    return (levels + u.to(levels.device)) / n_levels


def load_dataset(name, split: str = "train", seed: int = 0, *, dtype=torch.float32,
                 image: bool = False, n: int | None = None, dequantized: bool = True):
    """Load an embedded dataset, or your own data from a file or folder.

    Args:
        name: ``"digits"``, ``"digits-captions"`` (digits with caption tokens), a 2-D toy:
            ``"8gaussians"``, ``"checkerboard"``, ``"moons"``, ``"rings"``, ``"2spirals"``; or
            a path (a ``PathLike``, or a string with a ``/``, a data-file extension or naming
            something that exists): a ``.npy`` / ``.npz`` / ``.csv`` / ``.safetensors`` file or
            a folder of PNG images (formats, labels and checks: :mod:`gencore.data.files`).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"fit"``. digits: 1347 / 135 / 450 /
            1212 examples; toys: 20000 / 5000 / 5000 / 20000. ``"val"`` is carved from
            ``"train"`` with a fixed seed (digits: stratified 10%; toys: an independent fixed
            draw) and ``"fit"`` is ``"train"`` without it. Your own data: a fixed seeded split,
            test 20% and train 80% of the examples, val 10% of train, fit the rest of train.
        seed: seed of the train split's randomness (digits and 8-bit images: the
            dequantization noise; toys: the samples); ``"fit"`` uses it as ``"train"`` does.
            The val and test splits always use fixed seeds, so evaluations repeat.
        dtype: floating dtype of the returned data.
        image: digits and image data: return ``(N, C, H, W)`` images (digits: ``(N, 1, 8,
            8)``) instead of ``(N, C*H*W)`` vectors.
        n: toys only: number of samples instead of the split's default.
        dequantized: digits and 8-bit images only: False returns the integer levels (digits
            0..16, images 0..255, as floats), for training with a fresh dequantization per
            batch (:func:`dequantize`, ``n_levels`` 17 or 256).

    Returns:
        ``(x, y)``. digits: ``x`` of shape ``(N, 64)`` (or ``(N, 1, 8, 8)``) with values in
        ``[0, 1)``, ``y`` the labels ``(N,)`` (int64, 0..9). digits-captions: ``(x, tokens, y)``
        with ``tokens (N, 3)`` int64 captions (:mod:`gencore.data.captions`). toys: ``x`` of
        shape ``(N, 2)``, ``y`` None. Your own data: ``x`` ``(N, D)`` (or images as above),
        the values as stored except 8-bit pixels (PNG, ``uint8``), dequantized to ``[0, 1)``
        as ``(level + u) / 256``; ``y`` int64 labels ``(N,)``, or None when the file has none.

    Raises:
        ValueError: unknown ``name`` or ``split``, options that do not apply, or a data file
            that fails its checks (:mod:`gencore.data.files`; ``TypeError`` for non-numeric
            data, ``FileNotFoundError`` for a missing path).
    """
    from gencore.metrics._checks import check_int

    seed = check_int(seed, "load_dataset: seed", 0)
    if split not in SPLITS:
        raise ValueError(f"load_dataset: split must be 'train', 'val', 'test' or 'fit', got {split!r}")
    if name in PAIRED_DATASETS:
        if n is not None:
            raise ValueError("load_dataset: n applies to the 2-D toys; digits-captions has fixed splits")
        return load_captioned_digits(split, seed, dtype=dtype, image=image, dequantized=dequantized)
    if name not in DATASETS:
        if is_data_path(name):
            if n is not None:
                raise ValueError("load_dataset: n applies to the 2-D toys, not to a data file")
            return load_user_dataset(name, split, seed, dtype=dtype, image=image, dequantized=dequantized)
        raise ValueError(f"load_dataset: unknown dataset {name!r}; available: "
                         f"{', '.join(DATASETS + PAIRED_DATASETS)}, or the path of a data file "
                         f"(.npy, .npz, .csv, .safetensors) or of a folder of PNG images")
    if name in TOYS:
        if image:
            raise ValueError(f"load_dataset: image=True applies to digits, not to {name!r}")
        count = TOY_SIZES["train" if split == "fit" else split] if n is None else n
        if (count := int_in(count, 1)) is None:
            raise ValueError(f"load_dataset: n must be a positive int, got {n!r}")
        s = {"test": _TEST_DEQUANT_SEED, "val": _VAL_SEED}.get(split, seed)
        g = torch.Generator().manual_seed(s)
        return sample_toy(name, count, generator=g).to(dtype), None
    if n is not None:
        raise ValueError("load_dataset: n applies to the 2-D toys; digits has fixed splits")
    data, target, train_idx, test_idx, val_pos, fit_pos = _digits_split()
    if split == "test":
        idx, rng = test_idx, np.random.default_rng(_TEST_DEQUANT_SEED)
    elif split == "val":
        idx, rng = train_idx[val_pos], np.random.default_rng(_VAL_SEED)
    else:  # train, fit: one draw over train; fit takes its rows, so fit is a subset of train
        idx, rng = train_idx, np.random.default_rng(seed)
    noise = rng.random(data[idx].shape) if dequantized else 0.0
    x = (data[idx] + noise) / (DIGITS_LEVELS if dequantized else 1)
    y = target[idx]
    if split == "fit":
        x, y = x[fit_pos], y[fit_pos]
    x = torch.as_tensor(x, dtype=dtype)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return x, torch.as_tensor(y)
