"""Runs of the contrastive line: SimCLR on digits, CLIP on digits with captions.

Training fits the ``"fit"`` split (a fresh dequantization of every batch; SimCLR draws two
random views per digit inside the loss) and records the contrastive loss on ``"val"``.
``evaluate`` reports the linear-probe and kNN accuracies of the frozen encoder on the
``"test"`` split (450 digits; the probes are fitted on the ``"train"`` split's features,
1347 digits), next to the same numbers for raw pixels and for the randomly initialised
encoder, and the kNN accuracy on augmented test digits (how invariant the representation
became); for CLIP also zero-shot classification through class prompts, image->text and
text->image retrieval recall@1/@5, and caption arithmetic
(:func:`gencore.representation.caption_arithmetic`). All numbers are fractions in [0, 1].
"""

from __future__ import annotations

import torch

from gencore.data import augment_digits, class_prompts, load_dataset
from gencore.models import build
from gencore.representation import (
    caption_arithmetic,
    caption_ids,
    embed,
    knn_accuracy,
    linear_probe,
    retrieval_chance,
    retrieval_recall,
)
from gencore.runs.common import best_record, fresh_dequantization, run_metadata, write_eval
from gencore.runs.registry import ModelSpec, register
from gencore.train import fit

DATA = {"simclr": "digits", "clip": "digits-captions"}
# Measured in examples/contrastive_quality.py (bench/results/contrastive-quality.md).
DEFAULTS = {
    "simclr": {"kind": "conv", "feature_dim": 128, "projection_dim": 32, "temperature": 0.5},
    "clip": {"kind": "conv", "embed_dim": 32, "token_dropout": 0.3},
}
LR = 1e-3
STEPS = {"simclr": 2000, "clip": 1500}
KNN_K = 5


def train(spec, data: str, out, *, steps: int, batch_size: int, lr: float | None, seed: int, progress: bool,
          allow_changes: bool, overrides: dict, hidden: list[int] | None = None, loss: str | None = None) -> dict:
    model = spec.name
    config = dict(DEFAULTS[model])
    if hidden is not None:
        config["hidden"] = list(hidden)
    if loss is not None:  # clip only (the registry's options)
        config["loss"] = loss
    config.update(overrides)
    torch.manual_seed(seed)
    net = build(model, config)
    if model == "simclr":
        train_data, _ = load_dataset("digits", "fit", dequantized=False)
        val, _ = load_dataset("digits", "val")
    else:
        x, tokens, _ = load_dataset("digits-captions", "fit", dequantized=False)
        xv, tv, _ = load_dataset("digits-captions", "val")
        train_data, val = (x, tokens), (xv, tv)
    res = fit(net, train_data, steps=steps, batch_size=batch_size, lr=LR if lr is None else lr, seed=seed,
              eval_data=val, checkpoint_dir=out, progress=progress, schedule="cosine",
              batch_transform=fresh_dequantization, metadata=run_metadata(data, out), allow_changes=allow_changes)
    final = best_record(res.history, out, last=True)
    return {"model": model, "data": data, "steps": res.step, "final_train_loss": final["train_loss"],
            "final_val_loss": final["eval_loss"]}


def _probe_scores(f, y, ft, yt) -> dict:
    return {"linear_probe_accuracy": linear_probe(f, y, ft, yt), "knn_accuracy": knn_accuracy(f, y, ft, yt, KNN_K)}


@torch.no_grad()
def evaluate(run, net, meta: dict, data: str) -> dict:
    name = meta["model"]
    if data != DATA[name]:
        raise ValueError(f"eval: {name} runs are evaluated on {DATA[name]}, not {data!r}")
    net.eval()
    x, y = load_dataset("digits", "train")
    xt, yt = load_dataset("digits", "test")
    out: dict = {"model": name, "data": data, "step": meta["step"], "held_out": int(xt.shape[0]), "knn_k": KNN_K}
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
        out["loss"] = net.loss_kind
        if net.loss_kind == "siglip":
            out["logit_bias"] = net.criterion.logit_bias.item()
    return write_eval(run, out)


for _name, _summary in (("simclr", "SimCLR: two augmented views, NT-Xent on the fused tiled loss"),
                        ("clip", "CLIP: digits and captions, the fused tiled CLIP (or --loss siglip) loss")):
    register(ModelSpec(name=_name, family="contrastive", summary=_summary, datasets=(DATA[_name],),
                       user_data=False, options=("hidden", "loss") if _name == "clip" else ("hidden",), batch_size=256,
                       default_steps=lambda kind, opts, _n=_name: STEPS[_n], train=train, evaluate=evaluate))
