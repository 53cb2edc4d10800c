#!/usr/bin/env python
"""The error of the SigLIP loss's bfloat16 gradients on the contrastive GEMM path, with its
weights V = scale W given to the products rounded once or as hi and lo, modelled in plain
PyTorch (csrc/contrastive/contrastive_cuda.cu, the GEMM path's notes; docs/ops.md quotes
the result):

    python tools/half_weights_error.py

The model follows the kernels' arithmetic: bfloat16 features, float32 logits and weights,
V rounded to bfloat16 once (``single``) or as hi + lo (``split``), products accumulated in
float32, gradients rounded to bfloat16 on return. Eager is gencore.reference's loss run in
bfloat16 under autograd. Each error is the largest absolute error of a gradient against the
float32 reference on the same rounded features, divided by the emulated tests' bound (twice
the error of rounding that reference to bfloat16, plus 1e-5 (1 + its largest value)); the
worst over the shapes of the emulated tests and a few more, at SigLIP's initialisation
(scale 10, bias -10), is printed per form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gencore import reference as R


def modelled_gradients(q, k, scale, bias, planes):
    """grad of the mean sigmoid loss w.r.t. q and k as the GEMM path computes them."""
    qf, kf = q.float(), k.float()
    logits = scale * (qf @ kf.T) + bias
    z = -torch.ones_like(logits)
    z.fill_diagonal_(1.0)
    v = scale * (-z * torch.sigmoid(-z * logits) / q.shape[0])
    hi = v.to(torch.bfloat16)
    vr = hi.float() if planes == 1 else hi.float() + (v - hi.float()).to(torch.bfloat16).float()
    return (vr @ kf).to(torch.bfloat16), (vr.T @ qf).to(torch.bfloat16)


def ratio(got, exact):
    err = (got.float() - exact).abs().max().item()
    rounding = (exact.to(torch.bfloat16).float() - exact).abs().max().item()
    return err / (2 * rounding + 1e-5 * (1 + exact.abs().max().item()))


def main() -> int:
    worst = {"eager": 0.0, "single": 0.0, "split": 0.0}
    for n in (2, 5, 17, 33, 64, 100, 257, 1000):
        for d in (1, 8, 33, 64, 256):
            for seed in range(3):
                g = torch.Generator().manual_seed(seed)
                q = F.normalize(torch.randn(n, d, generator=g), dim=1).bfloat16()
                k = F.normalize(torch.randn(n, d, generator=g), dim=1).bfloat16()
                x, y = q.float().requires_grad_(), k.float().requires_grad_()
                exact = torch.autograd.grad(R.sigmoid_contrastive_loss(x, y, 10.0, -10.0), (x, y))
                xb, yb = q.clone().requires_grad_(), k.clone().requires_grad_()
                eager = torch.autograd.grad(R.sigmoid_contrastive_loss(xb, yb, 10.0, -10.0), (xb, yb))
                forms = {"eager": eager, "single": modelled_gradients(q, k, 10.0, -10.0, 1),
                         "split": modelled_gradients(q, k, 10.0, -10.0, 2)}
                for name, grads in forms.items():
                    worst[name] = max(worst[name], *(ratio(a, e) for a, e in zip(grads, exact)))
    for name, r in worst.items():
        print(f"{name:>6}: worst error {r:.2f} x the bound")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
