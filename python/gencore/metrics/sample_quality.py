"""Sample quality without downloads: inception-style score, train-on-synthetic accuracy and
a memorization report, served by a small digits classifier that gencore trains on the fly
(about a second on a CPU) and caches for the process.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from gencore.metrics._checks import as_tensor, check_samples

__all__ = [
    "inception_score",
    "classification_accuracy_score",
    "memorization_report",
    "digits_classifier",
    "digits_inception_score",
    "train_classifier",
]


def inception_score(logits_or_probs, splits: int = 10, *, from_logits: bool | None = None):
    """Inception score ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y) = E_x p(y|x)`` per split.

    High when each sample is classified confidently (low-entropy ``p(y|x)``) and the classes
    are used evenly (high-entropy ``p(y)``); between 1 and the number of classes K. It does
    not see within-class diversity, nor memorization: a generator that returns K training
    images scores the maximum.

    Args:
        logits_or_probs: ``(N, K)`` class logits or probabilities.
        splits: number of disjoint splits (``1 <= splits <= N``); the score is computed on each.
        from_logits: True for logits, False for probabilities; None guesses (rows that are
            non-negative and sum to 1 are probabilities).

    Returns:
        ``(mean, std)`` over the splits, as 0-d tensors.
    """
    t = as_tensor(logits_or_probs, "logits_or_probs")
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] < 2:
        raise ValueError(f"logits_or_probs must be (N, K) with N >= 1, K >= 2, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("logits_or_probs contains NaN or infinite values")
    if not isinstance(splits, int) or not 1 <= splits <= t.shape[0]:
        raise ValueError(f"splits must be an int in [1, N={t.shape[0]}], got {splits!r}")
    t = t.double()
    if from_logits is None:
        from_logits = not ((t >= 0).all() and torch.allclose(t.sum(1), torch.ones(len(t), dtype=t.dtype), atol=1e-6))
    if from_logits:
        log_p = torch.log_softmax(t, dim=1)
    else:
        if (t < 0).any() or not torch.allclose(t.sum(1), torch.ones(len(t), dtype=t.dtype), atol=1e-4):
            raise ValueError("probabilities must be non-negative rows summing to 1")
        log_p = torch.log(t.clamp_min(1e-300))
    scores = []
    for chunk in torch.tensor_split(log_p, splits):
        p = chunk.exp()
        log_marginal = torch.logsumexp(chunk, 0) - torch.log(torch.tensor(float(len(chunk)), dtype=t.dtype))
        kl = (p * (chunk - log_marginal)).sum(1)
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return s.mean(), (s.std(unbiased=False) if len(s) > 1 else torch.zeros((), dtype=s.dtype))


class _Classifier(nn.Sequential):
    def __init__(self, in_features: int, n_classes: int, hidden: int = 256):
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def train_classifier(x, y, *, n_classes: int | None = None, steps: int = 600, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0) -> nn.Module:
    """Train the small MLP classifier used by the sample-quality metrics.

    Args:
        x: ``(N, D)`` features; y: ``(N,)`` integer labels in ``[0, n_classes)``.

    Returns:
        The classifier in eval mode, mapping ``(B, D)`` to logits ``(B, K)``.
    """
    x = check_samples(as_tensor(x, "x", torch.float32), "x")
    y = torch.as_tensor(y)
    if y.dtype.is_floating_point or y.shape != (x.shape[0],):
        raise ValueError(f"y must be integer labels of shape ({x.shape[0]},), got {tuple(y.shape)} {y.dtype}")
    y = y.long()
    k = int(n_classes if n_classes is not None else y.max().item() + 1)
    if (y < 0).any() or (y >= k).any():
        raise ValueError(f"labels must lie in [0, {k})")
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
    return _digits_classifier_cpu().to(device)


def _logits(model, x, batch=4096):
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def digits_inception_score(samples, splits: int = 10):
    """Inception-style score of digit samples ``(N, 64)`` under :func:`digits_classifier` (max 10)."""
    x = check_samples(as_tensor(samples, "samples", torch.float32), "samples", splits)
    if x.shape[1] != 64:
        raise ValueError(f"digit samples must have 64 features (8x8), got {x.shape[1]}")
    return inception_score(_logits(digits_classifier(x.device), x), splits, from_logits=True)


def classification_accuracy_score(train_x, train_y, test_x, test_y, *, steps: int = 600,
                                  seed: int = 0) -> float:
    """Train on one labelled sample, test on another: with generated (class-conditional)
    samples as the training set and real data as the test set, the lecture's
    train-on-synthetic / test-on-real accuracy. Uses the same classifier as the other metrics.

    Returns:
        Accuracy in ``[0, 1]`` on ``(test_x, test_y)``.
    """
    tx = check_samples(as_tensor(test_x, "test_x", torch.float32), "test_x")
    ty = torch.as_tensor(test_y).long()
    if ty.shape != (tx.shape[0],):
        raise ValueError(f"test_y must have shape ({tx.shape[0]},), got {tuple(ty.shape)}")
    train_y = torch.as_tensor(train_y)
    k = int(max(ty.max().item(), train_y.max().item()) + 1)
    model = train_classifier(train_x, train_y, n_classes=k, steps=steps, seed=seed)
    if tx.shape[1] != model[0].in_features:
        raise ValueError(f"test_x has {tx.shape[1]} features, train_x had {model[0].in_features}")
    return (_logits(model, tx).argmax(1) == ty).double().mean().item()


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
