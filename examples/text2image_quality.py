#!/usr/bin/env python
"""Text to image on the captioned digits: the sampling settings chosen on the val captions,
then the test captions scored once; written to bench/results/text2image-quality.{md,json}.

1. Train ``gencore train text2image`` with its defaults (fit split minus the held-out
   (stroke, slant, class) combinations, best state on val) into ``--runs`` (default
   ``examples-out/text2image``; a finished run is reused).
2. On the val captions (135 digits), sweep classifier-free guidance x temperature, without
   and with CLIP re-ranking, judged by the digits classifier and the caption rule (the
   numbers of :func:`gencore.runs.text2image.judge`); pick the setting with the best
   re-ranked all-three accuracy, and check that it is the one ``gencore eval`` uses
   (:data:`gencore.runs.text2image.SAMPLING`).
3. ``gencore eval`` on the test split: every number of the issue, beside chance and real
   test digits.

    python examples/text2image_quality.py               # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gencore import runs
from gencore.benchmarks.harness import machine_info
from gencore.data import load_dataset
from gencore.runs import text2image as t2i

OUT = Path(__file__).resolve().parent.parent / "bench" / "results"
GUIDANCE = (1.0, 2.0, 3.0, 5.0)
TEMPERATURE = (1.0, 0.7)


def sweep(run: Path) -> list[dict]:
    net, _ = runs.load_run(run)
    _, tv, _ = load_dataset("digits-captions", "val")
    rows = []
    for guidance in GUIDANCE:
        for temperature in TEMPERATURE:
            row = {"guidance": guidance, "temperature": temperature}
            for name, cand in (("plain", 1), ("reranked", t2i.CANDIDATES)):
                g = torch.Generator().manual_seed(0)
                images = net.generate(tv, guidance=guidance, temperature=temperature, candidates=cand, generator=g)
                row[name] = t2i.judge(images, tv)
            rows.append(row)
            print(row, flush=True)
    return rows


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def judged_row(name: str, r: dict | None) -> str:
    if r is None:
        return f"| {name} | – | – | – | – | – |"
    return (f"| {name} | {pct(r['class_accuracy'])} | {pct(r['stroke_accuracy'])} | {pct(r['slant_accuracy'])} "
            f"| {pct(r['all_accuracy'])} | {pct(r.get('clip_recall@1'))} |")


def markdown(res: dict, rows: list[dict], chosen: dict, info: dict, seconds: float, train_seconds: float) -> str:
    head = "| | class | stroke | slant | all three | CLIP recall@1 |\n|---|---:|---:|---:|---:|---:|"
    tc, ho = res["test_captions"], res["held_out_combos"]
    s = res["sampling"]
    lines = [
        "# Text to image on the captioned digits",
        "",
        f"`python examples/text2image_quality.py` ({seconds / 60:.1f} min, "
        + (f"of which training {train_seconds / 60:.1f} min" if train_seconds > 10 else "its finished run reused")
        + f", {info['device']}, commit {info['commit']}, "
        f"torch {info['torch']}). One run of `gencore train text2image` (defaults: "
        f"{res['step']} steps, best val state); the test split scored once by `gencore eval`.",
        "",
        "Judges: class, the digits classifier (`gencore.metrics.digits_classifier`); stroke and slant, the rule "
        "that wrote the captions (`gencore.data.captions.caption_attributes`) applied to the generated pixels; "
        "CLIP recall@1, an independent CLIP (seed 1, trained on the train split) ranking the image's caption "
        "first among the distinct test captions. Real test digits are judged the same way (dequantized pixels, "
        "so the rule is not exactly the one that captioned their integer levels).",
        "",
        f"## Test captions (one draw per caption; guidance {s['guidance']}, temperature "
        f"{s['temperature']}; re-ranked: best of {res['candidates']} by the model's own CLIP)",
        "",
        head,
        judged_row("generated", tc["generated"]),
        judged_row(f"generated, re-ranked (best of {res['candidates']})", tc["generated_reranked"]),
        judged_row("generated, plain sampling (guidance 1, temperature 1)", tc["plain_sampling"]),
        judged_row("real test digits", tc["real_test_digits"]),
        judged_row("chance", tc["chance"]),
        "",
        f"## Held-out combinations ({', '.join(ho['combos'])}; never in training; {ho['per_combo']} draws each)",
        "",
        head,
        judged_row("generated", ho["generated"]),
        judged_row("generated, re-ranked", ho["generated_reranked"]),
        judged_row(f"real test digits with these captions ({ho['real_test_digits_count']})", ho["real_test_digits"]),
        judged_row("chance", ho["chance"]),
        "",
        "## Caption arithmetic, then generation",
        "",
        "`T(\"a s c\") - T(\"a\") + T(\"b\")` in the re-ranker's text space (360 queries: every class, every "
        "ordered pair of stroke words with each slant, and of slant words with each stroke), decoded to the "
        "nearest of the 90 caption embeddings, drawn, judged against `\"b s c\"`.",
        "",
        head,
        judged_row("generated", res["caption_arithmetic"]["generated"]),
        judged_row("generated, re-ranked", res["caption_arithmetic"]["generated_reranked"]),
        "",
        f"The arithmetic alone decoded to the target caption for "
        f"{pct(res['caption_arithmetic']['generated']['decoded_to_target_caption'])} of the queries.",
        "",
        "## Diversity and memorization (test captions)",
        "",
        "| | near-copies | NN ratio | train on these, test on real |\n|---|---:|---:|---:|",
    ]
    for name, m in res["diversity_and_memorization"].items():
        lines.append(f"| {name.replace('_', ' ')} | {pct(m['near_copy_fraction'])} | {m['nn_ratio']:.2f} "
                     f"| {pct(m['tstr_accuracy'])} |")
    p = res["prior"]
    lines += [
        "",
        "Near-copy: closer to a training digit than 99% of held-out digits are (expected 1% for a model that "
        "does not copy); NN ratio: median distance to the nearest training digit over that of held-out digits.",
        "",
        "## The prior's perplexity (test digits, per code token; `gencore.metrics.perplexity`)",
        "",
        f"- caption-conditioned prior: **{p['perplexity_per_code']:.2f}** codes "
        f"(held-out combinations: {p['perplexity_held_out_combos']:.2f})",
        f"- unigram code frequencies of the train split: {p['unigram_perplexity_per_code']:.2f}",
        f"- uniform over the codebook: {p['uniform_perplexity_per_code']:.0f}",
        f"- the bound -log p(x | z_q) - log p(z_q | caption): {p['nll_bound_nats']:.2f} nats per digit "
        f"({p['bits_per_dim']:.3f} bits/dim)",
        "",
        "## VQ-VAE reconstructions of the test digits, judged the same way (the ceiling of the decoder)",
        "",
        head,
        judged_row("reconstructions", res["reconstruction"]),
        "",
        "## Sampling settings, chosen on the val captions (135)",
        "",
        "| guidance | temperature | class | stroke | slant | all three | re-ranked: class | stroke | slant "
        "| all three |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a, b = r["plain"], r["reranked"]
        lines.append(f"| {r['guidance']} | {r['temperature']} | {pct(a['class_accuracy'])} "
                     f"| {pct(a['stroke_accuracy'])} | {pct(a['slant_accuracy'])} | {pct(a['all_accuracy'])} "
                     f"| {pct(b['class_accuracy'])} | {pct(b['stroke_accuracy'])} | {pct(b['slant_accuracy'])} "
                     f"| {pct(b['all_accuracy'])} |")
    lines += ["", f"Best re-ranked all-three accuracy on val: guidance {chosen['guidance']}, temperature "
              f"{chosen['temperature']}" + ("" if (chosen["guidance"], chosen["temperature"]) ==
                                            (s["guidance"], s["temperature"]) else
                                            f" (NOT the eval setting {s}: update SAMPLING)") + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="examples-out/text2image")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    run = Path(args.runs) / "default"
    print(runs.train("text2image", "digits-captions", run, steps=args.steps, progress=False))
    train_seconds = time.perf_counter() - t0
    rows = sweep(run)
    chosen = max(rows, key=lambda r: (r["reranked"]["all_accuracy"], r["plain"]["all_accuracy"]))
    res = runs.evaluate(run)
    seconds = time.perf_counter() - t0
    info = machine_info(torch.device("cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "text2image-quality.json").write_text(json.dumps({"eval": res, "val_sweep": rows, "machine": info,
                                                             "seconds": seconds}, indent=2))
    (out / "text2image-quality.md").write_text(markdown(res, rows, chosen, info, seconds, train_seconds))
    print((out / "text2image-quality.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
