"""Tools to judge and use learned representations: embedding a dataset, a linear probe
(logistic regression on frozen features), kNN accuracy, retrieval recall@k and the lecture's
"semantic linear algebra" ``E(a) - E(b) + E(c) -> nearest item``.

Similarities are cosines throughout (features are L2-normalised first), as contrastive models
are trained with them. Accuracies and recalls are fractions in [0, 1].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from gencore._arguments import _plain, int_in, to_tensor
from gencore.data.captions import CLASS_WORDS, SLANT_WORDS, STROKE_WORDS, encode_caption, token_id

__all__ = ["embed", "linear_probe", "knn_accuracy", "retrieval_recall", "retrieval_chance", "semantic_arithmetic",
           "nearest", "caption_ids", "caption_arithmetic"]


def embed(model, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Features of ``x (N, ...)`` in batches, without gradients: ``(N, F)``.

    ``model`` is a gencore model with ``embed`` (:class:`gencore.models.SimCLR`,
    :class:`gencore.models.CLIP`: the encoder's features in eval mode) or any callable
    ``(B, ...) -> (B, F)``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"embed: x must be a tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"embed: x must be a non-empty batch (N, ...), got {tuple(x.shape)}")
    if (size := int_in(batch_size, 1)) is None:
        raise ValueError(f"embed: batch_size must be a positive int, got {batch_size!r}")
    batch_size = size
    fn = getattr(model, "embed", None)
    if fn is None:
        if not callable(model):
            raise TypeError(f"embed: model must have an embed method or be callable, got {type(model).__name__}")
        fn = model
    with torch.no_grad():
        out = torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"embed: the model must return (B, F) features, got {tuple(out.shape)}")
    return out


def _tensor(v, name: str, who: str) -> torch.Tensor:
    return to_tensor(v, f"{who}: {name}")


def _ids(v, name: str, who: str) -> torch.Tensor:
    """Integer ids ``(N,)``, N >= 1, as int64 on the CPU."""
    t = _tensor(v, name, who)
    if t.dim() != 1 or t.numel() == 0 or t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{who}: {name} must be a non-empty 1-D tensor of integer ids, got {t.dtype} "
                         f"{tuple(t.shape)}")
    return t.long().cpu()


def _features_labels(feats, labels, name: str, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    f = _tensor(feats, f"{name}_feats", who)
    y = _tensor(labels, f"{name}_y", who)
    if f.dim() != 2 or f.shape[0] == 0 or not f.dtype.is_floating_point:
        raise ValueError(f"{who}: {name}_feats must be a non-empty floating (N, F) tensor, got {f.dtype} "
                         f"{tuple(f.shape)}")
    if y.shape != (f.shape[0],) or y.dtype.is_floating_point:
        raise ValueError(f"{who}: {name}_y must be integer labels of shape ({f.shape[0]},), got {y.dtype} "
                         f"{tuple(y.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError(f"{who}: {name}_feats contains NaN or infinite values")
    return f.detach().cpu(), y.detach().cpu().long()


def _check_dims(a: torch.Tensor, b: torch.Tensor, who: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{who}: train features have {a.shape[1]} dimensions, test features {b.shape[1]}")


def linear_probe(train_feats, train_y, test_feats, test_y, *, C: float = 1.0, max_iter: int = 5000) -> float:
    """Held-out accuracy of a logistic-regression classifier on frozen features.

    The features are standardised with the train split's mean and standard deviation, then
    scikit-learn's multinomial ``LogisticRegression`` (L2 penalty ``1 / C``, lbfgs) is fitted
    on the train split and scored on the test split.

    Args:
        train_feats: ``(N, F)``; train_y: ``(N,)`` integer labels.
        test_feats: ``(M, F)``; test_y: ``(M,)``.
        C: inverse regularisation strength, positive.

    Returns:
        accuracy on the test split, a float in [0, 1].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, ya = _features_labels(train_feats, train_y, "train", "linear_probe")
    b, yb = _features_labels(test_feats, test_y, "test", "linear_probe")
    _check_dims(a, b, "linear_probe")
    if not (isinstance(C, numbers.Real) and not isinstance(C, bool) and math.isfinite(C) and C > 0):
        raise ValueError(f"linear_probe: C must be a positive finite number, got {C!r}")
    if len(torch.unique(ya)) < 2:
        raise ValueError("linear_probe: train_y must hold at least two classes")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(a.double().numpy(), ya.numpy())
    return float(clf.score(b.double().numpy(), yb.numpy()))


def knn_accuracy(train_feats, train_y, test_feats, test_y, k: int = 5) -> float:
    """Held-out accuracy of a k-nearest-neighbour classifier under cosine similarity.

    Each test point takes the majority class of its ``k`` most similar train points; a tie
    goes to the tied class with the larger summed similarity.

    Args:
        train_feats: ``(N, F)``; train_y: ``(N,)`` integer labels.
        test_feats: ``(M, F)``; test_y: ``(M,)``.
        k: neighbours, ``1 <= k <= N``.

    Returns:
        accuracy on the test split, a float in [0, 1].
    """
    a, ya = _features_labels(train_feats, train_y, "train", "knn_accuracy")
    b, yb = _features_labels(test_feats, test_y, "test", "knn_accuracy")
    _check_dims(a, b, "knn_accuracy")
    if (kk := int_in(k, 1, a.shape[0])) is None:
        raise ValueError(f"knn_accuracy: k must be an int in 1..{a.shape[0]} (the train size), got {k!r}")
    k = kk
    sims = F.normalize(b.double(), dim=1) @ F.normalize(a.double(), dim=1).T
    top, idx = sims.topk(k, dim=1)
    n_classes = int(max(ya.max(), yb.max())) + 1
    votes = torch.zeros(b.shape[0], n_classes, dtype=torch.float64)
    votes.scatter_add_(1, ya[idx], torch.ones_like(top))
    summed = torch.zeros_like(votes).scatter_add_(1, ya[idx], top)
    # Summed cosines lie in [-k, k]: scaled by 1 / (2k + 1) they only break ties of the counts.
    pred = (votes + summed / (2 * k + 1)).argmax(1)
    return (pred == yb).double().mean().item()


def _ks(k) -> tuple[int, ...]:
    k = _plain(k)
    try:
        ks = (k,) if isinstance(k, numbers.Number) else tuple(k)
    except TypeError:
        ks = ()
    ks = tuple(int_in(v, 1) for v in ks)
    if not ks or None in ks:
        raise ValueError(f"retrieval_recall: k must be a positive int or a sequence of them, got {k!r}")
    return ks


def _pair_ids(query_ids, key_ids, nq: int, nk: int) -> tuple[torch.Tensor, torch.Tensor]:
    if (query_ids is None) != (key_ids is None):
        raise ValueError("retrieval_recall: give both query_ids and key_ids, or neither")
    if query_ids is None:
        if nq != nk:
            raise ValueError(f"retrieval_recall: without ids, queries and keys are paired by position and must "
                             f"have the same count, got {nq} and {nk}")
        ar = torch.arange(nq)
        return ar, ar
    qi, ki = _ids(query_ids, "query_ids", "retrieval_recall"), _ids(key_ids, "key_ids", "retrieval_recall")
    if qi.shape != (nq,) or ki.shape != (nk,):
        raise ValueError(f"retrieval_recall: query_ids must be ({nq},) and key_ids ({nk},), got "
                         f"{tuple(qi.shape)} and {tuple(ki.shape)}")
    return qi, ki


def retrieval_recall(query_feats, key_feats, k: int | Sequence[int] = (1, 5), *, query_ids=None,
                     key_ids=None) -> dict[str, float]:
    """Recall@k of nearest-neighbour retrieval (cosine): the fraction of queries with a
    matching key among their ``k`` most similar keys.

    Args:
        query_feats: ``(N, F)``; key_feats: ``(M, F)``.
        k: one int or several.
        query_ids, key_ids: ``(N,)`` / ``(M,)`` ids; a key matches a query when the ids are
            equal (e.g. identical captions, which are interchangeable). Without ids, query
            ``i`` is paired with key ``i`` only (``N == M``).

    Returns:
        ``{"recall@1": ..., "recall@5": ...}``, fractions in [0, 1].
    """
    q, kf = _tensor(query_feats, "query_feats", "retrieval_recall"), _tensor(key_feats, "key_feats", "retrieval_recall")
    for t, name in ((q, "query_feats"), (kf, "key_feats")):
        if t.dim() != 2 or t.shape[0] == 0 or not t.dtype.is_floating_point:
            raise ValueError(f"retrieval_recall: {name} must be a non-empty floating (N, F) tensor, got "
                             f"{t.dtype} {tuple(t.shape)}")
    if q.shape[1] != kf.shape[1]:
        raise ValueError(f"retrieval_recall: query_feats have {q.shape[1]} dimensions, key_feats {kf.shape[1]}")
    ks = _ks(k)
    qi, ki = _pair_ids(query_ids, key_ids, q.shape[0], kf.shape[0])
    sims = F.normalize(q.detach().cpu().double(), dim=1) @ F.normalize(kf.detach().cpu().double(), dim=1).T
    order = sims.topk(min(max(ks), kf.shape[0]), dim=1).indices
    hit = ki[order] == qi[:, None]  # (N, kmax)
    return {f"recall@{v}": hit[:, :v].any(1).double().mean().item() for v in ks}


def retrieval_chance(query_ids, key_ids, k: int | Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k of a random ranking, exactly: the mean over queries of
    ``1 - C(M - m, k) / C(M, k)`` with ``m`` the number of keys matching the query."""
    qi, ki = _ids(query_ids, "query_ids", "retrieval_chance"), _ids(key_ids, "key_ids", "retrieval_chance")
    m_total = ki.shape[0]
    matches = (qi[:, None] == ki[None, :]).sum(1).tolist()
    out = {}
    for v in _ks(k):
        v = min(v, m_total)
        miss = [math.comb(m_total - m, v) / math.comb(m_total, v) for m in matches]
        out[f"recall@{v}"] = 1.0 - sum(miss) / len(miss)
    return out


def nearest(query: torch.Tensor, candidates: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Indices ``(Q, k)`` of the ``k`` candidates ``(M, F)`` most cosine-similar to each
    query ``(Q, F)``, best first."""
    q, c = _tensor(query, "query", "nearest"), _tensor(candidates, "candidates", "nearest")
    if q.dim() == 1:
        q = q[None]
    if c.dim() != 2 or c.shape[0] == 0 or q.dim() != 2 or q.shape[1] != c.shape[1]:
        raise ValueError(f"nearest: query must be (Q, F) and candidates (M, F) with the same F, got "
                         f"{tuple(q.shape)} and {tuple(c.shape)}")
    if (kk := int_in(k, 1, c.shape[0])) is None:
        raise ValueError(f"nearest: k must be an int in 1..{c.shape[0]}, got {k!r}")
    k = kk
    sims = F.normalize(q.detach().double(), dim=1) @ F.normalize(c.detach().double(), dim=1).T
    return sims.topk(k, dim=1).indices


def semantic_arithmetic(E: Callable[[torch.Tensor], torch.Tensor], a, b, c, candidates: torch.Tensor,
                        k: int = 1) -> torch.Tensor:
    """The lecture's semantic linear algebra: the ``k`` candidates nearest (cosine) to
    ``E(a) - E(b) + E(c)``, each embedding L2-normalised first.

    Args:
        E: the encoder, ``(Q, ...) -> (Q, F)`` (e.g. ``CLIP.encode_text``).
        a, b, c: inputs of ``E`` with the same batch size Q (a single item may omit the
            batch dimension only if ``E`` accepts it).
        candidates: ``(M, F)`` embeddings of the items to retrieve from (e.g. image
            embeddings; they may come from another encoder of the same space).
        k: number of candidates per query.

    Returns:
        ``(Q, k)`` int64 indices into ``candidates``, nearest first.
    """
    with torch.no_grad():
        ea, eb, ec = (F.normalize(E(v), dim=-1) for v in (a, b, c))
    if not (ea.shape == eb.shape == ec.shape):
        raise ValueError(f"semantic_arithmetic: E(a), E(b), E(c) must have the same shape, got "
                         f"{tuple(ea.shape)}, {tuple(eb.shape)}, {tuple(ec.shape)}")
    return nearest(ea - eb + ec, candidates, k)


def caption_ids(tokens: torch.Tensor) -> torch.Tensor:
    """One integer per distinct caption ``(N,)``: identical captions share an id (they are
    interchangeable as retrieval targets)."""
    _, ids = torch.unique(tokens, dim=0, return_inverse=True)
    return ids


@torch.no_grad()
def caption_arithmetic(model, images: torch.Tensor, tokens: torch.Tensor, k: int = 5) -> dict:
    """Semantic arithmetic on CLIP's text side, retrieved among images.

    For every property word ``p`` (3 strokes, 3 slants) and ordered pair of different classes
    ``(s, d)``: the query ``T("p s") - T("s") + T("d")`` (``T`` = :meth:`CLIP.encode_text`)
    retrieves the ``k`` nearest ``images`` by cosine with their image embeddings. A retrieved
    image hits the property when its caption (``tokens``, ``(N, 3)``) has ``p``, the class when
    it is a ``d``.

    Returns:
        ``{"property_hit_rate", "class_hit_rate", "both_hit_rate"}`` over all 540 queries x k,
        and their chance levels under random retrieval (the frequencies among ``images``; for the
        property 1/3 by construction of the captions).
    """
    if not (callable(getattr(model, "encode_image", None)) and callable(getattr(model, "encode_text", None))):
        raise TypeError(f"caption_arithmetic: model must have encode_image and encode_text (a CLIP), got "
                        f"{type(model).__name__}")
    for name, v in (("images", images), ("tokens", tokens)):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"caption_arithmetic: {name} must be a tensor, got {type(v).__name__}")
        if v.dim() == 0:
            raise ValueError(f"caption_arithmetic: {name} must be a batch (examples first), got a 0-d tensor")
    if tokens.dim() != 2 or tokens.shape[1] != 3 or tokens.dtype.is_floating_point or tokens.dtype.is_complex \
            or tokens.dtype == torch.bool:
        raise ValueError(f"caption_arithmetic: tokens must be (N, 3) integer captions (stroke, slant, class), got "
                         f"{tokens.dtype} {tuple(tokens.shape)}")
    if images.shape[0] != tokens.shape[0]:
        raise ValueError(f"caption_arithmetic: {images.shape[0]} images but {tokens.shape[0]} captions")
    if (kk := int_in(k, 1, images.shape[0])) is None:
        raise ValueError(f"caption_arithmetic: k must be an int in 1..{images.shape[0]} (the images), got {k!r}")
    k = kk  # a Python int: reported in the result (JSON)
    cand = model.encode_image(images)
    labels = tokens[:, 2] - token_id(CLASS_WORDS[0])
    hits = {"property": [], "class": [], "both": []}
    chance_p, chance_b = [], []
    for column, words in ((0, STROKE_WORDS), (1, SLANT_WORDS)):
        for word in words:
            a, b, c, target = [], [], [], []
            for s in range(10):
                for d in range(10):
                    if s != d:
                        a.append(f"{word} {CLASS_WORDS[s]}")
                        b.append(CLASS_WORDS[s])
                        c.append(CLASS_WORDS[d])
                        target.append(d)
            a, b, c = encode_caption(a), encode_caption(b), encode_caption(c)
            target = torch.tensor(target)[:, None]
            has_p = tokens[:, column] == token_id(word)
            idx = semantic_arithmetic(model.encode_text, a, b, c, cand, k)
            hp, hc = has_p[idx], labels[idx] == target
            hits["property"].append(hp.double().mean())
            hits["class"].append(hc.double().mean())
            hits["both"].append((hp & hc).double().mean())
            chance_p.append(has_p.double().mean())
            chance_b.append(torch.stack([(has_p & (labels == d)).double().mean() for d in target[:, 0]]).mean())
    mean = lambda v: torch.stack(v).mean().item()  # noqa: E731
    return {"queries": 6 * 90, "k": k, "property_hit_rate": mean(hits["property"]),
            "class_hit_rate": mean(hits["class"]), "both_hit_rate": mean(hits["both"]),
            "property_chance": mean(chance_p),
            "class_chance": 0.1, "both_chance": mean(chance_b)}
