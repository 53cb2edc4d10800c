"""Sample quality without downloads: inception-style score, train-on-synthetic accuracy and
a memorization report, served by a small digits classifier that gencore trains on the fly
(about a second on a CPU) and caches for the process.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from gencore._arguments import to_tensor
from gencore.metrics._checks import as_tensor, check_device, check_int, check_number, check_real, check_samples

__all__ = [
    "inception_score",
    "classification_accuracy_score",
    "memorization_report",
    "digits_classifier",
    "digits_inception_score",
    "train_classifier",
]


# Rows that are probabilities rounded to a few decimals sum to 1 within about this much;
# logits almost never lie in [0, 1] with every row summing to 1 this closely.
_ROUNDED_PROBABILITY_TOL = 0.05


def _probability_tolerance(dtype: torch.dtype, k: int) -> float:
    """How far from 1 a row of ``k`` probabilities stored in ``dtype`` may sum from rounding
    alone: ``2 sqrt(k)`` units of the dtype's epsilon (float16: 6e-3 for k = 10; float32:
    1e-6 floor)."""
    return max(1e-6, 2 * math.sqrt(k) * torch.finfo(dtype).eps)


def inception_score(logits_or_probs, splits: int = 10, *, from_logits: bool | None = None):
    """Inception score ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y) = E_x p(y|x)`` per split.

    High when each sample is classified confidently (low-entropy ``p(y|x)``) and the classes
    are used evenly (high-entropy ``p(y)``); between 1 and the number of classes K. It does
    not see within-class diversity, nor memorization: a generator that returns K training
    images scores the maximum.

    Args:
        logits_or_probs: ``(N, K)`` class logits or probabilities.
        splits: number of disjoint splits (``1 <= splits <= N``); the score is computed on each.
        from_logits: True for logits; False for probabilities (non-negative rows summing to
            1 within 0.05, e.g. rounded to a few decimals; each row is renormalised); None
            (the default) decides from the values: entries in ``[0, 1]`` with every row
            summing to 1 within the rounding of the input's dtype (``2 sqrt(K)`` machine
            epsilons: float16 and bfloat16 probabilities included) are probabilities; rows
            in ``[0, 1]`` summing to 1 only within 0.05 (rounded probabilities?) are
            ambiguous and raise ``ValueError`` asking for ``from_logits``; anything else is logits.

    Returns:
        ``(mean, std)`` over the splits, as 0-d tensors (float64).
    """
    t = as_tensor(logits_or_probs, "logits_or_probs")
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] < 2:
        raise ValueError(f"logits_or_probs must be (N, K) with N >= 1, K >= 2, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("logits_or_probs contains NaN or infinite values")
    check_int(splits, "splits")
    if not 1 <= splits <= t.shape[0]:
        raise ValueError(f"splits must be an int in [1, N={t.shape[0]}], got {splits!r}")
    if from_logits is not None and not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be True, False or None, got {type(from_logits).__name__}")
    tol = _probability_tolerance(t.dtype, t.shape[1])
    in_dtype = t.dtype
    t = t.double()
    deviation = (t.sum(1) - 1).abs().max().item()
    if from_logits is None:
        in_unit = bool(((t >= 0) & (t <= 1)).all())
        if in_unit and tol < deviation <= _ROUNDED_PROBABILITY_TOL:
            raise ValueError(
                f"logits_or_probs is ambiguous: its entries lie in [0, 1] and its rows sum to 1 only to "
                f"within {deviation:.3g}, more than the rounding of {in_dtype} explains ({tol:.2g}): pass "
                f"from_logits=False to read them as probabilities (rows renormalised) or from_logits=True")
        from_logits = not (in_unit and deviation <= tol)
    if from_logits:
        log_p = torch.log_softmax(t, dim=1)
    else:
        if (t < 0).any() or deviation > max(tol, _ROUNDED_PROBABILITY_TOL):
            raise ValueError(f"probabilities must be non-negative rows summing to 1 (within "
                             f"{max(tol, _ROUNDED_PROBABILITY_TOL):.2g}); found a row sum off by {deviation:.3g}"
                             + ("" if not (t < 0).any() else " and negative entries"))
        t = t / t.sum(1, keepdim=True)
        log_p = torch.log(t.clamp_min(1e-300))
    scores = []
    for chunk in torch.tensor_split(log_p, splits):
        p = chunk.exp()
        log_marginal = torch.logsumexp(chunk, 0) - torch.log(torch.tensor(float(len(chunk)), dtype=t.dtype))
        kl = (p * (chunk - log_marginal)).sum(1)
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return s.mean(), (s.std(unbiased=False) if len(s) > 1 else torch.zeros((), dtype=s.dtype))


def _labels(y, name: str, n: int) -> torch.Tensor:
    """``(n,)`` non-negative integer class labels, as int64."""
    y = to_tensor(y, name, f"integer labels of shape ({n},)")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool or y.shape != (n,):
        raise ValueError(f"{name} must be integer labels of shape ({n},), got {tuple(y.shape)} {y.dtype}")
    if (y < 0).any():
        raise ValueError(f"{name} has a negative label ({y.min().item()}): labels must lie in [0, K)")
    return y.long()


def _check_training_args(steps, batch_size, lr, seed) -> None:
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        check_int(v, name)
        if v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    check_number(lr, "lr", 0.0, strict=True)
    check_int(seed, "seed")


class _Classifier(nn.Sequential):
    def __init__(self, in_features: int, n_classes: int, hidden: int = 256):
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def train_classifier(x, y, *, n_classes: int | None = None, steps: int = 600, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0) -> nn.Module:
    """Train the small MLP classifier used by the sample-quality metrics.

    Args:
        x: ``(N, D)`` features; y: ``(N,)`` integer labels in ``[0, n_classes)``.
        n_classes: number of classes K (>= 1); None: ``max(y) + 1``.
        steps, batch_size: positive ints; lr: a positive finite number; seed: an int.

    Returns:
        The classifier in eval mode, mapping ``(B, D)`` to logits ``(B, K)``.
    """
    _check_training_args(steps, batch_size, lr, seed)
    x = check_samples(as_tensor(x, "x", torch.float32), "x")
    y = _labels(y, "y", x.shape[0])
    if n_classes is not None:
        check_int(n_classes, "n_classes")
        if n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    k = int(n_classes if n_classes is not None else y.max().item() + 1)
    if (y >= k).any():
        raise ValueError(f"labels must lie in [0, {k}): y has a label {y.max().item()}")
    g = torch.Generator().manual_seed(seed)
    # enable_grad: the classifier may first be asked for inside a caller's no_grad block.
    with torch.random.fork_rng(), torch.enable_grad():
        torch.manual_seed(seed)
        model = _Classifier(x.shape[1], k)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@functools.lru_cache(maxsize=None)
def _digits_classifier_cpu() -> nn.Module:
    from gencore.data import load_dataset

    x, y = load_dataset("digits", "train")
    return train_classifier(x, y, n_classes=10)


def digits_classifier(device="cpu") -> nn.Module:
    """The digits classifier: ``(B, 64)`` dequantized pixels in ``[0, 1)`` to logits ``(B, 10)``.

    Trained on the train split of ``gencore.data.load_dataset("digits")`` the first time it
    is asked for (about a second), then cached for the process; its held-out accuracy is
    asserted by the tests (>= 95%).
    """
    device = check_device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but CUDA is not available here")
    return _digits_classifier_cpu().to(device)


def _logits(model, x, batch=4096):
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def digits_inception_score(samples, splits: int = 10):
    """Inception-style score of digit samples ``(N, 64)`` under :func:`digits_classifier` (max 10)."""
    x = check_samples(as_tensor(samples, "samples", torch.float32), "samples", check_int(splits, "splits", 1))
    if x.shape[1] != 64:
        raise ValueError(f"digit samples must have 64 features (8x8), got {x.shape[1]}")
    return inception_score(_logits(digits_classifier(x.device), x), splits, from_logits=True)


def classification_accuracy_score(train_x, train_y, test_x, test_y, *, steps: int = 600,
                                  seed: int = 0) -> float:
    """Train on one labelled sample, test on another: with generated (class-conditional)
    samples as the training set and real data as the test set, the lecture's
    train-on-synthetic / test-on-real accuracy. Uses the same classifier as the other metrics.

    Args:
        train_x: ``(N, D)``, train_y: ``(N,)`` integer labels ``>= 0`` (N >= 1).
        test_x: ``(M, D)``, test_y: ``(M,)`` integer labels ``>= 0``. The number of classes
            is ``max(train_y, test_y) + 1``: a test class never seen in training counts as wrong.
        steps, seed: as in :func:`train_classifier`.

    Returns:
        Accuracy in ``[0, 1]`` on ``(test_x, test_y)``.
    """
    _check_training_args(steps, 128, 2e-3, seed)
    trx = check_samples(as_tensor(train_x, "train_x", torch.float32), "train_x")
    tr_y = _labels(train_y, "train_y", trx.shape[0])
    tx = check_samples(as_tensor(test_x, "test_x", torch.float32), "test_x")
    ty = _labels(test_y, "test_y", tx.shape[0])
    if tx.shape[1] != trx.shape[1]:
        raise ValueError(f"test_x has {tx.shape[1]} features, train_x has {trx.shape[1]}")
    k = int(max(ty.max().item(), tr_y.max().item())) + 1
    model = train_classifier(trx, tr_y, n_classes=k, steps=steps, seed=seed)
    return (_logits(model, tx).argmax(1) == ty.to(tx.device)).double().mean().item()


def _nn_distance(a: torch.Tensor, ref: torch.Tensor, batch: int = 1024):
    out = []
    for i in range(0, len(a), batch):
        d = torch.cdist(a[i:i + batch], ref)
        out.append(d.min(1).values)
    return torch.cat(out)


def memorization_report(samples, train, heldout, *, copy_quantile: float = 0.01) -> dict:
    """Does a model copy its training set? Nearest-neighbour distances to the training set.

    Held-out data shows how far genuinely new examples from the data distribution lie from
    the training set. A sample closer to a training example than all but ``copy_quantile``
    of held-out examples is counted as a near-copy: a model that does not memorize has a
    near-copy fraction around ``copy_quantile``; one that replays its training set, near 1.

    Args:
        samples: ``(S, D)`` generated samples.
        train: ``(N, D)`` the model's training data.
        heldout: ``(H, D)`` data from the same distribution the model never saw.
        copy_quantile: in ``(0, 1)``.

    Returns:
        dict with ``sample_nn_median``, ``heldout_nn_median`` (Euclidean, data units),
        ``nn_ratio`` (sample / held-out median: < 1 means closer to the training set than new
        data is), ``copy_threshold``, ``near_copy_fraction``, ``expected_fraction``.
    """
    check_real(copy_quantile, "copy_quantile")
    if not 0 < copy_quantile < 1:
        raise ValueError(f"copy_quantile must lie in (0, 1), got {copy_quantile!r}")
    s = check_samples(as_tensor(samples, "samples"), "samples")
    tr = check_samples(as_tensor(train, "train"), "train")
    ho = check_samples(as_tensor(heldout, "heldout"), "heldout")
    if not (s.shape[1] == tr.shape[1] == ho.shape[1]):
        raise ValueError(f"samples, train and heldout must have the same dimension: "
                         f"{s.shape[1]}, {tr.shape[1]}, {ho.shape[1]}")
    dtype = torch.float64
    s, tr, ho = s.to(dtype), tr.to(dtype), ho.to(dtype)
    d_s = _nn_distance(s, tr)
    d_h = _nn_distance(ho, tr)
    thr = torch.quantile(d_h, copy_quantile)
    return {
        "sample_nn_median": d_s.median().item(),
        "heldout_nn_median": d_h.median().item(),
        "nn_ratio": (d_s.median() / d_h.median()).item(),
        "copy_threshold": thr.item(),
        "near_copy_fraction": (d_s < thr).double().mean().item(),
        "expected_fraction": copy_quantile,
    }
