#!/usr/bin/env python
"""Auto-encoders against PCA on digits, at latent sizes r = 2, 4, 8, 16: held-out
reconstruction error, written to bench/results/ae-vs-pca.md.

PCA is the best *linear* auto-encoder (a linear AE trained by gradient descent should
match it); non-linear MLP and conv auto-encoders of the same r should beat it.

Data: digits from ``gencore.data.load_dataset`` (dequantized, values in [0, 1)); models are
fitted on the train split (1347 examples) and evaluated on the test split (450). Error: squared
error summed over the 64 pixels, mean over examples.

    python examples/autoencoder_vs_pca.py              # about 2 minutes on 2 shared cores
    python examples/autoencoder_vs_pca.py --steps 500  # quick look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gencore.benchmarks.harness import machine_info
from gencore.data import load_dataset
from gencore.models import PCA, Autoencoder
from gencore.train import fit

OUT = Path(__file__).resolve().parent.parent / "bench" / "results"

MODELS = {
    "linear AE": dict(features=64, hidden=(), activation=None),
    "MLP AE": dict(features=64, hidden=(256, 128), activation="relu"),
    "conv AE": dict(features=(1, 8, 8), hidden=(32, 64), kind="conv", activation="relu"),
}
LR = {"linear AE": 2e-2, "MLP AE": 1e-3, "conv AE": 2e-3}
BATCH = {"linear AE": 256, "MLP AE": 64, "conv AE": 64}


def held_out_error(model, x: torch.Tensor) -> float:
    with torch.no_grad():
        return model.reconstruction_error(x).mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="optimizer steps per auto-encoder")
    ap.add_argument("--latent", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--out", type=Path, default=OUT / "ae-vs-pca.md")
    args = ap.parse_args()
    torch.set_num_threads(1)  # small models: intra-op threads only add contention

    x, _ = load_dataset("digits", "train")
    xt, _ = load_dataset("digits", "test")
    rows = []
    t_start = time.perf_counter()
    for r in args.latent:
        pca = PCA(r).fit(x)
        row = {"r": r, "PCA": held_out_error(pca, xt), "PCA train": held_out_error(pca, x),
               "variance": pca.explained_variance_ratio_.sum().item()}
        for name, cfg in MODELS.items():
            torch.manual_seed(0)
            ae = Autoencoder(latent_dim=r, **cfg)
            shape = (-1, *ae.event_shape)
            t0 = time.perf_counter()
            fit(ae, x.reshape(shape), steps=args.steps, batch_size=BATCH[name], lr=LR[name], schedule="cosine",
                progress=False)
            row[name] = held_out_error(ae, xt.reshape(shape))
            row[name + " train"] = held_out_error(ae, x.reshape(shape))
            row[name + " s"] = time.perf_counter() - t0
        rows.append(row)
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)

    info = machine_info(torch.device("cpu"))
    lines = [f"Device: {info['device']} · torch {info['torch']} · commit {info['commit']} · {info['date']} · "
             f"{args.steps} steps per auto-encoder, total {(time.perf_counter() - t_start) / 60:.1f} min", "",
             "Held-out reconstruction error on digits (test split, 450 examples; squared error summed over the "
             "64 pixels in [0, 1), mean per example). Models fitted on the train split (1347).", "",
             "| r | PCA variance kept | PCA | linear AE | MLP AE | conv AE | MLP AE / PCA | conv AE / PCA |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['r']} | {row['variance']:.3f} | {row['PCA']:.4f} | {row['linear AE']:.4f} | "
                     f"{row['MLP AE']:.4f} | {row['conv AE']:.4f} | {row['MLP AE'] / row['PCA']:.2f} | "
                     f"{row['conv AE'] / row['PCA']:.2f} |")
    lines += ["", "Training error (train split), the linear AE against PCA's optimum:", "",
              "| r | PCA | linear AE | linear AE / PCA | MLP AE | conv AE |", "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['r']} | {row['PCA train']:.4f} | {row['linear AE train']:.4f} | "
                     f"{row['linear AE train'] / row['PCA train']:.4f} | {row['MLP AE train']:.4f} | "
                     f"{row['conv AE train']:.4f} |")
    lines += ["", "Models: linear AE = Linear(64, r) / Linear(r, 64), lr 2e-2, batch 256; MLP AE = "
              "64-256-128-r-128-256-64 ReLU, lr 1e-3, batch 64; conv AE = two 3x3 stride-2 convs (32, 64 "
              "channels) + linear, mirrored with transposed convs, lr 2e-3, batch 64. AdamW, cosine schedule, "
              "seed 0, no early stopping."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
