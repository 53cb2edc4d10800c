"""Normalizing flows: invertible maps with an exact log-likelihood by change of variables.

Convention (every flow in gencore): ``forward(x) -> (z, logdet)`` maps data to latent (the
lecture's encoder E = D^-1), ``inverse(z) -> (x, logdet)`` generates, and

    log p(x) = log N(z; 0, I) + log |det dz/dx|,   in nats per example.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

from gencore._arguments import check_depth, check_generator, check_size, check_widths, plain_config
from gencore.models._common import (check_context, check_like_model, config_features, event_shape, require_bool,
                                    require_int)
from gencore.nn import (
    MLP,
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    ConvConditioner,
    DiagonalScale,
    FactorOut,
    InvertibleLinear,
    Squeeze,
)

__all__ = ["Flow", "NICE", "RealNVP", "Glow", "NeuralSplineFlow"]


class _InvertibleBackward(torch.autograd.Function):
    """Runs the transforms without recording a graph; backward rebuilds each transform's
    input from its output (``t.inverse``), re-runs that one transform with autograd and
    propagates the gradient: activation memory independent of depth, one extra inverse and
    forward per transform. Affine couplings do both with one conditioner pass
    (:meth:`gencore.nn.AffineCoupling.rebuild_and_backward`).

    Parameter gradients are added straight into ``.grad`` as each transform is processed
    (like ``torch.utils.checkpoint``'s reentrant mode): returning them through autograd
    would hold a second copy of every parameter's gradient until the end of backward.
    Gradient hooks on parameters (e.g. DistributedDataParallel's) therefore do not fire
    in this mode. ``anchor`` is an empty tensor that requires grad, so backward runs even
    when the data does not require grad.
    """

    @staticmethod
    def forward(ctx, transforms, context, anchor, x):
        with torch.no_grad():
            logdet = x.new_zeros(x.shape[0])
            y = x
            for t in transforms:
                y, ld = t(y, context)
                logdet = logdet + ld
        ctx.transforms, ctx.context = transforms, context
        ctx.save_for_backward(y)
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        (y,) = ctx.saved_tensors
        transforms, context = ctx.transforms, ctx.context
        for t in reversed(transforms):
            params = [p for p in t.parameters() if p.requires_grad]
            step = getattr(t, "rebuild_and_backward", None)
            done = step(y, context, grad_y, grad_logdet, params) if step is not None else None
            if done is not None:  # a coupling: one conditioner pass (AffineCoupling.rebuild_and_backward)
                x, grad_y, g_params = done
            else:
                with torch.no_grad():
                    x = t.inverse(y, context)[0]
                with torch.enable_grad():
                    x = x.detach().requires_grad_()
                    out, ld = t(x, context)
                    # A volume-preserving transform (additive coupling, permutation) returns a
                    # constant log-determinant outside the graph: leave it out of the grad call.
                    pairs = [(o, g) for o, g in ((out, grad_y), (ld, grad_logdet)) if o.requires_grad]
                    if pairs:
                        grads = torch.autograd.grad([o for o, _ in pairs], [x, *params],
                                                    [g for _, g in pairs], allow_unused=True)
                    else:
                        grads = (None,) * (1 + len(params))
                    grad_y, *g_params = grads
                    if grad_y is None:
                        grad_y = torch.zeros_like(x)
            with torch.no_grad():
                for p, gp in zip(params, g_params):
                    if gp is None:
                        continue
                    if p.grad is None:
                        p.grad = gp
                    else:
                        p.grad.add_(gp)
            y = x.detach()
        return None, None, None, grad_y


class Flow(nn.Module):
    """A composition of invertible transforms with a standard normal base distribution.

    Args:
        transforms: modules with ``forward(x, context) -> (y, logdet)`` and
            ``inverse(y, context) -> (x, logdet)``, applied in order from data to latent.
        event_shape: shape of one example, e.g. ``(2,)`` or ``(1, 8, 8)``.
        context_features: size of the conditioning vector (0: unconditional).
        memory_efficient: in training, keep no activations: backward rebuilds each
            transform's input from its output (see :meth:`forward`). Gradients match the
            ordinary path up to the rounding of the reconstruction; the context gets no
            gradient in this mode, and parameter gradients are accumulated directly into
            ``.grad`` (parameter gradient hooks, as DistributedDataParallel's, do not fire).
    """

    def __init__(self, transforms: Sequence[nn.Module], event_shape: Sequence[int],
                 context_features: int = 0, memory_efficient: bool = False) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        self.event_shape = tuple(int(s) for s in event_shape)
        self.context_features = int(context_features)
        self.memory_efficient = require_bool(memory_efficient, "memory_efficient", type(self).__name__)
        self.config: dict = {}

    @property
    def dims(self) -> int:
        return math.prod(self.event_shape)

    def _check(self, x: torch.Tensor, context: torch.Tensor | None, name: str = "x") -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: {name} must be a tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.event_shape or x.dim() != len(self.event_shape) + 1:
            raise ValueError(f"{type(self).__name__}: {name} must have shape (B, {', '.join(map(str, self.event_shape))}), "
                             f"got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: empty batch")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{type(self).__name__}: {name} must be floating point, got {x.dtype}")
        check_like_model(x, self, type(self).__name__, name)
        if self.context_features:
            if context is None:
                raise ValueError(f"{type(self).__name__}: this flow is conditional: pass context of shape "
                                 f"(B, {self.context_features})")
            check_context(context, x.shape[0], self.context_features, type(self).__name__)
        elif context is not None:
            raise ValueError(f"{type(self).__name__}: this flow is unconditional; context must be None")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Data to latent: ``x: (B, *event_shape) -> (z, logdet)``, ``logdet = log|det dz/dx|``.

        With ``memory_efficient=True`` and gradients enabled, the transforms run inside one
        autograd function that stores only ``z``."""
        self._check(x, context)
        return self._to_latent(x, context)

    def _to_latent(self, x: torch.Tensor, context: torch.Tensor | None):
        if self.memory_efficient and torch.is_grad_enabled():
            ctx = context.detach() if context is not None else None
            anchor = torch.empty(0, device=x.device, requires_grad=True)
            return _InvertibleBackward.apply(self.transforms, ctx, anchor, x)
        logdet = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ld = t(x, context)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        """Latent to data: ``z -> (x, logdet)``, ``logdet = log|det dx/dz|``."""
        self._check(z, context, "z")
        logdet = z.new_zeros(z.shape[0])
        for t in reversed(self.transforms):
            z, ld = t.inverse(z, context)
            logdet = logdet + ld
        return z, logdet

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * z.pow(2).flatten(1).sum(1) - 0.5 * self.dims * math.log(2 * math.pi)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x)`` in nats per example, ``(B,)``. NaN or infinite inputs raise."""
        self._check(x, context)
        if not torch.isfinite(x).all():
            raise ValueError(f"{type(self).__name__}: x contains NaN or infinite values")
        z, logdet = self._to_latent(x, context)  # (checked once: each check of context syncs a GPU)
        return self.base_log_prob(z) + logdet

    def rsample(self, n: int, generator: torch.Generator | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` samples ``(n, *event_shape)``, differentiable w.r.t. the parameters."""
        if require_int(n, "n", type(self).__name__) < 1:
            raise ValueError(f"{type(self).__name__}: n must be a positive int, got {n!r}")
        check_generator(generator, f"{type(self).__name__}: generator")
        p = next(self.parameters())
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=p.dtype,
                        device=generator.device if generator is not None else p.device).to(p.device)
        return self.inverse(z, context)[0]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` samples ``(n, *event_shape)`` (no gradient)."""
        return self.rsample(n, generator, context)

    def loss(self, batch) -> torch.Tensor:
        """Mean negative log-likelihood (nats per example) of ``batch``: ``x`` or ``(x, context)``."""
        if isinstance(batch, (tuple, list)):
            x = batch[0]
            context = batch[1] if self.context_features and len(batch) > 1 else None
        else:
            x, context = batch, None
        return -self.log_prob(x, context).mean()


def _check_int(name: str, v, low: int = 1) -> int:
    """A flow's size (bounded by ``MAX_SIZE``) or layer count (``n_couplings``, ``steps``,
    ``n_levels``, ``n_scales``: bounded by ``MAX_DEPTH``)."""
    check = check_depth if name in ("n_couplings", "steps", "n_levels", "n_scales") else check_size
    return check(v, f"flow: {name}", low)


def _vector_hidden(hidden, owner: str) -> list[int]:
    """The MLP widths of a flow on vectors (one int: one layer; none: linear conditioners)."""
    return check_widths(hidden, f"{owner}: hidden", allow_empty=True)


def _config_hidden(hidden, owner: str):
    """``hidden`` as the config stores it, in plain ints (JSON): an int stays one int (the
    CNN width of an image flow, or one MLP layer), a sequence becomes a list."""
    widths = _vector_hidden(hidden, owner)
    return widths[0] if isinstance(hidden, numbers.Integral) else widths


def _event_shape(features) -> tuple[int, ...]:
    """``D`` (at least 2) -> ``(D,)``; ``(C, H, W)`` stays."""
    return event_shape(features, "flow", 2)


def _first(hidden) -> int:
    """The CNN width of an image flow: ``hidden`` (an int) or its first entry, a positive int."""
    if isinstance(hidden, (list, tuple)):
        hidden = list(hidden)
        if not hidden:
            raise ValueError("hidden (the CNN width of an image flow) is empty")
        hidden = hidden[0]
    return check_size(hidden, "hidden (the CNN width of an image flow)")


def _split_sizes(n: int, swap: bool) -> tuple[int, int]:
    """(identity, transformed) channel counts of a "channel"/"half" coupling."""
    a, b = n // 2, n - n // 2
    return (b, a) if swap else (a, b)


def _realnvp_scale(c, h, w, k, scales, hidden, clamp, ctx):
    """RealNVP multi-scale block: k checkerboard couplings, then (if a scale is left)
    squeeze, k channel couplings, and the next scale on half of the channels."""
    last = scales == 1 or h % 2 or w % 2 or min(h, w) < 4
    layers = [AffineCoupling(c, ConvConditioner(c, 2 * c, hidden, ctx), mask="checkerboard", clamp=clamp,
                             swap=i % 2 == 1) for i in range(k + (1 if last else 0))]
    if last:
        return layers
    c4 = 4 * c
    inner = []
    for i in range(k):
        c_a, c_b = _split_sizes(c4, i % 2 == 1)
        inner.append(AffineCoupling(c4, ConvConditioner(c_a, 2 * c_b, hidden, ctx), mask="channel",
                                    clamp=clamp, swap=i % 2 == 1))
    inner.append(FactorOut(_realnvp_scale(c4 - c4 // 2, h // 2, w // 2, k, scales - 1, hidden, clamp, ctx)))
    return layers + [Squeeze(inner)]


class RealNVP(Flow):
    """RealNVP (Dinh et al. 2017) for vectors and images.

    Vectors ``(B, D)``: ActNorm, then ``n_couplings`` affine couplings with alternating
    masks; each conditioner is an MLP ``(D_a [+ context]) -> hidden -> 2 * D_b``.

    Images ``(B, C, H, W)``: ActNorm, then the multi-scale architecture: per scale
    ``n_couplings`` checkerboard couplings, a squeeze, ``n_couplings`` channel couplings and
    half of the channels factored out; the last scale has ``n_couplings + 1`` checkerboard
    couplings. Conditioners are small CNNs (:class:`gencore.nn.ConvConditioner`).

    Conditioners are zero-initialised (the flow starts as the ActNorm standardization);
    every coupling runs the fused :func:`gencore.ops.affine_coupling`.

    Args:
        features: ``D``, or the image shape ``(C, H, W)``.
        n_couplings: couplings (vectors) or couplings per stage (images, 3 in the paper).
        hidden: MLP hidden sizes (vectors) or CNN width (images: an int, or the first entry).
        clamp: soft clamp of the log-scales.
        context_features: size of a conditioning vector fed to every conditioner (0: none).
        actnorm: start with a data-initialised ActNorm.
        n_scales: images: number of scales.
    """

    def __init__(self, features, n_couplings: int = 8, hidden=(256, 256), *, clamp: float = 2.0,
                 context_features: int = 0, actnorm: bool = True, n_scales: int = 2,
                 memory_efficient: bool = False) -> None:
        shape = _event_shape(features)
        _check_int("n_couplings", n_couplings)
        _check_int("context_features", context_features, 0)
        _check_int("n_scales", n_scales)
        layers: list[nn.Module] = [ActNorm(shape[0])] if require_bool(actnorm, "actnorm", "RealNVP") else []
        if len(shape) == 1:
            d, widths = shape[0], _vector_hidden(hidden, "RealNVP")
            for i in range(n_couplings):
                swap = i % 2 == 1
                n_a = len(range(d)[1::2] if swap else range(d)[0::2])
                cond = MLP(n_a + context_features, 2 * (d - n_a), widths, zero_init=True)
                layers.append(AffineCoupling(d, cond, mask="alternate", clamp=clamp, swap=swap))
        else:
            layers += _realnvp_scale(*shape, n_couplings, n_scales, _first(hidden), clamp, context_features)
        super().__init__(layers, shape, context_features, memory_efficient)
        self.config = plain_config({"features": config_features(shape),
                                    "n_couplings": n_couplings, "hidden": _config_hidden(hidden, "RealNVP"),
                                    "clamp": clamp, "context_features": context_features, "actnorm": actnorm,
                                    "n_scales": n_scales, "memory_efficient": memory_efficient})


def _glow_step(c, cond, clamp):
    return [ActNorm(c), InvertibleLinear(c), AffineCoupling(c, cond, mask="half", clamp=clamp)]


def _glow_level(c, h, w, k, levels, hidden, clamp, ctx):
    """Squeeze, k steps of flow, then (if a level is left) half of the channels factored out."""
    c4 = 4 * c
    inner = []
    for _ in range(k):
        c_a, c_b = _split_sizes(c4, False)
        inner += _glow_step(c4, ConvConditioner(c_a, 2 * c_b, hidden, ctx), clamp)
    if levels > 1:
        inner.append(FactorOut(_glow_level(c4 - c4 // 2, h // 2, w // 2, k, levels - 1, hidden, clamp, ctx)))
    return [Squeeze(inner)]


class Glow(Flow):
    """Glow (Kingma & Dhariwal 2018): steps of ActNorm (data-initialised), an invertible
    1x1 convolution in LU form and an affine coupling, inside a multi-scale architecture.

    Images ``(B, C, H, W)`` (H and W divisible by ``2 ** n_levels``): ``n_levels`` levels of
    squeeze, ``steps`` steps of flow, and half of the channels factored out between levels.
    Vectors ``(B, D)``: ``steps`` steps with an invertible linear map in place of the 1x1
    convolution and a half/half coupling with an MLP conditioner.

    Args:
        features: ``D``, or the image shape ``(C, H, W)``.
        steps: steps of flow per level.
        n_levels: images: number of levels.
        hidden: CNN width (images) or MLP hidden sizes (vectors).
        clamp: soft clamp of the log-scales.
        context_features: size of a conditioning vector (0: none).
    """

    def __init__(self, features, steps: int = 8, n_levels: int = 2, hidden=(256, 256), *, clamp: float = 2.0,
                 context_features: int = 0, memory_efficient: bool = False) -> None:
        shape = _event_shape(features)
        _check_int("steps", steps)
        _check_int("n_levels", n_levels)
        _check_int("context_features", context_features, 0)
        if len(shape) == 1:
            d, widths = shape[0], _vector_hidden(hidden, "Glow")
            layers: list[nn.Module] = []
            for _ in range(steps):
                n_a, n_b = _split_sizes(d, False)
                layers += _glow_step(d, MLP(n_a + context_features, 2 * n_b, widths, zero_init=True), clamp)
        else:
            c, h, w = shape
            if h % (2 ** n_levels) or w % (2 ** n_levels):
                raise ValueError(f"Glow: H and W must be divisible by 2**n_levels = {2 ** n_levels}, got {shape}")
            layers = _glow_level(c, h, w, steps, n_levels, _first(hidden), clamp, context_features)
        super().__init__(layers, shape, context_features, memory_efficient)
        self.config = plain_config({"features": config_features(shape), "steps": steps,
                                    "n_levels": n_levels, "hidden": _config_hidden(hidden, "Glow"),
                                    "clamp": clamp, "context_features": context_features,
                                    "memory_efficient": memory_efficient})


class NICE(Flow):
    """NICE (Dinh et al. 2014): additive couplings with alternating masks, then a learned
    diagonal scaling, the only non-volume-preserving part.

    Args:
        features: ``D`` (>= 2).
        n_couplings: number of additive couplings (the paper uses 4).
        hidden: hidden sizes of each coupling's MLP.
        context_features: size of a conditioning vector (0: none).
        actnorm: start with a data-initialised ActNorm.
    """

    def __init__(self, features: int, n_couplings: int = 4, hidden: Sequence[int] = (256, 256), *,
                 context_features: int = 0, actnorm: bool = True, memory_efficient: bool = False) -> None:
        features = _check_int("features", features, 2)
        _check_int("n_couplings", n_couplings)
        _check_int("context_features", context_features, 0)
        widths = _vector_hidden(hidden, "NICE")
        layers: list[nn.Module] = [ActNorm(features)] if require_bool(actnorm, "actnorm", "NICE") else []
        for i in range(n_couplings):
            swap = i % 2 == 1
            n_a = len(range(features)[1::2] if swap else range(features)[0::2])
            cond = MLP(n_a + context_features, features - n_a, widths, zero_init=True)
            layers.append(AdditiveCoupling(features, cond, mask="alternate", swap=swap))
        layers.append(DiagonalScale(features))
        super().__init__(layers, (features,), context_features, memory_efficient)
        self.config = plain_config({"features": features, "n_couplings": n_couplings,
                                    "hidden": _config_hidden(hidden, "NICE"),
                                    "context_features": context_features, "actnorm": actnorm,
                                    "memory_efficient": memory_efficient})


class NeuralSplineFlow(Flow):
    """Neural spline flow (Durkan et al. 2019) for vectors ``(B, D)``, coupling or
    autoregressive form.

    Coupling form (default): ActNorm, then ``n_couplings`` rational-quadratic spline
    couplings (:class:`gencore.nn.SplineCoupling`, fused :func:`gencore.ops.rq_spline`) with
    alternating masks, each conditioner an MLP ``(D_a [+ context]) -> hidden -> n_b (3K - 1)``.

    Autoregressive form (``autoregressive=True``): ActNorm, then ``n_couplings`` layers of
    :class:`gencore.nn.AutoregressiveSpline`, each a spline per element with parameters from
    a :class:`gencore.nn.MADE` ``(D [+ context]) -> hidden -> D (3K - 1)`` over the elements
    before it, the order reversed from one layer to the next. Density evaluation (training)
    is one pass per layer; sampling takes ``D`` passes per layer.

    Conditioners are zero-initialised (every layer starts as the identity); widths and
    heights are divided by ``sqrt`` of the last hidden width, as in nflows. Images are
    flattened by the caller (the digits as 64-vectors).

    Args:
        features: ``D >= 2``.
        n_couplings: spline layers (couplings, or autoregressive layers).
        hidden: MLP (MADE) hidden sizes.
        bins: ``K``, spline bins per element.
        bound: each spline acts on ``[-bound, bound]`` (the identity outside); after the
            ActNorm the data is standardized, so 3 to 4 covers it.
        context_features: size of a conditioning vector fed to every conditioner (0: none).
        actnorm: start with a data-initialised ActNorm.
        autoregressive: the autoregressive (MADE) form instead of couplings.
    """

    def __init__(self, features, n_couplings: int = 8, hidden=(256, 256), *, bins: int = 8, bound: float = 3.0,
                 context_features: int = 0, actnorm: bool = True, memory_efficient: bool = False,
                 autoregressive: bool = False) -> None:
        from gencore.nn.layers import MADE
        from gencore.nn.spline import AutoregressiveSpline, SplineCoupling

        shape = _event_shape(features)
        if len(shape) != 1:
            raise ValueError(f"NeuralSplineFlow: features must be a vector size D (flatten images), got {features!r}")
        _check_int("n_couplings", n_couplings)
        _check_int("context_features", context_features, 0)
        _check_int("bins", bins)
        if not isinstance(autoregressive, bool):
            raise TypeError(f"NeuralSplineFlow: autoregressive must be a bool, got {type(autoregressive).__name__}")
        hidden = _vector_hidden(hidden, "NeuralSplineFlow")
        if autoregressive and not hidden:
            raise ValueError("NeuralSplineFlow: the autoregressive form needs at least one hidden layer (MADE)")
        d, p = shape[0], 3 * bins - 1
        scale_by = hidden[-1] if hidden else None
        layers: list[nn.Module] = [ActNorm(d)] if require_bool(actnorm, "actnorm", "NeuralSplineFlow") else []
        for i in range(n_couplings):
            if autoregressive:
                made = MADE(d, p, hidden, context_features=context_features,
                            order="reverse" if i % 2 else "forward", zero_init=True)
                layers.append(AutoregressiveSpline(d, made, bins=bins, bound=bound, scale_by=scale_by))
                continue
            swap = i % 2 == 1
            n_a = len(range(d)[1::2] if swap else range(d)[0::2])
            cond = MLP(n_a + context_features, (d - n_a) * p, hidden, zero_init=True)
            layers.append(SplineCoupling(d, cond, bins=bins, bound=bound, mask="alternate", swap=swap,
                                         scale_by=scale_by))
        super().__init__(layers, shape, context_features, memory_efficient)
        self.config = plain_config({"features": shape[0], "n_couplings": n_couplings, "hidden": hidden, "bins": bins,
                                    "bound": bound, "context_features": context_features, "actnorm": actnorm,
                                    "memory_efficient": memory_efficient})
        if autoregressive:  # older checkpoints' configs have no key: the coupling form
            self.config["autoregressive"] = True
