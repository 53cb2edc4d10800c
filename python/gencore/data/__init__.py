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
"""

from __future__ import annotations

import numpy as np
import torch

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
from gencore.data.toys import EXACT as EXACT_TOYS
from gencore.data.toys import TOYS, sample_toy, toy_entropy, toy_log_prob

__all__ = ["load_dataset", "dequantize", "DATASETS", "DIGITS_LEVELS", "TOYS", "EXACT_TOYS", "toy_log_prob",
           "toy_entropy", "sample_toy"]
__all__ += ["PAIRED_DATASETS", "digit_views", "augment_digits", "random_shift", "random_affine", "intensity_jitter",
            "add_noise", "random_erase", "DEFAULT_AUGMENT", "VOCAB", "encode_caption", "decode_caption",
            "class_prompts", "load_captioned_digits"]

DIGITS_LEVELS = 17
DATASETS = ("digits",) + TOYS
# Datasets of (image, caption) pairs: load_dataset returns (x, tokens, y).
PAIRED_DATASETS = ("digits-captions",)
TOY_SIZES = {"train": 20000, "test": 5000}
_SPLIT_SEED = 0
_TEST_DEQUANT_SEED = 12345


def _digits_split():
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("gencore.data: the digits dataset needs scikit-learn") from e
    d = load_digits()
    idx = np.arange(len(d.target))
    train_idx, test_idx = train_test_split(idx, test_size=0.25, stratify=d.target,
                                           random_state=_SPLIT_SEED)
    return d.data.astype(np.float64), d.target.astype(np.int64), train_idx, test_idx


def dequantize(levels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(levels + u) / 17`` with fresh ``u ~ U[0, 1)``: integer digit levels to ``[0, 1)``.

    Training on a new dequantization of each batch (``fit(..., batch_transform=...)``) keeps
    a density model from overfitting one fixed draw of the noise.
    """
    return (levels + torch.rand(levels.shape, generator=generator, dtype=levels.dtype)) / DIGITS_LEVELS


def load_dataset(name: str, split: str = "train", seed: int = 0, *, dtype=torch.float32,
                 image: bool = False, n: int | None = None, dequantized: bool = True):
    """Load an embedded dataset.

    Args:
        name: ``"digits"``, ``"digits-captions"`` (digits with caption tokens) or a 2-D toy:
            ``"8gaussians"``, ``"checkerboard"``, ``"moons"``, ``"rings"``, ``"2spirals"``.
        split: ``"train"`` or ``"test"``. digits: 1347 / 450 examples; toys: 20000 / 5000.
        seed: seed of the train split's randomness (digits: the dequantization noise; toys:
            the samples). The test split always uses a fixed seed, so evaluations repeat.
        dtype: floating dtype of the returned data.
        image: digits only: return ``(N, 1, 8, 8)`` images instead of ``(N, 64)`` vectors.
        n: toys only: number of samples instead of the split's default.
        dequantized: digits only: False returns the integer levels 0..16 (as floats), for
            training with a fresh dequantization per batch (:func:`dequantize`).

    Returns:
        ``(x, y)``. digits: ``x`` of shape ``(N, 64)`` (or ``(N, 1, 8, 8)``) with values in
        ``[0, 1)``, ``y`` the labels ``(N,)`` (int64, 0..9). digits-captions: ``(x, tokens, y)``
        with ``tokens (N, 3)`` int64 captions (:mod:`gencore.data.captions`). toys: ``x`` of
        shape ``(N, 2)``, ``y`` None.

    Raises:
        ValueError: unknown ``name`` or ``split``, or options that do not apply.
    """
    if name in PAIRED_DATASETS:
        if n is not None:
            raise ValueError("load_dataset: n applies to the 2-D toys; digits-captions has fixed splits")
        if split not in ("train", "test"):
            raise ValueError(f"load_dataset: split must be 'train' or 'test', got {split!r}")
        return load_captioned_digits(split, seed, dtype=dtype, image=image, dequantized=dequantized)
    if name not in DATASETS:
        raise ValueError(f"load_dataset: unknown dataset {name!r}; available: "
                         f"{', '.join(DATASETS + PAIRED_DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"load_dataset: split must be 'train' or 'test', got {split!r}")
    if name in TOYS:
        if image:
            raise ValueError(f"load_dataset: image=True applies to digits, not to {name!r}")
        count = TOY_SIZES[split] if n is None else n
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"load_dataset: n must be a positive int, got {n!r}")
        g = torch.Generator().manual_seed(seed if split == "train" else _TEST_DEQUANT_SEED)
        return sample_toy(name, count, generator=g).to(dtype), None
    if n is not None:
        raise ValueError("load_dataset: n applies to the 2-D toys; digits has fixed splits")
    data, target, train_idx, test_idx = _digits_split()
    idx = train_idx if split == "train" else test_idx
    rng = np.random.default_rng(seed if split == "train" else _TEST_DEQUANT_SEED)
    noise = rng.random(data[idx].shape) if dequantized else 0.0
    x = torch.as_tensor((data[idx] + noise) / (DIGITS_LEVELS if dequantized else 1), dtype=dtype)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return x, torch.as_tensor(target[idx])
