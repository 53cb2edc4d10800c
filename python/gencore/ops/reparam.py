"""Reparameterized Gaussian sampling with in-kernel Philox RNG and a fused KL term.

``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` drawn inside the kernel from a
counter-based Philox4x32-10 stream, and ``kl = KL(N(mu, diag exp(logvar)) || N(0, I))``
per example, in one pass over memory. The backward pass regenerates ``eps`` from the
stream's ``(seed, offset)``: no ``eps`` tensor is ever stored. The schema is in
``csrc/registration.cpp``, the kernels in ``csrc/reparam/``, the stream layout in
``csrc/common/philox.h``.
"""

from __future__ import annotations

import torch

from gencore.ops._autograd import first_order, transforms_active
from gencore.ops._errors import typed

__all__ = ["reparameterize", "draw_rng_state"]

_op = typed(torch.ops.gencore.reparameterize.default)
_op_backward = torch.ops.gencore.reparameterize_backward

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def draw_rng_state(device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws a Philox ``(seed, offset)`` pair from ``generator`` as an int64 tensor of shape
    ``(2,)`` on ``device`` (default: torch's default generator of that device, so
    ``torch.manual_seed`` reproduces it). On CUDA it is drawn on the device: no sync."""
    device = torch.device(device)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"gencore: generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"gencore: generator is on {generator.device}, the tensors on {device}: "
            "pass a generator of the tensors' device"
        )
    return torch.randint(_INT64_MIN, _INT64_MAX, (2,), dtype=torch.int64, device=device, generator=generator)


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    return_log_q: bool = False,
):
    """Draws ``z ~ N(mu, diag(exp(logvar)))`` by reparameterization, with its KL to N(0, I).

    * ``z = mu + exp(0.5 * logvar) * eps``, ``eps ~ N(0, I)`` from Philox4x32-10;
    * ``kl = 0.5 * sum_{non-batch dims}(mu^2 + exp(logvar) - 1 - logvar)`` in nats.

    Differentiable in ``mu`` and ``logvar`` (pathwise gradients through ``z`` with ``eps``
    fixed, exact gradients of ``kl``). ``eps`` is regenerated in backward, not stored.

    Args:
        mu: ``(B, ...)`` means. CPU: float32/float64; CUDA: also float16/bfloat16
            (float32 math).
        logvar: ``(B, ...)`` log-variances, shape/dtype/device of ``mu``.
        n_samples: ``None`` for one sample of ``mu``'s shape, or ``k >= 1`` for ``k``
            samples stacked in a new leading dimension ``(k, B, ...)`` (importance
            weighting, IWAE).
        generator: source of the stream's ``(seed, offset)``; default torch's default
            generator of ``mu``'s device, so ``torch.manual_seed`` reproduces samples.
        return_log_q: also return ``log q(z | x) = log N(z; mu, exp(logvar))`` per sample
            and example, computed from ``eps`` (accurate even when ``exp(logvar/2) << |mu|``,
            where ``(z - mu) / sigma`` would cancel). Its gradient holds ``eps`` fixed.

    Returns:
        ``(z, kl)``, or ``(z, kl, log_q)`` with ``return_log_q``: ``z`` of shape
        ``mu.shape`` or ``(k, *mu.shape)``, ``kl`` of shape ``(B,)``, ``log_q`` of shape
        ``(B,)`` or ``(k, B)``, all in ``mu``'s dtype; ``kl`` and ``log_q`` in nats.

    Raises:
        ValueError: shapes or devices differ, no batch dimension, ``n_samples < 1``,
            generator on another device.
        TypeError: integer inputs, dtypes differ, or ``generator`` not a torch.Generator.
    """
    if n_samples is not None:
        if not isinstance(n_samples, int) or isinstance(n_samples, bool):
            raise TypeError(f"gencore: n_samples must be an int or None, got {type(n_samples).__name__}")
        if n_samples < 1:
            raise ValueError(f"gencore: n_samples must be >= 1 (or None), got {n_samples}")
    if not isinstance(mu, torch.Tensor) or not isinstance(logvar, torch.Tensor):
        raise TypeError("gencore: mu and logvar must be tensors")
    if not mu.dtype.is_floating_point:
        raise TypeError(f"gencore: mu must be a floating-point tensor, got {mu.dtype}")
    transformed = transforms_active("gencore.ops.reparameterize")
    state = draw_rng_state(mu.device, generator)
    if transformed:
        z, kl, log_q = _Reparameterize.apply(mu, logvar, state, n_samples or 0, bool(return_log_q))
    else:
        z, kl, log_q = _op(mu, logvar, state, n_samples=n_samples or 0, with_log_q=bool(return_log_q))
    return (z, kl, log_q) if return_log_q else (z, kl)


def _check_inputs_fake(mu, logvar, rng_state, n_samples):
    # Mirrors check_reparameterize_inputs in csrc/reparam/reparam.h for tracing.
    torch._check_value(mu.dim() >= 1, lambda: f"gencore: mu must have a batch dimension, got {mu.shape}")
    torch._check_type(mu.dtype.is_floating_point, lambda: f"gencore: mu must be floating, got {mu.dtype}")
    torch._check_value(logvar.shape == mu.shape, lambda: "gencore: logvar must have the shape of mu")
    torch._check_type(logvar.dtype == mu.dtype, lambda: "gencore: mu and logvar must have the same dtype")
    torch._check_value(logvar.device == mu.device, lambda: "gencore: mu and logvar must be on one device")
    torch._check_value(rng_state.device == mu.device,
                       lambda: f"gencore: rng_state must be on mu's device ({mu.device}), got {rng_state.device}")
    torch._check_type(rng_state.dtype == torch.int64, lambda: "gencore: rng_state must be int64")
    torch._check_value(rng_state.shape == (2,), lambda: "gencore: rng_state must have shape (2,)")
    torch._check_value(n_samples >= 0, lambda: f"gencore: n_samples must be >= 1, got {n_samples}")


@torch.library.register_fake("gencore::reparameterize")
def _(mu, logvar, rng_state, *, n_samples=0, with_log_q=False):
    _check_inputs_fake(mu, logvar, rng_state, n_samples)
    lead = (n_samples,) if n_samples > 0 else ()
    z = mu.new_empty((*lead, *mu.shape))
    kl = mu.new_empty(mu.shape[:1])
    log_q = mu.new_empty((*lead, mu.shape[0])) if with_log_q else mu.new_empty((0,))
    return z, kl, log_q


@torch.library.register_fake("gencore::reparameterize_backward")
def _(grad_z, grad_kl, grad_log_q, mu, logvar, rng_state, *, n_samples):
    _check_inputs_fake(mu, logvar, rng_state, n_samples)
    for name, t in (("grad_z", grad_z), ("grad_kl", grad_kl), ("grad_log_q", grad_log_q)):
        torch._check_value(t.device == mu.device,
                           lambda: f"gencore: {name} must be on mu's device ({mu.device}), got {t.device}")
    return torch.empty_like(mu, memory_format=torch.contiguous_format), torch.empty_like(
        mu, memory_format=torch.contiguous_format
    )


def _setup_context(ctx, inputs, keyword_only_inputs, output):
    mu, logvar, rng_state = inputs
    ctx.n_samples = keyword_only_inputs.get("n_samples", 0)
    ctx.with_log_q = keyword_only_inputs.get("with_log_q", False)
    # The inputs and the 16-byte stream state: eps is regenerated in backward.
    ctx.save_for_backward(mu, logvar, rng_state)


@first_order("gencore.ops.reparameterize")
def _backward(ctx, grad_z, grad_kl, grad_log_q):
    mu, logvar, rng_state = ctx.saved_tensors
    lead = (ctx.n_samples,) if ctx.n_samples > 0 else ()
    if grad_z is None:
        grad_z = mu.new_zeros((*lead, *mu.shape))
    if grad_kl is None:
        grad_kl = mu.new_zeros(mu.shape[:1])
    if grad_log_q is None or not ctx.with_log_q:
        grad_log_q = mu.new_empty((0,))
    grad_mu, grad_logvar = _op_backward(
        grad_z, grad_kl, grad_log_q, mu, logvar, rng_state, n_samples=ctx.n_samples
    )
    return grad_mu, grad_logvar, None


torch.library.register_autograd("gencore::reparameterize", _backward, setup_context=_setup_context)


class _Reparameterize(torch.autograd.Function):
    """The same autograd as a setup_context-style Function, for torch.func transforms."""

    generate_vmap_rule = True

    @staticmethod
    def forward(mu, logvar, rng_state, n_samples, with_log_q):
        with torch._C._AutoDispatchBelowAutograd():
            return _op(mu, logvar, rng_state, n_samples=n_samples, with_log_q=with_log_q)

    @staticmethod
    def setup_context(ctx, inputs, output):
        mu, logvar, rng_state, n_samples, with_log_q = inputs
        _setup_context(ctx, (mu, logvar, rng_state), {"n_samples": n_samples, "with_log_q": with_log_q}, output)

    @staticmethod
    def backward(ctx, grad_z, grad_kl, grad_log_q):
        return (*_backward(ctx, grad_z, grad_kl, grad_log_q), None, None)
