"""Sample-quality reports: 2-D samples on the toys (mode coverage, MMD^2 against held-out
points, with reference generators beside them) and samples of digits (inception-style
score, train-on-synthetic accuracy, memorization). ``gencore eval`` and the examples print
them; every number is documented in its function."""

from __future__ import annotations

import math

import torch

from gencore.metrics._checks import as_tensor, check_generator, check_int, check_nonempty
from gencore.metrics.ipm import median_bandwidth, mmd
from gencore.metrics.sample_quality import (
    _labels,
    classification_accuracy_score,
    digits_classifier,
    digits_inception_score,
    memorization_report,
)


def _load(data: str, split: str, **kw):
    from gencore.data import load_dataset  # gencore.data imports nothing of metrics; lazy all the same

    return load_dataset(data, split, **kw)


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

    x = as_tensor(samples, "samples").detach().double().cpu()
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

    check_int(n, "n", 1)
    check_generator(generator)
    return _centers8()[0] + _S8 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def ring_8gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 2)`` points uniform on the circle through the 8 centres of ``8gaussians``: a
    generator that covers every mode but has no modes (what a loose quality criterion misses)."""
    from gencore.data.toys import _R8

    check_int(n, "n", 1)
    check_generator(generator)
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
    check_int(n, "n", 2)
    x = as_tensor(samples, "samples").detach().double().cpu()
    if x.dim() != 2 or x.shape[1] != 2 or len(x) < n:
        raise ValueError(f"samples must be (N, 2) with N >= {n}, got {tuple(x.shape)}")
    held = _load(data, "test", dtype=torch.float64)[0][:n]
    h = median_bandwidth(held[: n // 2], held[n // 2:]).item()

    def scores(v):
        out = {"mmd2_vs_heldout": mmd(v[:n], held, bandwidth=h).item(),
               "mmd2_local_vs_heldout": mmd(v[:n], held, bandwidth=LOCAL_BANDWIDTH).item()}
        if data == "8gaussians":
            out.update(eight_gaussians_modes(v))
        return out

    refs = {"real_train": scores(_load(data, "train", dtype=torch.float64)[0][:n])}
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
    x = as_tensor(samples, "samples").detach().float().cpu()
    check_nonempty(x, "samples")
    x = x.reshape(len(x), -1)
    xtr, _ = _load("digits", "train")
    xt, yt = _load("digits", "test")
    is_mean, is_std = digits_inception_score(x)
    out = {"n_samples": len(x), "inception_score": is_mean.item(), "inception_score_std": is_std.item(),
           "tstr_accuracy": None, "memorization": memorization_report(x, xtr, xt)}
    if labels is not None:
        labels = _labels(labels, "labels", len(x))
        clf = digits_classifier()  # trained on first use: not under no_grad
        with torch.no_grad():
            pred = clf(x).argmax(1)
        out["classified_as_their_label"] = (pred == labels).double().mean().item()
        out["tstr_accuracy"] = classification_accuracy_score(x, labels, xt, yt)
    return out


def digits_real_reference() -> dict:
    """The same numbers for real digits: the inception-style score of the training set,
    train-on-real / test-on-real accuracy, and the memorization report of half of the
    held-out digits against the other half (what a generator that does not copy scores)."""
    xtr, ytr = _load("digits", "train")
    xt, yt = _load("digits", "test")
    half = len(xt) // 2
    return {"n_samples": len(xtr), "inception_score": digits_inception_score(xtr)[0].item(),
            "tstr_accuracy": classification_accuracy_score(xtr, ytr, xt, yt),
            "memorization": memorization_report(xt[:half], xtr, xt[half:])}


__all__ = ["eight_gaussians_modes", "collapsed_8gaussians", "ring_8gaussians", "toy_sample_report",
           "digits_sample_report", "digits_real_reference", "LOCAL_BANDWIDTH"]
