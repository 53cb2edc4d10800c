"""Runs of the text-to-image model (:class:`gencore.models.TextToImage`) on the captioned digits.

``gencore train text2image --data digits-captions --out DIR`` trains the VQ-VAE, the caption
prior and the CLIP re-ranker together on the ``"fit"`` split (a fresh dequantization of
every batch), keeping the parameters with the best ``"val"`` loss. The (stroke, slant,
class) combinations of :data:`HELD_OUT_COMBOS` are removed from ``"fit"`` and ``"val"``:
the model never sees a digit captioned with them, and ``eval`` asks for them by name.

``gencore eval DIR`` scores generation on the ``"test"`` captions (450 digits), each number
beside its chance level and beside the same number for the real test digits
(:func:`evaluate`); ``gencore sample DIR --caption "bold upright seven"`` draws a grid.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from gencore import metrics
from gencore.data import encode_caption, load_dataset
from gencore.data.captions import CLASS_WORDS, SLANT_WORDS, STROKE_WORDS, caption_attributes
from gencore.models import build
from gencore.models.text2image import caption_slots
from gencore.representation import caption_ids, retrieval_chance, retrieval_recall
from gencore.runs.common import (best_record, fresh_dequantization, run_metadata, save_samples, write_eval,
                                 writes_samples)
from gencore.runs.registry import ModelSpec, register
from gencore.train import fit

DATA = "digits-captions"
STEPS = 3000
LR = 1e-3
EVAL_EVERY = 100
DEFAULTS: dict = {}
#: (stroke, slant, class) word triples never shown in training: one per class, every stroke
#: and slant word among them, none the class's most common look.
HELD_OUT_COMBOS = (("thin", "left", "zero"), ("regular", "upright", "one"), ("bold", "right", "two"),
                   ("thin", "upright", "three"), ("regular", "right", "four"), ("bold", "left", "five"),
                   ("thin", "right", "six"), ("regular", "left", "seven"), ("bold", "upright", "eight"),
                   ("thin", "upright", "nine"))
#: Candidates per caption for the re-ranked numbers (DALL-E re-ranked 512 of its samples;
#: more candidates can only help a judge that agrees with the re-ranker).
CANDIDATES = 16
#: The sampling settings of ``eval`` and ``sample``, chosen on the ``"val"`` captions
#: (examples/text2image_quality.py): classifier-free guidance and a lower temperature.
SAMPLING = {"guidance": 2.0, "temperature": 0.7}
#: Images drawn per held-out combination.
PER_COMBO = 40
#: The judge CLIP's training (an independent CLIP, not the model's re-ranker).
JUDGE_STEPS = 1500


def held_out_tokens() -> torch.Tensor:
    """:data:`HELD_OUT_COMBOS` as caption tokens ``(10, 3)`` (the order of the data)."""
    return encode_caption([" ".join(c) for c in HELD_OUT_COMBOS])


def seen_mask(tokens: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: the captions that are not a held-out combination."""
    return ~(tokens[:, None, :] == held_out_tokens()[None]).all(-1).any(1)


def train(spec, data: str, out, *, steps: int, batch_size: int, lr: float | None, seed: int, progress: bool,
          allow_changes: bool, overrides: dict) -> dict:
    config = dict(DEFAULTS)
    config.update(overrides)
    x, tokens, _ = load_dataset(DATA, "fit", seed=seed, dequantized=False)
    xv, tv, _ = load_dataset(DATA, "val")
    keep, keep_v = seen_mask(tokens), seen_mask(tv)
    torch.manual_seed(seed)
    net = build("text2image", config)
    res = fit(net, (x[keep], tokens[keep]), steps=steps, batch_size=batch_size, lr=LR if lr is None else lr,
              seed=seed, eval_data=(xv[keep_v], tv[keep_v]), checkpoint_dir=out,
              eval_every=max(1, min(EVAL_EVERY, steps // 10)), progress=progress, schedule="cosine",
              batch_transform=fresh_dequantization, keep_best=True,
              metadata=run_metadata(data, out, held_out_combos=[list(c) for c in HELD_OUT_COMBOS]),
              allow_changes=allow_changes)
    best = best_record(res.history, out)
    return {"model": "text2image", "data": data, "steps": res.step, "best_val_loss": best["eval_loss"],
            "best_step": best["step"], "train_digits": int(keep.sum()), "held_out_combos": len(HELD_OUT_COMBOS)}


# ---- judging ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def judge_clip():
    """An independent CLIP (the digits-captions defaults of ``gencore train clip``, seed 1,
    :data:`JUDGE_STEPS` steps on the whole ``"train"`` split), trained on first use and
    cached: it scores retrieval, so that re-ranking by the model's own CLIP is not judged
    by itself."""
    from gencore.runs.contrastive import DEFAULTS as CLIP_DEFAULTS

    x, tokens, _ = load_dataset(DATA, "train", dequantized=False)
    with torch.random.fork_rng(), torch.enable_grad():  # first asked for inside evaluate's no_grad
        torch.manual_seed(1)
        net = build("clip", dict(CLIP_DEFAULTS["clip"]))
        fit(net, (x, tokens), steps=JUDGE_STEPS, batch_size=256, lr=1e-3, seed=1, progress=False,
            schedule="cosine", batch_transform=fresh_dequantization)
    return net.eval()


def _levels(images: torch.Tensor) -> torch.Tensor:
    """Pixel levels (0..16, real-valued) of images in [0, 1]: the inverse of the level
    centres ``(k + 1/2) / 17`` that decoders and dequantized data are measured against."""
    return (images.reshape(len(images), 64).double() * 17 - 0.5).clamp(0, 16)


@torch.no_grad()
def judge(images: torch.Tensor, tokens: torch.Tensor, key_tokens: torch.Tensor | None = None) -> dict:
    """How well ``images (N, 1, 8, 8)`` show their captions ``tokens (N, 3)``.

    * ``class_accuracy``: :func:`gencore.metrics.digits_classifier` agrees with the class word;
    * ``stroke_accuracy`` / ``slant_accuracy``: the rule that wrote the captions
      (:func:`gencore.data.captions.caption_attributes`, with the caption's class) gives the
      caption's word; ``all_accuracy``: class and both properties at once;
    * ``clip_recall@1``: the judge CLIP (:func:`judge_clip`) ranks the image's caption first
      among ``key_tokens`` (identical captions count as one); left out when ``key_tokens``
      is None.
    """
    x = images.reshape(len(images), 64).float()
    y = tokens[:, 2] - encode_caption(CLASS_WORDS[0])[0]
    pred = metrics.digits_classifier()(x).argmax(1)
    attrs = caption_attributes(_levels(images), y)
    cls = pred == y
    stroke = attrs["stroke"] == tokens[:, 0] - encode_caption(STROKE_WORDS[0])[0]
    slant = attrs["slant"] == tokens[:, 1] - encode_caption(SLANT_WORDS[0])[0]
    mean = lambda v: v.double().mean().item()  # noqa: E731
    out = {"class_accuracy": mean(cls), "stroke_accuracy": mean(stroke), "slant_accuracy": mean(slant),
           "all_accuracy": mean(cls & stroke & slant)}
    if key_tokens is not None:
        clip = judge_clip()
        keys = torch.unique(key_tokens, dim=0)
        ids = caption_ids(torch.cat([tokens, keys]))
        out["clip_recall@1"] = retrieval_recall(clip.encode_image(x), clip.encode_text(keys), 1,
                                                query_ids=ids[:len(x)], key_ids=ids[len(x):])["recall@1"]
    return out


def _chance(tokens: torch.Tensor, key_tokens: torch.Tensor) -> dict:
    keys = torch.unique(key_tokens, dim=0)
    ids = caption_ids(torch.cat([tokens, keys]))
    return {"class_accuracy": 0.1, "stroke_accuracy": 1 / 3, "slant_accuracy": 1 / 3, "all_accuracy": 1 / 90,
            "clip_recall@1": retrieval_chance(ids[:len(tokens)], ids[len(tokens):], 1)["recall@1"]}


@torch.no_grad()
def caption_arithmetic_generation(net, *, candidates: int, generator: torch.Generator) -> dict:
    """Semantic arithmetic, then generation: for every class, slant and ordered pair of
    different stroke words ``(a, b)`` the query ``T("a s c") - T("a") + T("b")`` in the
    re-ranker's text space (and the same with the slants swapped), decoded to the nearest
    of the 90 caption embeddings, whose caption the prior draws (with :data:`SAMPLING`;
    re-ranked against that caption when ``candidates > 1``). Judged like any generation
    against the target caption ``"b s c"``; ``decoded_to_target_caption`` is how often the
    arithmetic alone landed on it.
    """
    clip = net.clip
    rows, targets = [], []
    for c in CLASS_WORDS:
        for other in SLANT_WORDS:
            for a in STROKE_WORDS:
                for b in STROKE_WORDS:
                    if a != b:
                        rows.append((f"{a} {other} {c}", a, b))
                        targets.append(f"{b} {other} {c}")
        for other in STROKE_WORDS:
            for a in SLANT_WORDS:
                for b in SLANT_WORDS:
                    if a != b:
                        rows.append((f"{other} {a} {c}", a, b))
                        targets.append(f"{other} {b} {c}")
    enc = lambda texts: clip.encode_text(encode_caption(list(texts)))  # noqa: E731
    norm = torch.nn.functional.normalize
    query = norm(norm(enc(r[0] for r in rows)) - norm(enc(r[1] for r in rows)) + norm(enc(r[2] for r in rows)))
    every = encode_caption([f"{s} {t} {c}" for s in STROKE_WORDS for t in SLANT_WORDS for c in CLASS_WORDS])
    decoded = caption_slots(every[(query @ clip.encode_text(every).T).argmax(1)])
    target = caption_slots(encode_caption(targets))
    images = net.generate(decoded, candidates=candidates, generator=generator, **SAMPLING)
    out = judge(images, target, every)
    out["decoded_to_target_caption"] = (decoded == target).all(1).double().mean().item()
    out["queries"] = len(rows)
    return out


@torch.no_grad()
def evaluate(run, net, meta: dict, data: str) -> dict:
    if data != DATA:
        raise ValueError(f"eval: text2image runs are evaluated on {DATA}, not {data!r}")
    net.eval()
    xtr, ttr, ytr = load_dataset(DATA, "train")
    xt, tt, yt = load_dataset(DATA, "test")
    g = torch.Generator().manual_seed(0)
    out: dict = {"model": "text2image", "data": data, "step": meta["step"], "test_captions": int(len(tt)),
                 "candidates": CANDIDATES}
    out["sampling"] = dict(SAMPLING)
    gen = net.generate(tt, generator=g, **SAMPLING)
    gen_rr = net.generate(tt, candidates=CANDIDATES, generator=g, **SAMPLING)
    seen = seen_mask(tt)
    out["test_captions"] = {
        "generated": judge(gen, tt, tt),
        "generated_reranked": judge(gen_rr, tt, tt),
        "plain_sampling": judge(net.generate(tt, generator=g), tt, tt),
        "real_test_digits": judge(xt, tt, tt),
        "chance": _chance(tt, tt),
        "held_out_combo_captions": int((~seen).sum()),
    }
    # Generalization: captions that name only the held-out combinations.
    ho = held_out_tokens().repeat_interleave(PER_COMBO, 0)
    real_ho = ~seen
    out["held_out_combos"] = {
        "combos": [" ".join(c) for c in HELD_OUT_COMBOS], "per_combo": PER_COMBO,
        "generated": judge(net.generate(ho, generator=g, **SAMPLING), ho, tt),
        "generated_reranked": judge(net.generate(ho, candidates=CANDIDATES, generator=g, **SAMPLING), ho, tt),
        "real_test_digits": judge(xt[real_ho], tt[real_ho], tt) if real_ho.any() else None,
        "real_test_digits_count": int(real_ho.sum()),
        "chance": _chance(ho, tt),
    }
    flat = lambda v: v.reshape(len(v), -1)  # noqa: E731
    labels = tt[:, 2] - encode_caption(CLASS_WORDS[0])[0]
    mem = {}
    for name, images in (("generated", gen), ("generated_reranked", gen_rr)):
        mem[name] = metrics.memorization_report(flat(images), flat(xtr), flat(xt))
        mem[name]["tstr_accuracy"] = metrics.classification_accuracy_score(flat(images), labels, flat(xt), yt)
    half = len(xt) // 2
    mem["real_test_digits"] = metrics.memorization_report(flat(xt[:half]), flat(xtr), flat(xt[half:]))
    mem["real_test_digits"]["tstr_accuracy"] = metrics.classification_accuracy_score(flat(xtr), ytr, flat(xt), yt)
    out["diversity_and_memorization"] = mem
    logp = net.token_log_probs(xt, tt)
    train_codes = net.vqvae.codes(xtr).flatten()
    freq = (torch.bincount(train_codes, minlength=net.num_codes).double() + 1) / (len(train_codes) + net.num_codes)
    test_codes = net.vqvae.codes(xt).flatten()
    out["prior"] = {
        "perplexity_per_code": metrics.perplexity(logp).item(),
        "unigram_perplexity_per_code": metrics.perplexity(freq.log()[test_codes]).item(),
        "uniform_perplexity_per_code": float(net.num_codes),
        "perplexity_held_out_combos": metrics.perplexity(logp[~seen]).item() if (~seen).any() else None,
        "nll_bound_nats": net.nll_bound(xt, tt).mean().item(),
        "units": "perplexity: exp of the mean negative log-likelihood per code token, in codes (1..num_codes); "
                 "nll_bound: -log p(x | z_q) - log p(z_q | caption), nats per digit",
    }
    out["prior"]["bits_per_dim"] = metrics.bits_per_dim(out["prior"]["nll_bound_nats"], 64, levels=17)
    out["caption_arithmetic"] = {
        "generated": caption_arithmetic_generation(net, candidates=1, generator=g),
        "generated_reranked": caption_arithmetic_generation(net, candidates=CANDIDATES, generator=g),
    }
    out["reconstruction"] = judge(net.vqvae.reconstruct(xt).reshape(xt.shape), tt, tt)
    return write_eval(run, out)


@torch.no_grad()
def sample(run, net, meta: dict, n: int, out_png, generator: torch.Generator, *, caption: str | None = None,
           candidates: int = 1) -> Path:
    from gencore.plotting import save_image_grid

    if caption is None:
        captions = [f"{s} {t} {CLASS_WORDS[k]}" for k in range(10) for s, t in (("regular", "upright"),)]
        captions = [captions[i % 10] for i in range(n)]
        labels = torch.arange(n) % 10
        title = "text to image: 'regular upright <class>', classes 0-9 by column"
    else:
        slot = int(caption_slots(caption)[0, 2])  # (a clear error for an unknown word); 0: no class word
        labels = torch.full((n,), slot - int(encode_caption(CLASS_WORDS[0])[0])) if slot else None
        captions = [caption] * n
        title = f"text to image: '{caption}'" + (f" (best of {candidates} by CLIP)" if candidates > 1 else "")
    xs = net.generate(captions, candidates=candidates, generator=generator, **SAMPLING)
    if writes_samples(out_png):  # labels: the class each caption names, if it names one
        return save_samples(xs, out_png, labels)
    return save_image_grid(xs.reshape(n, -1), out_png, nrow=10 if caption is None else None, title=title,
                           shape=(8, 8))


register(ModelSpec(name="text2image", family="multimodal",
                   summary="text to image (DALL-E 1 form): caption tokens then VQ code tokens, one transformer",
                   datasets=(DATA,), user_data=False, options=(), batch_size=128,
                   default_steps=lambda kind, opts: STEPS, train=train, evaluate=evaluate, sample=sample))
