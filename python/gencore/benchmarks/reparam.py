"""Benchmark of ``gencore.ops.reparameterize`` against the pure-PyTorch reference.

Providers: ``gencore`` (the fused op: Philox noise in the kernel, KL fused, eps
regenerated in backward), ``eager`` (:func:`gencore.reference.reparameterize`:
``mu + exp(0.5 logvar) * randn_like(mu)`` plus the closed-form KL) and ``compile`` (the
same reference under ``torch.compile``). Modes: forward, backward (gradients w.r.t. mu
and logvar of z and kl), full. Cases are ``(B, D)`` or ``(B, D, n_samples)``; ``"prior"``
last in a case adds a learned prior (``prior_mu``, ``prior_logvar``: the KL of a
hierarchical VAE's layer, gradients also w.r.t. the prior). On CUDA the achieved
bandwidth of the forward pass is set against a device-to-device copy.
"""

from __future__ import annotations

import torch

from gencore import ops, reference
from gencore.benchmarks.harness import Measurement, attach_bandwidth, measure_op, op_bench_main

CASES = [(256, 32), (65536, 64), (4096, 1024), (4096, 64, 64), (256, 32, "prior"), (65536, 64, "prior"),
         (4096, 1024, "prior")]
QUICK_CASES = [(256, 32), (4096, 256), (4096, 256, "prior")]


def _providers():
    compiled = torch.compile(reference.reparameterize, dynamic=False)
    return {"gencore": ops.reparameterize, "eager": reference.reparameterize, "compile": compiled}


def run(device: str = "cpu", dtype: torch.dtype = torch.float32, cases=CASES, reps: int = 25):
    dev = torch.device(device)
    providers = _providers()
    rows: list[Measurement] = []
    for case_shape in cases:
        b, d = case_shape[:2]
        prior = case_shape[-1] == "prior"
        extra = [c for c in case_shape[2:] if c != "prior"]
        k = extra[0] if extra else None
        case = f"{b}×{d}" + (f", {k} samples" if k else "") + (", learned prior" if prior else "")
        gen = torch.Generator(device="cpu").manual_seed(0)
        mu = torch.randn(b, d, generator=gen).to(dev, dtype).requires_grad_()
        lv = (0.3 * torch.randn(b, d, generator=gen)).to(dev, dtype).requires_grad_()
        inputs = [mu, lv]
        kw = {}
        if prior:
            pm = torch.randn(b, d, generator=gen).to(dev, dtype).requires_grad_()
            pl = (0.3 * torch.randn(b, d, generator=gen)).to(dev, dtype).requires_grad_()
            inputs += [pm, pl]
            kw = {"prior_mu": pm, "prior_logvar": pl}
        gz = torch.randn((k, b, d) if k else (b, d), generator=gen).to(dev, dtype)
        gk = torch.randn(b, generator=gen).to(dev, dtype)
        case_rows = measure_op(case, providers, lambda f: f(mu, lv, n_samples=k, **kw), inputs, (gz, gk), dev, reps)
        rows += case_rows
        # forward reads mu and logvar (and the prior) and writes z (k samples).
        attach_bandwidth(case_rows, (len(inputs) + (k or 1)) * mu.numel() * mu.element_size(), gz)
    return rows


def main(argv=None) -> int:
    return op_bench_main(argv, doc=__doc__, name="reparam", run=run, cases=CASES, quick_cases=QUICK_CASES)


if __name__ == "__main__":
    raise SystemExit(main())
