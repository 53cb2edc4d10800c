"""``gencore demo``: the library working end to end on embedded data.

1. The fused affine-coupling op inside a 16-layer coupling stack: exact inversion
   and a log-determinant equal to log|det J| of the full Jacobian.
2. A coupling-layer flow trained by maximum likelihood on the embedded digits,
   evaluated on the held-out split in nats and bits/dim.
3. Benchmark ratios of the fused op against eager PyTorch and torch.compile.

Model families that later releases add (VAE, GAN, SimCLR, CLIP, ...) join this list.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from gencore.data import DIGITS_LEVELS, load_dataset
from gencore.nn import MLP, AffineCoupling


def _coupling_stack(d: int, depth: int, hidden: int, zero_init: bool) -> nn.ModuleList:
    layers = []
    for i in range(depth):
        n_a = (d + 1) // 2 if i % 2 == 0 else d // 2
        cond = MLP(n_a, 2 * (d - n_a), hidden=(hidden, hidden), zero_init=zero_init)
        layers.append(AffineCoupling(d, cond, mask="alternate", swap=i % 2 == 1))
    return nn.ModuleList(layers)


class _DemoFlow(nn.Module):
    """Standardization, then coupling layers, then N(0, I): log p(x) in nats."""

    def __init__(self, mean, std, depth=8, hidden=128):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("log_std", std.log())
        self.layers = _coupling_stack(mean.numel(), depth, hidden, zero_init=True)

    def log_prob(self, x):
        z = (x - self.mean) * torch.exp(-self.log_std)
        logdet = -self.log_std.sum().expand(x.shape[0])
        for layer in self.layers:
            z, ld = layer(z)
            logdet = logdet + ld
        base = -0.5 * (z ** 2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
        return base + logdet


def _bits_per_dim(nll_nats: float, d: int) -> float:
    return (nll_nats + d * math.log(DIGITS_LEVELS)) / (d * math.log(2))


def section_inversion() -> None:
    print("== 1. fused affine coupling: exact inversion and log-determinant ==")
    torch.manual_seed(0)
    d = 11
    layers = _coupling_stack(d, 16, 32, zero_init=False)
    x = torch.randn(256, d)
    with torch.no_grad():
        y, total = x, torch.zeros(256)
        for layer in layers:
            y, ld = layer(y)
            total += ld
        back, total_inv = y, torch.zeros(256)
        for layer in reversed(layers):
            back, ld = layer.inverse(back)
            total_inv += ld
    print(f"16 layers, D={d}, B=256, float32: max |inverse(forward(x)) - x| = "
          f"{(back - x).abs().max().item():.2e}, max |logdet + inverse logdet| = "
          f"{(total + total_inv).abs().max().item():.2e}")
    layers64 = layers.double()
    xi = x[:1].double()

    def f(v):
        for layer in layers64:
            v, _ = layer(v)
        return v

    jac = torch.autograd.functional.jacobian(lambda v: f(v[None])[0], xi[0])
    exact = torch.linalg.slogdet(jac).logabsdet.item()
    fused = 0.0
    with torch.no_grad():
        v = xi
        for layer in layers64:
            v, ld = layer(v)
            fused += ld.item()
    print(f"log|det J| of the stack at one point (float64): fused {fused:.10f}, "
          f"slogdet of the autograd Jacobian {exact:.10f}")


def section_flow(steps: int, eval_every: int = 50, patience: int = 4) -> dict:
    """Maximum likelihood with early stopping on a validation part of the train split.

    1347 digits in 64 dimensions are few for a flow: held-out NLL starts rising after a
    few hundred steps while the training NLL keeps falling. The model kept is the one
    with the best validation NLL; the test split is scored once, at the end.
    """
    print("\n== 2. coupling flow on the embedded digits (64-D, 1347 train / 450 test) ==")
    torch.manual_seed(0)
    x_all, _ = load_dataset("digits", "train")
    x_test, _ = load_dataset("digits", "test")
    perm = torch.randperm(x_all.shape[0], generator=torch.Generator().manual_seed(0))
    x_train, x_val = x_all[perm[200:]], x_all[perm[:200]]
    d = x_train.shape[1]
    # One global mean and scale: per-pixel scaling would blow up the almost-constant
    # border pixels, which the flow then over-sharpens.
    model = _DemoFlow(x_train.mean().expand(d).clone(), x_train.std().expand(d).clone())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def nll(x):
        with torch.no_grad():
            return -model.log_prob(x).mean().item()

    nll0 = nll(x_test)
    best_val, best_state, best_step, waited = math.inf, None, 0, 0
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        idx = torch.randint(0, x_train.shape[0], (128,), generator=g)
        loss = -model.log_prob(x_train[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            val = nll(x_val)
            if val < best_val:
                best_val, best_step, waited = val, step, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
                if waited >= patience:
                    break
    elapsed = time.perf_counter() - t0
    model.load_state_dict(best_state)
    test = nll(x_test)
    print(f"{step} Adam steps (batch 128, {elapsed:.1f} s); kept step {best_step}, the best "
          f"validation NLL ({best_val:.1f} nats)")
    print(f"test NLL: {nll0:.1f} -> {test:.1f} nats/example; bits/dim {_bits_per_dim(nll0, d):.3f} -> "
          f"{_bits_per_dim(test, d):.3f} (uniform over the 17 levels: {math.log2(DIGITS_LEVELS):.3f})")
    return {"test_nll_nats": test, "bits_per_dim": _bits_per_dim(test, d), "best_step": best_step}


def section_bench(quick: bool, out: Path) -> None:
    print("\n== 3. fused op vs eager PyTorch and torch.compile ==")
    from gencore.benchmarks import coupling

    argv = ["--quick"] if quick else []
    coupling.main(argv + ["--out", str(out)])


def main(quick: bool = False, out: str | Path = "demo-out") -> int:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    section_inversion()
    section_flow(steps=150 if quick else 1500)
    section_bench(quick, out)
    print(f"\nresults written to {out}/")
    return 0
