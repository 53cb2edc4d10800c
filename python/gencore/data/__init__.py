"""Embedded datasets: nothing is downloaded.

``digits`` is scikit-learn's 8x8 handwritten digits (1797 images, shipped inside the
scikit-learn package), split 75/25 with a fixed stratified split. Pixel levels 0..16
are dequantized as ``(x + u) / 17`` with ``u ~ U[0, 1)``, so values lie in ``[0, 1)``
and a density model's NLL converts to bits/dim with
``(nll_nats + D * ln 17) / (D * ln 2)`` (a uniform model scores log2(17) = 4.09).
The test split is dequantized with a fixed seed, so evaluations are repeatable.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["load_dataset", "DATASETS", "DIGITS_LEVELS"]

DIGITS_LEVELS = 17
DATASETS = ("digits",)
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


def load_dataset(name: str, split: str = "train", seed: int = 0, *, dtype=torch.float32):
    """Load an embedded dataset.

    Args:
        name: ``"digits"``.
        split: ``"train"`` (1347 examples) or ``"test"`` (450 examples).
        seed: seed of the train split's dequantization noise (the test split always
            uses a fixed seed).
        dtype: floating dtype of the returned data.

    Returns:
        ``(x, y)``: ``x`` of shape ``(N, 64)`` with values in ``[0, 1)``, ``y`` the
        labels ``(N,)`` (int64, 0..9).

    Raises:
        ValueError: unknown ``name`` or ``split``.
    """
    if name not in DATASETS:
        raise ValueError(f"load_dataset: unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"load_dataset: split must be 'train' or 'test', got {split!r}")
    data, target, train_idx, test_idx = _digits_split()
    idx = train_idx if split == "train" else test_idx
    rng = np.random.default_rng(seed if split == "train" else _TEST_DEQUANT_SEED)
    x = (data[idx] + rng.random(data[idx].shape)) / DIGITS_LEVELS
    return torch.as_tensor(x, dtype=dtype), torch.as_tensor(target[idx])
