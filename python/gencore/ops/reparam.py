"""Reparameterized Gaussian sampling with in-kernel Philox RNG and a fused KL term.

``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` drawn inside the kernel from a
counter-based Philox4x32-10 stream, and ``kl = KL(N(mu, diag exp(logvar)) || prior)``
per example, with the prior N(0, I) or a learned ``N(prior_mu, diag exp(prior_logvar))``
(the layers of a hierarchical VAE), in one pass over memory. The backward pass regenerates ``eps`` from the
stream's ``(seed, offset)``: no ``eps`` tensor is ever stored. The schema is in
``csrc/registration.cpp``, the kernels in ``csrc/reparam/``, the stream layout in
``csrc/common/philox.h``.
"""

from __future__ import annotations

import torch

from gencore._arguments import check_device, check_generator, int_in
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
    device = check_device(device, "gencore: device")
    check_generator(generator, "gencore: generator")
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
    prior_mu: torch.Tensor | None = None,
    prior_logvar: torch.Tensor | None = None,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    return_log_q: bool = False,
):
    """Draws ``z ~ N(mu, diag(exp(logvar)))`` by reparameterization, with its KL to the prior.

    * ``z = mu + exp(0.5 * logvar) * eps``, ``eps ~ N(0, I)`` from Philox4x32-10;
    * ``kl = KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar))``
      ``= 0.5 * sum_{non-batch dims}(e^x - 1 - x + (mu - prior_mu)^2 e^-prior_logvar)``,
      ``x = logvar - prior_logvar``, in nats; without a prior it is the KL to N(0, I),
      ``0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``.

    ``e^x - 1 - x`` is evaluated without cancellation (a series near 0), so the KL of
    nearly equal Gaussians keeps its digits, and nothing overflows for log-variance
    differences of +-30 and beyond (float32: up to about +-80).

    Differentiable in ``mu``, ``logvar``, ``prior_mu`` and ``prior_logvar`` (pathwise
    gradients through ``z`` with ``eps`` fixed, exact gradients of ``kl``). ``eps`` is
    regenerated in backward, not stored.

    Args:
        mu: ``(B, ...)`` means. CPU: float32/float64; CUDA: also float16/bfloat16
            (float32 math).
        logvar: ``(B, ...)`` log-variances, shape/dtype/device of ``mu``.
        prior_mu: ``(B, ...)`` means of the prior (shape/dtype/device of ``mu``), e.g. the
            top-down prior ``p(z_l | z_{l+1})`` of a hierarchical VAE; ``None`` is 0.
        prior_logvar: ``(B, ...)`` log-variances of the prior; ``None`` is 0 (unit
            variance). With both ``None`` the prior is N(0, I).
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
        TypeError: integer inputs, dtypes differ, a prior that is not a tensor, or
            ``generator`` not a torch.Generator.

    Example:
        >>> mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
        >>> z, kl = reparameterize(mu, logvar, prior_mu=torch.ones(2, 3))
        >>> kl  # 0.5 * 3 * (0 - 1)^2
        tensor([1.5000, 1.5000])
    """
    if n_samples is not None:
        if (count := int_in(n_samples)) is None:
            raise TypeError(f"gencore: n_samples must be an int or None, got {type(n_samples).__name__}")
        n_samples = count
        if not 1 <= n_samples <= 0xFFFFFFFF:  # a 32-bit Philox counter word numbers the samples
            raise ValueError(f"gencore: n_samples must be in [1, 2^32 - 1] (or None), got {n_samples}")
    if not isinstance(mu, torch.Tensor) or not isinstance(logvar, torch.Tensor):
        raise TypeError("gencore: mu and logvar must be tensors")
    if not mu.dtype.is_floating_point:
        raise TypeError(f"gencore: mu must be a floating-point tensor, got {mu.dtype}")
    for name, p in (("prior_mu", prior_mu), ("prior_logvar", prior_logvar)):
        if p is not None and not isinstance(p, torch.Tensor):
            raise TypeError(f"gencore: {name} must be a tensor or None, got {type(p).__name__}")
    if (prior_mu is None) != (prior_logvar is None):
        # The kernel takes both or neither: the missing one is 0 (mean 0 or unit variance),
        # made like mu, so that the op's checks name the given one if it does not match mu.
        zeros = torch.zeros_like(mu, memory_format=torch.contiguous_format)
        prior_mu = zeros if prior_mu is None else prior_mu
        prior_logvar = zeros if prior_logvar is None else prior_logvar
    transformed = transforms_active("gencore.ops.reparameterize", mu, logvar, prior_mu, prior_logvar)
    state = draw_rng_state(mu.device, generator)
    if transformed:
        z, kl, log_q = _Reparameterize.apply(mu, logvar, state, prior_mu, prior_logvar, n_samples or 0,
                                             bool(return_log_q))
    else:
        z, kl, log_q = _op(mu, logvar, state, prior_mu, prior_logvar, n_samples=n_samples or 0,
                           with_log_q=bool(return_log_q))
    return (z, kl, log_q) if return_log_q else (z, kl)


def _check_inputs_fake(mu, logvar, rng_state, n_samples, prior_mu=None, prior_logvar=None):
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
    torch._check_value((prior_mu is None) == (prior_logvar is None),
                       lambda: "gencore: prior_mu and prior_logvar must be given together")
    for name, p in (("prior_mu", prior_mu), ("prior_logvar", prior_logvar)):
        if p is not None:
            torch._check_value(p.shape == mu.shape, lambda: f"gencore: {name} must have the shape of mu")
            torch._check_type(p.dtype == mu.dtype, lambda: f"gencore: mu and {name} must have the same dtype")
            torch._check_value(p.device == mu.device,
                               lambda: f"gencore: mu and {name} must be on the same device: got {mu.device} and {p.device}")


@torch.library.register_fake("gencore::reparameterize")
def _(mu, logvar, rng_state, prior_mu=None, prior_logvar=None, *, n_samples=0, with_log_q=False):
    _check_inputs_fake(mu, logvar, rng_state, n_samples, prior_mu, prior_logvar)
    lead = (n_samples,) if n_samples > 0 else ()
    z = mu.new_empty((*lead, *mu.shape))
    kl = mu.new_empty(mu.shape[:1])
    log_q = mu.new_empty((*lead, mu.shape[0])) if with_log_q else mu.new_empty((0,))
    return z, kl, log_q


@torch.library.register_fake("gencore::reparameterize_backward")
def _(grad_z, grad_kl, grad_log_q, mu, logvar, rng_state, prior_mu=None, prior_logvar=None, *, n_samples):
    _check_inputs_fake(mu, logvar, rng_state, n_samples, prior_mu, prior_logvar)
    for name, t in (("grad_z", grad_z), ("grad_kl", grad_kl), ("grad_log_q", grad_log_q)):
        torch._check_value(t.device == mu.device,
                           lambda: f"gencore: {name} must be on mu's device ({mu.device}), got {t.device}")
    like = (lambda: torch.empty_like(mu, memory_format=torch.contiguous_format))
    prior_grads = (like(), like()) if prior_mu is not None else (mu.new_empty((0,)), mu.new_empty((0,)))
    return like(), like(), *prior_grads


def _setup_context(ctx, inputs, keyword_only_inputs, output):
    mu, logvar, rng_state, *prior = inputs
    prior_mu, prior_logvar = (prior + [None, None])[:2]
    ctx.n_samples = keyword_only_inputs.get("n_samples", 0)
    ctx.with_log_q = keyword_only_inputs.get("with_log_q", False)
    ctx.has_prior = prior_mu is not None
    # The inputs and the 16-byte stream state: eps is regenerated in backward.
    if ctx.has_prior:
        ctx.save_for_backward(mu, logvar, rng_state, prior_mu, prior_logvar)
    else:
        ctx.save_for_backward(mu, logvar, rng_state)


@first_order("gencore.ops.reparameterize")
def _backward(ctx, grad_z, grad_kl, grad_log_q):
    mu, logvar, rng_state, *prior = ctx.saved_tensors
    prior_mu, prior_logvar = prior if ctx.has_prior else (None, None)
    lead = (ctx.n_samples,) if ctx.n_samples > 0 else ()
    if grad_z is None:
        grad_z = mu.new_zeros((*lead, *mu.shape))
    if grad_kl is None:
        grad_kl = mu.new_zeros(mu.shape[:1])
    if grad_log_q is None or not ctx.with_log_q:
        grad_log_q = mu.new_empty((0,))
    grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar = _op_backward(
        grad_z, grad_kl, grad_log_q, mu, logvar, rng_state, prior_mu, prior_logvar, n_samples=ctx.n_samples
    )
    if not ctx.has_prior:
        return grad_mu, grad_logvar, None, None, None
    return grad_mu, grad_logvar, None, grad_prior_mu, grad_prior_logvar


torch.library.register_autograd("gencore::reparameterize", _backward, setup_context=_setup_context)


class _Reparameterize(torch.autograd.Function):
    """The same autograd as a setup_context-style Function, for torch.func transforms."""

    generate_vmap_rule = True

    @staticmethod
    def forward(mu, logvar, rng_state, prior_mu, prior_logvar, n_samples, with_log_q):
        with torch._C._AutoDispatchBelowAutograd():
            return _op(mu, logvar, rng_state, prior_mu, prior_logvar, n_samples=n_samples, with_log_q=with_log_q)

    @staticmethod
    def setup_context(ctx, inputs, output):
        mu, logvar, rng_state, prior_mu, prior_logvar, n_samples, with_log_q = inputs
        _setup_context(ctx, (mu, logvar, rng_state, prior_mu, prior_logvar),
                       {"n_samples": n_samples, "with_log_q": with_log_q}, output)

    @staticmethod
    def backward(ctx, grad_z, grad_kl, grad_log_q):
        return (*_backward(ctx, grad_z, grad_kl, grad_log_q), None, None)
