#!/usr/bin/env python
"""CLIP with the softmax loss against CLIP with the sigmoid (SigLIP) loss on digits-captions:
the same encoders, data, steps, batch and seeds; only the loss differs. Written to
bench/results/siglip-quality.md (+ .json).

Each run is ``gencore train clip --data digits-captions [--loss siglip]`` with the defaults
(1500 steps, batch 256), scored once on the test split by ``gencore eval`` (zero-shot
classification through class-word prompts, caption retrieval both ways). Three seeds per
loss; the table gives each seed and the median.

    python examples/siglip_quality.py            # about 5 minutes on 2 cores
    python examples/siglip_quality.py --quick    # 200 steps, one seed
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gencore import runs
from gencore.benchmarks.harness import machine_info
from gencore.runs.contrastive import STEPS

OUT = Path(__file__).resolve().parent.parent / "bench" / "results"
LOSSES = ("softmax", "siglip")
METRICS = (("zero-shot", lambda r: r["zero_shot_accuracy"]),
           ("zero-shot, prompt ensemble", lambda r: r["zero_shot_accuracy_ensemble"]),
           ("image->text R@1", lambda r: r["retrieval"]["image_to_text"]["recall@1"]),
           ("text->image R@1", lambda r: r["retrieval"]["text_to_image"]["recall@1"]),
           ("image->text R@5", lambda r: r["retrieval"]["image_to_text"]["recall@5"]),
           ("linear probe", lambda r: r["linear_probe_accuracy"]))


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def markdown(results: dict, info: dict, steps: int, seeds: list[int], total_s: float) -> str:
    chance = next(iter(results.values()))[0]["retrieval"]["chance"]["recall@1"]
    lines = ["# CLIP: softmax loss against sigmoid (SigLIP) loss on digits-captions", "",
             f"`python examples/siglip_quality.py` ({total_s / 60:.1f} min, {info['device']}, torch {info['torch']}, "
             f"commit {info['commit']}). `gencore train clip --data digits-captions [--loss siglip]`: "
             f"{steps} steps, batch 256, seeds {', '.join(map(str, seeds))}; the same conv image encoder, token "
             "encoder (caption-token dropout 0.3) and 32-dim embedding; only the loss differs. "
             "Scored once on the test split (450 digits) by `gencore eval`.", "",
             f"Chance: zero-shot 10%, caption retrieval recall@1 {pct(chance)} (a retrieved item counts when its "
             "caption equals the query's).", "",
             "| loss | seed | " + " | ".join(m for m, _ in METRICS) + " | learned scale | learned bias | train s |",
             "|---|---:|" + "---:|" * (len(METRICS) + 3)]
    for loss in LOSSES:
        for seed, r in zip(seeds, results[loss]):
            bias = f"{r['logit_bias']:.2f}" if "logit_bias" in r else "-"
            lines.append(f"| {loss} | {seed} | " + " | ".join(pct(f(r)) for _, f in METRICS)
                         + f" | {r['logit_scale']:.1f} | {bias} | {r['train_seconds']:.0f} |")
    for loss in LOSSES:
        med = [statistics.median(f(r) for r in results[loss]) for _, f in METRICS]
        lines.append(f"| **{loss}, median** | | " + " | ".join(f"**{pct(v)}**" for v in med) + " | | | |")
    lines += ["", "Init: softmax at scale 1/0.07 (CLIP's); sigmoid at scale 10, bias -10 (SigLIP's). Both "
              "scales are clamped at 100."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 steps, one seed (a smoke run)")
    args = ap.parse_args()
    steps, seeds = (200, [0]) if args.quick else (STEPS["clip"], [0, 1, 2])
    t0 = time.perf_counter()
    results: dict = {loss: [] for loss in LOSSES}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for loss in LOSSES:  # interleaved: machine noise hits both losses alike
                out = Path(tmp) / f"{loss}-{seed}"
                t1 = time.perf_counter()
                runs.train("clip", "digits-captions", out, steps=steps, seed=seed, progress=False,
                           config={"loss": loss})
                train_s = time.perf_counter() - t1
                res = runs.evaluate(out)
                res["train_seconds"] = train_s
                results[loss].append(res)
                print(f"{loss} seed {seed}: zero-shot {pct(res['zero_shot_accuracy'])}, image->text R@1 "
                      f"{pct(res['retrieval']['image_to_text']['recall@1'])} ({train_s:.0f} s)", flush=True)
    total = time.perf_counter() - t0
    info = machine_info(torch.device("cpu"))
    if args.quick:
        print(markdown(results, info, steps, seeds, total))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "siglip-quality.md").write_text(markdown(results, info, steps, seeds, total))
    (OUT / "siglip-quality.json").write_text(json.dumps(
        {"machine": info, "steps": steps, "seeds": seeds, "total_seconds": total, "results": results}, indent=1,
        default=str))
    print(f"wrote {OUT / 'siglip-quality.md'}")


if __name__ == "__main__":
    main()
