"""``gencore train / eval`` for the contrastive line: SimCLR on digits, CLIP on digits with
captions.

Run folders are the same as for every model: a checkpoint (``checkpoint.json`` +
safetensors) whose ``extra`` records the dataset, so ``eval`` needs only the folder.

* ``simclr`` trains on ``--data digits`` (a fresh dequantization of every batch, two random
  views per digit inside the loss); eval reports the linear-probe and kNN accuracies of the
  frozen encoder on the held-out split, next to the same numbers for raw pixels and for the
  randomly initialised encoder, and the kNN accuracy on augmented held-out digits (how
  invariant the representation became).
* ``clip`` trains on ``--data digits-captions``; eval adds zero-shot classification through
  class prompts, image->text and text->image retrieval recall@1/@5, and caption arithmetic
  (:func:`caption_arithmetic`).

All numbers are fractions in [0, 1] on the held-out (test) split, 450 digits; the probes are
fitted on the train split's features (1347 digits).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gencore.data import augment_digits, class_prompts, dequantize, encode_caption, load_dataset
from gencore.data.captions import CLASS_WORDS, SLANT_WORDS, STROKE_WORDS, token_id
from gencore.models import build
from gencore.representation import (
    embed,
    knn_accuracy,
    linear_probe,
    retrieval_chance,
    retrieval_recall,
    semantic_arithmetic,
)
from gencore.train import fit, record_run_extra

CONTRASTIVE_MODELS = ("simclr", "clip")
DATA = {"simclr": "digits", "clip": "digits-captions"}
# Measured in examples/contrastive_quality.py (bench/results/contrastive-quality.md).
DEFAULTS = {
    "simclr": {"kind": "conv", "feature_dim": 128, "projection_dim": 32, "temperature": 0.5},
    "clip": {"kind": "conv", "embed_dim": 32, "token_dropout": 0.3},
}
DEFAULT_LR = 1e-3
KNN_K = 5


def _fresh_dequantization(batch, g):
    if isinstance(batch, tuple):
        return (dequantize(batch[0], g), *batch[1:])
    return dequantize(batch, g)


def train_contrastive(model: str, data: str, *, steps: int, out, batch_size: int = 256, lr: float | None = None,
                      seed: int = 0, conditional: bool = False, image: bool = False, progress: bool = True,
                      depth: int | None = None, hidden=None, **model_kwargs) -> dict:
    """Train SimCLR (``data="digits"``) or CLIP (``data="digits-captions"``) through
    :func:`gencore.train.fit` (AdamW, cosine schedule, a fresh dequantization per batch);
    ``out`` is the run folder. ``hidden`` sets the image encoder's widths; ``model_kwargs``
    override :data:`DEFAULTS`."""
    if model not in CONTRASTIVE_MODELS:
        raise ValueError(f"train: model must be one of {', '.join(CONTRASTIVE_MODELS)}, got {model!r}")
    if data != DATA[model]:
        raise ValueError(f"train: {model} trains on --data {DATA[model]}, got {data!r}")
    if conditional or image or depth is not None:
        flag = "--conditional" if conditional else "--image" if image else "--couplings"
        raise ValueError(f"train: {flag} does not apply to {model}")
    config = dict(DEFAULTS[model])
    config.update({k: v for k, v in model_kwargs.items() if v is not None})
    if hidden is not None:
        config["hidden"] = [int(h) for h in hidden]
    torch.manual_seed(seed)
    net = build(model, config)
    if model == "simclr":
        train, _ = load_dataset("digits", "train", dequantized=False)
        held_out, _ = load_dataset("digits", "test")
    else:
        x, tokens, _ = load_dataset("digits-captions", "train", dequantized=False)
        xt, tt, _ = load_dataset("digits-captions", "test")
        train, held_out = (x, tokens), (xt, tt)
    res = fit(net, train, steps=steps, batch_size=batch_size, lr=DEFAULT_LR if lr is None else lr, seed=seed,
              eval_data=held_out, checkpoint_dir=out, progress=progress, schedule="cosine",
              batch_transform=_fresh_dequantization)
    record_run_extra(out, {"data": data})
    return {"model": model, "data": data, "steps": res.step, "final_train_loss": res.history[-1]["train_loss"],
            "final_eval_loss": res.history[-1]["eval_loss"]}


def _probe_scores(f, y, ft, yt) -> dict:
    return {"linear_probe_accuracy": linear_probe(f, y, ft, yt), "knn_accuracy": knn_accuracy(f, y, ft, yt, KNN_K)}


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
    if images.shape[0] != tokens.shape[0]:
        raise ValueError(f"caption_arithmetic: {images.shape[0]} images but {tokens.shape[0]} captions")
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


@torch.no_grad()
def evaluate_contrastive(run, net, meta: dict) -> dict:
    """Held-out numbers of a SimCLR / CLIP run (module docstring), written to ``run/eval.json``."""
    name = meta["model"]
    if name not in CONTRASTIVE_MODELS:
        raise ValueError(f"eval: {name} is not a contrastive model")
    net.eval()
    x, y = load_dataset("digits", "train")
    xt, yt = load_dataset("digits", "test")
    out: dict = {"model": name, "data": meta.get("extra", {}).get("data", DATA[name]), "step": meta["step"],
                 "held_out": int(xt.shape[0]), "knn_k": KNN_K}
    out.update(_probe_scores(embed(net, x), y, embed(net, xt), yt))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fresh = build(name, meta["config"]).eval()
    xa = augment_digits(xt, torch.Generator().manual_seed(0))
    out["augmented_test_knn_accuracy"] = knn_accuracy(embed(net, x), y, embed(net, xa), yt, KNN_K)
    out["baselines"] = {"raw_pixels": _probe_scores(x, y, xt, yt),
                        "random_init_encoder": _probe_scores(embed(fresh, x), y, embed(fresh, xt), yt)}
    out["baselines"]["raw_pixels"]["augmented_test_knn_accuracy"] = knn_accuracy(x, y, xa, yt, KNN_K)
    out["baselines"]["random_init_encoder"]["augmented_test_knn_accuracy"] = knn_accuracy(
        embed(fresh, x), y, embed(fresh, xa), yt, KNN_K)
    if name == "clip":
        _, tt, _ = load_dataset("digits-captions", "test")
        out["zero_shot_accuracy"] = (net.zero_shot_classify(xt, class_prompts("class")) == yt).double().mean().item()
        out["zero_shot_accuracy_ensemble"] = (net.zero_shot_classify(xt, class_prompts("ensemble")) == yt
                                              ).double().mean().item()
        img, txt = net.encode_image(xt), net.encode_text(tt)
        ids = caption_ids(tt)
        out["retrieval"] = {
            "image_to_text": retrieval_recall(img, txt, (1, 5), query_ids=ids, key_ids=ids),
            "text_to_image": retrieval_recall(txt, img, (1, 5), query_ids=ids, key_ids=ids),
            "chance": retrieval_chance(ids, ids, (1, 5)),
            "image_to_text_exact_pair": retrieval_recall(img, txt, (1, 5)),
            "distinct_captions": int(ids.max()) + 1,
            "note": "a retrieved item counts as correct when its caption equals the query's (identical captions "
                    "are interchangeable); exact_pair counts only the query's own partner",
        }
        out["caption_arithmetic"] = caption_arithmetic(net, xt, tt)
        out["logit_scale"] = net.logit_scale.item()
    Path(run, "eval.json").write_text(json.dumps(out, indent=1))
    return out


__all__ = ["CONTRASTIVE_MODELS", "train_contrastive", "evaluate_contrastive", "caption_arithmetic", "caption_ids"]
