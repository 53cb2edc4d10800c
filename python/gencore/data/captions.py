"""Digits with short token captions: the paired image-text data CLIP trains on.

Each digit gets a three-word caption ``"<stroke> <slant> <class>"``, e.g. ``"bold upright
seven"``, computed deterministically from its integer pixel levels and its label:

* class: the digit's label as a word (``"zero"`` .. ``"nine"``). Putting the class in the text
  is by design: it is what lets CLIP classify "zero-shot" through class captions.
* stroke: the total ink (the sum of the 64 levels, 0..16 each) against the tertiles of that
  class's ink on the train split: ``"thin"`` (lowest third), ``"regular"``, ``"bold"``.
* slant: the shear of the ink from the image's second moments, ``-mu11 / mu02`` (columns per
  row: positive when the top of the digit leans right), against the tertiles of that class's
  slant on the train split: ``"left"``, ``"upright"``, ``"right"``.

Per-class tertiles make both properties balanced (a third of each class) and independent of
the class by construction, so "a bold two" means bold for a two, and chance for a property is
1/3. The captions carry nothing else: no index, no pixel, no split information.

Vocabulary (fixed, :data:`VOCAB`; token ids are positions): ``0: <pad>``, ``1..10: zero..nine``,
``11..13: thin regular bold``, ``14..16: left upright right``. Captions are ``int64`` tensors
``(N, 3)`` (``[stroke, slant, class]``); shorter texts (prompts) are right-padded with 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from gencore._arguments import int_in, to_tensor

__all__ = ["VOCAB", "PAD", "CLASS_WORDS", "STROKE_WORDS", "SLANT_WORDS", "CAPTION_LENGTH", "encode_caption",
           "decode_caption", "digit_measures", "caption_thresholds", "caption_attributes", "caption_digits",
           "load_captioned_digits", "class_prompts", "token_id"]

PAD = "<pad>"
CLASS_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
STROKE_WORDS = ("thin", "regular", "bold")
SLANT_WORDS = ("left", "upright", "right")
VOCAB = (PAD, *CLASS_WORDS, *STROKE_WORDS, *SLANT_WORDS)
CAPTION_LENGTH = 3
_INDEX = {w: i for i, w in enumerate(VOCAB)}


def token_id(word: str) -> int:
    """The id of one vocabulary word; ValueError naming the word if it is not in :data:`VOCAB`."""
    if word not in _INDEX or word == PAD:
        raise ValueError(f"unknown caption token {word!r}; the vocabulary is {', '.join(VOCAB[1:])}")
    return _INDEX[word]


def encode_caption(text: str | Sequence[str], length: int | None = None) -> torch.Tensor:
    """Token ids of a caption (whitespace-separated words of :data:`VOCAB`).

    Args:
        text: one caption (-> ``(T,)``) or a list of captions (-> ``(B, T)``, right-padded
            with 0 to the longest).
        length: pad to this many tokens (an error if a caption is longer).

    Raises:
        ValueError: an unknown word (named), an empty caption, or a caption longer than ``length``.
    """
    single = isinstance(text, str)
    texts = [text] if single else list(text)
    if not texts:
        raise ValueError("encode_caption: no captions given")
    rows = []
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"encode_caption: captions must be strings, got {type(t).__name__}")
        words = t.split()
        if not words:
            raise ValueError("encode_caption: empty caption")
        rows.append([token_id(w) for w in words])
    width = max(len(r) for r in rows) if length is None else length
    if (width := int_in(width, 1)) is None:
        raise ValueError(f"encode_caption: length must be a positive int, got {length!r}")
    if any(len(r) > width for r in rows):
        raise ValueError(f"encode_caption: a caption has more than length={width} tokens")
    out = torch.zeros(len(rows), width, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
    return out[0] if single else out


def decode_caption(tokens: torch.Tensor) -> str | list[str]:
    """Words of token ids, padding dropped: ``(T,)`` -> str, ``(B, T)`` -> list of str.

    Raises:
        ValueError: an id outside ``0..len(VOCAB)-1``, or not a 1-D / 2-D integer tensor.
    """
    t = to_tensor(tokens, "decode_caption: tokens", "a 1-D or 2-D integer tensor")
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() not in (1, 2):
        raise ValueError(f"decode_caption: tokens must be a 1-D or 2-D integer tensor, got {t.dtype} "
                         f"{tuple(t.shape)}")
    if t.numel() and (t.min() < 0 or t.max() >= len(VOCAB)):
        bad = t[(t < 0) | (t >= len(VOCAB))][0].item()
        raise ValueError(f"decode_caption: unknown caption token id {bad}; ids are 0..{len(VOCAB) - 1}")
    rows = [" ".join(VOCAB[i] for i in row.tolist() if i != 0) for row in t.reshape(-1, t.shape[-1])]
    return rows[0] if t.dim() == 1 else rows


def digit_measures(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ink and slant of digits given as integer levels ``(N, 64)`` (or ``(N, 1, 8, 8)``).

    Returns:
        ``(ink, slant)``, each ``(N,)`` float64: ``ink`` the sum of the levels (0..16 per
        pixel), ``slant = -mu11 / mu02`` with ``mu`` the ink-weighted central moments of
        (column, row) and rows counted downwards: the horizontal shift of the ink per row
        upwards, in pixels per pixel (> 0: leaning right).
    """
    x = torch.as_tensor(levels).double().reshape(-1, 64)
    if x.shape[0] == 0:
        raise ValueError("digit_measures: empty batch")
    w = x.reshape(-1, 8, 8)
    ink = w.sum((1, 2))
    total = ink.clamp(min=1e-12)
    ar = torch.arange(8, dtype=torch.float64)
    r, c = ar[None, :, None], ar[None, None, :]
    mr = (w * r).sum((1, 2)) / total
    mc = (w * c).sum((1, 2)) / total
    dr, dc = r - mr[:, None, None], c - mc[:, None, None]
    mu11 = (w * dr * dc).sum((1, 2)) / total
    mu02 = (w * dr * dr).sum((1, 2)) / total
    return ink, -mu11 / mu02.clamp(min=1e-12)


@functools.lru_cache(maxsize=1)
def _train_thresholds() -> tuple[torch.Tensor, torch.Tensor]:
    from gencore.data import load_dataset

    levels, y = load_dataset("digits", "train", dtype=torch.float64, dequantized=False)
    ink, slant = digit_measures(levels)
    q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    ink_t = torch.stack([torch.quantile(ink[y == k], q) for k in range(10)])
    slant_t = torch.stack([torch.quantile(slant[y == k], q) for k in range(10)])
    return ink_t, slant_t


def caption_thresholds() -> dict[str, torch.Tensor]:
    """The per-class tertiles of the train split: ``{"ink": (10, 2), "slant": (10, 2)}``
    (row k: the 1/3 and 2/3 quantiles for class k), float64."""
    ink_t, slant_t = _train_thresholds()
    return {"ink": ink_t.clone(), "slant": slant_t.clone()}


def caption_attributes(levels: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The caption properties as indices: ``{"stroke": (N,), "slant": (N,)}``, int64 in 0..2
    (positions in :data:`STROKE_WORDS` / :data:`SLANT_WORDS`), for integer ``levels (N, 64)``
    and ``labels (N,)`` in 0..9."""
    y = torch.as_tensor(labels)
    ink, slant = digit_measures(levels)
    if y.shape != ink.shape or y.dtype.is_floating_point:
        raise ValueError(f"caption_attributes: labels must be integer (N,) = ({ink.shape[0]},), got "
                         f"{y.dtype} {tuple(y.shape)}")
    if y.min() < 0 or y.max() > 9:
        raise ValueError("caption_attributes: labels must be in 0..9")
    ink_t, slant_t = _train_thresholds()
    stroke = (ink[:, None] > ink_t[y]).sum(1)
    lean = (slant[:, None] > slant_t[y]).sum(1)
    return {"stroke": stroke.long(), "slant": lean.long()}


def caption_digits(levels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Caption tokens ``(N, 3)`` int64 (``[stroke, slant, class]``) of integer ``levels (N, 64)``
    with ``labels (N,)``."""
    a = caption_attributes(levels, labels)
    y = torch.as_tensor(labels).long()
    return torch.stack([a["stroke"] + _INDEX[STROKE_WORDS[0]], a["slant"] + _INDEX[SLANT_WORDS[0]],
                        y + _INDEX[CLASS_WORDS[0]]], 1)


def load_captioned_digits(split: str = "train", seed: int = 0, *, dtype=torch.float32, image: bool = False,
                          dequantized: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits split with captions: ``(x, tokens, y)``.

    ``x`` as :func:`gencore.data.load_dataset` ``("digits", split, seed, ...)`` returns it
    (``(N, 64)`` or ``(N, 1, 8, 8)``, dequantized to ``[0, 1)`` unless ``dequantized=False``),
    ``tokens (N, 3)`` int64 captions (from the integer levels, so they do not depend on the
    dequantization noise), ``y (N,)`` int64 labels.
    """
    from gencore.data import load_dataset

    x, y = load_dataset("digits", split, seed, dtype=dtype, image=image, dequantized=dequantized)
    levels, _ = load_dataset("digits", split, dtype=torch.float64, dequantized=False)
    return x, caption_digits(levels, y), y


def class_prompts(kind: str = "class") -> torch.Tensor | list[torch.Tensor]:
    """Text prompts for zero-shot classification, one entry per class 0..9.

    ``"class"``: the class word alone, ``(10, 1)``. ``"ensemble"``: every caption of the class
    (3 strokes x 3 slants), a list of 10 tensors ``(9, 3)``, whose text embeddings are averaged
    (CLIP's prompt ensembling).
    """
    if kind == "class":
        return encode_caption(list(CLASS_WORDS))
    if kind == "ensemble":
        return [encode_caption([f"{s} {t} {c}" for s in STROKE_WORDS for t in SLANT_WORDS]) for c in CLASS_WORDS]
    raise ValueError(f"class_prompts: kind must be 'class' or 'ensemble', got {kind!r}")
