"""Likelihood units (the lecture's digression 3): cross-entropy, NLL, bits per dimension,
perplexity. Log-likelihoods are in nats unless a name says bits.
"""

from __future__ import annotations

import math
import numbers

import torch

from gencore.metrics._checks import as_tensor, broadcast_pair, check_int, check_nonempty, check_probabilities

__all__ = ["cross_entropy", "negative_log_likelihood", "bits_per_dim", "perplexity"]


def cross_entropy(p, q) -> torch.Tensor:
    """Cross-entropy ``H(P, Q) = -sum_k p_k log q_k`` in nats (= H(P) + KL(P || Q)).

    Args:
        p, q: probability vectors ``(..., K)``; ``+inf`` where ``q_k = 0 < p_k``.

    Returns:
        ``(...)``.
    """
    p, q = as_tensor(p, "p"), as_tensor(q, "q")
    check_probabilities(p, "p")
    check_probabilities(q, "q")
    p, q = broadcast_pair(p, q)
    return -torch.xlogy(p, q).sum(-1)


def negative_log_likelihood(log_probs) -> torch.Tensor:
    """Mean negative log-likelihood in nats per example, from per-example ``log p(x)``.

    Args:
        log_probs: ``(N,)`` log-likelihoods in nats (e.g. a flow's ``log_prob(x)``).

    Returns:
        A 0-d tensor: ``-mean(log_probs)``. ``+inf`` if any example has ``log p = -inf``.
    """
    lp = as_tensor(log_probs, "log_probs")
    check_nonempty(lp, "log_probs")
    if torch.isnan(lp).any():
        raise ValueError("log_probs contains NaN")
    if (lp == math.inf).any():
        raise ValueError("log_probs contains +inf: not a valid log-likelihood")
    return -lp.mean()


def bits_per_dim(nll_nats, dims: int, levels: int | None = None):
    """Convert a negative log-likelihood per example (nats) to bits per dimension.

    For continuous data: ``nll / (D ln 2)``. For discrete data with ``levels`` values per
    dimension, modelled as dequantized ``(x + u) / levels`` in ``[0, 1)^D`` (a density on
    the unit cube): the probability of a discrete ``x`` is about ``p(y) / levels^D``, so

        bits/dim = (nll_nats + D ln(levels)) / (D ln 2)

    and a uniform model scores ``log2(levels)`` (4.09 for the 17 levels of digits).

    Args:
        nll_nats: a float or tensor of NLLs in nats per example.
        dims: number of dimensions ``D`` of one example (>= 1).
        levels: number of discrete levels per dimension, or None for continuous data.

    Returns:
        Same type as ``nll_nats``: bits per dimension.
    """
    dims = check_int(dims, "dims")
    if dims < 1:
        raise ValueError(f"dims must be a positive int, got {dims!r}")
    if levels is not None:
        levels = check_int(levels, "levels")
        if levels < 2:
            raise ValueError(f"levels must be an int >= 2 or None, got {levels!r}")
    offset = dims * math.log(levels) if levels is not None else 0.0
    if isinstance(nll_nats, torch.Tensor):
        if torch.isnan(nll_nats).any():
            raise ValueError("nll_nats contains NaN")
    elif isinstance(nll_nats, numbers.Real) and not isinstance(nll_nats, bool):
        nll_nats = float(nll_nats)
        if math.isnan(nll_nats):
            raise ValueError("nll_nats is NaN")
    else:
        raise TypeError(f"nll_nats must be a float or a tensor, got {type(nll_nats).__name__}")
    return (nll_nats + offset) / (dims * math.log(2))


def perplexity(log_probs, lengths=None) -> torch.Tensor:
    """Perplexity ``exp(-(1/T) sum_t log p(x_t | x_<t))``: the effective branching factor.

    Args:
        log_probs: per-token log-probabilities in nats, ``(T,)`` for one sequence or
            ``(B, T)`` for a padded batch.
        lengths: ``(B,)`` number of valid tokens of each sequence (the rest is padding);
            None: every position counts. The result pools all valid tokens of the batch.

    Returns:
        A 0-d tensor >= 1 for valid probabilities.
    """
    lp = as_tensor(log_probs, "log_probs")
    check_nonempty(lp, "log_probs")
    if lp.dim() > 2:
        raise ValueError(f"log_probs must be (T,) or (B, T), got shape {tuple(lp.shape)}")
    if (lp > 0).any() or torch.isnan(lp).any():
        raise ValueError("log_probs must be log-probabilities (<= 0, not NaN)")
    if lengths is None:
        return torch.exp(-lp.mean())
    if lp.dim() != 2:
        raise ValueError("lengths needs log_probs of shape (B, T)")
    lengths = torch.as_tensor(lengths, device=lp.device)
    if lengths.shape != (lp.shape[0],):
        raise ValueError(f"lengths must have shape ({lp.shape[0]},), got {tuple(lengths.shape)}")
    if (lengths < 0).any() or (lengths > lp.shape[1]).any() or lengths.sum() == 0:
        raise ValueError(f"lengths must lie in [0, {lp.shape[1]}] with at least one token")
    mask = torch.arange(lp.shape[1], device=lp.device)[None, :] < lengths[:, None]
    return torch.exp(-(lp * mask).sum() / mask.sum())
