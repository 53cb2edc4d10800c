"""Contrastive similarity-matrix losses (CLIP, SimCLR's NT-Xent, SigLIP) that never store the matrix.

The logits ``scale * a @ b.T`` are visited tile by tile with an online log-sum-exp: the
forward keeps only the row (and column) log-sum-exps, ``O(N)`` numbers; the backward
recomputes each tile and turns it into its gradient weights in place. SigLIP's sigmoid
loss is a plain sum of elementwise terms over the same tiles; when a gradient will be wanted,
its gradients are formed in the same visit and kept (``O(N * D)``). Memory is
``O(N * D)`` for any batch size, where the materialized loss needs several ``N x N``
matrices (``N = 65536``: 16 GiB each in float32). The schemas are in
``csrc/registration.cpp``, the tiling in ``csrc/contrastive/``.
"""

from __future__ import annotations

import math

import torch

from gencore._arguments import int_in
from gencore.ops._autograd import first_order, transforms_active
from gencore.ops._errors import (as_finite_float, check_representable, check_scalar, check_tensors, compute_dtype,
                                 typed)

__all__ = ["clip_loss", "nt_xent_loss", "contrastive_cross_entropy", "sigmoid_contrastive_loss",
           "sigmoid_contrastive_pairs"]

_clip = typed(torch.ops.gencore.clip_loss.default)
_clip_backward = torch.ops.gencore.clip_loss_backward.default
_ntxent = typed(torch.ops.gencore.nt_xent_loss.default)
_ntxent_backward = torch.ops.gencore.nt_xent_loss_backward.default
_rows = typed(torch.ops.gencore.contrastive_rows.default)
_rows_backward = torch.ops.gencore.contrastive_rows_backward.default
_sigmoid = typed(torch.ops.gencore.sigmoid_contrastive_loss.default)
_sigmoid_backward = torch.ops.gencore.sigmoid_contrastive_loss_backward.default
_sigmoid_with_grads = typed(torch.ops.gencore.sigmoid_contrastive_loss_with_grads.default)


def _scalar_tensor(value: torch.Tensor, name: str, like: torch.Tensor) -> torch.Tensor:
    """A hyper-parameter given as a tensor: on ``like``'s device, one floating value, as 0-d."""
    if value.device != like.device:
        raise ValueError(f"gencore: {name} must be on the features' device ({like.device}), got {value.device}")
    if value.dim() != 0 and value.numel() == 1:
        value = value.reshape(())
    if value.dim() != 0:
        raise ValueError(f"gencore: {name} must be a scalar (0-d tensor), got shape {tuple(value.shape)}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"gencore: {name} must be a floating-point tensor, got {value.dtype}")
    return value


def _as_acc_tensor(value, name: str, like: torch.Tensor, low: float, what: str) -> torch.Tensor:
    """A Python number as a 0-d tensor of the accumulation dtype on ``like``'s device, after
    checking ``low < value`` (``low`` -inf for any finite value) and that it is finite in
    that dtype (1e39 is a finite float but inf in float32). Under torch.compile ``value``
    may be symbolic (dynamic=True, or a float that changed between calls): the same checks
    as two comparisons, which a symbolic float supports and ``math.isfinite`` does not."""
    dtype = compute_dtype(like)
    big = torch.finfo(dtype).max
    if torch.compiler.is_compiling():
        torch._check_value(value > low, lambda: f"gencore: {name} must be {what}")
        torch._check_value(value <= big, lambda: f"gencore: {name} must be {what}")
        torch._check_value(value >= -big, lambda: f"gencore: {name} must be {what}")
        return torch.full((), value, dtype=dtype, device=like.device)
    v = as_finite_float(value, name, what)
    if not (math.isfinite(v) and v > low):
        raise ValueError(f"gencore: {name} must be {what}, got {value}")
    check_representable(v, name, like)
    return torch.tensor(v, dtype=dtype, device=like.device)


def _as_scale(value, name: str, like: torch.Tensor, reciprocal: bool = False) -> torch.Tensor:
    """A positive, finite hyper-parameter as a 0-d tensor on ``like``'s device. With
    ``reciprocal`` (a temperature) its reciprocal must be finite in the accumulation dtype."""
    if isinstance(value, torch.Tensor):
        return _scalar_tensor(value, name, like)
    value = check_scalar(value, name, "a float or a 0-d tensor")
    scale = _as_acc_tensor(value, name, like, 0.0, "finite and > 0")
    dtype = scale.dtype
    lowest = 1.0 / torch.finfo(dtype).max
    if reciprocal and torch.compiler.is_compiling():
        torch._check_value(value >= lowest, lambda: f"gencore: {name} must be >= {lowest:.3g} (its reciprocal "
                                                    f"must be finite in {str(dtype).removeprefix('torch.')})")
    elif reciprocal and value < lowest:
        raise ValueError(f"gencore: {name} must be >= {lowest:.3g} (its reciprocal must be finite in "
                         f"{str(dtype).removeprefix('torch.')}), got {value}")
    return scale


def _as_bias(value, like: torch.Tensor) -> torch.Tensor:
    """A finite logit bias as a 0-d tensor on ``like``'s device (a tensor is checked for
    shape, device and dtype; its value on CPU by the op)."""
    if isinstance(value, torch.Tensor):
        return _scalar_tensor(value, "logit_bias", like)
    value = check_scalar(value, "logit_bias", "a float or a 0-d tensor")
    return _as_acc_tensor(value, "logit_bias", like, -math.inf, "finite")


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """CLIP's symmetric contrastive loss, without materializing the ``(N, N)`` logits.

    ``logits = logit_scale * image_features @ text_features.T``; row ``i``'s positive is
    column ``i``; ``loss = (CE(logits, arange N) + CE(logits.T, arange N)) / 2``, each
    cross-entropy a mean over rows, in nats. The features are used as given (normalize
    them first for cosine logits).

    Args:
        image_features: ``(N, D)``. CPU: float32/float64; CUDA: also float16/bfloat16
            (float32 accumulation).
        text_features: ``(N, D)``, same dtype and device.
        logit_scale: the multiplier, already exponentiated: a 0-d tensor (differentiable,
            e.g. ``log_scale.exp()``) or a positive float.

    Returns:
        0-d loss in the features' dtype. Differentiable in both feature tensors and in
        ``logit_scale``.

    Raises:
        ValueError: shapes differ or are not ``(N, D)``, empty batch, ``logit_scale`` not
            finite and positive, tensors on different devices.
        TypeError: non-floating or mismatched dtypes.
    """
    check_tensors(image_features=image_features, text_features=text_features)
    scale = _as_scale(logit_scale, "logit_scale", image_features)
    if transforms_active("gencore.ops.clip_loss", image_features, text_features, scale):
        return _ClipLoss.apply(image_features, text_features, scale)[0]
    loss, _, _ = _clip(image_features, text_features, scale)
    return loss


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, *, temperature=0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss, without materializing the ``(2N, 2N)`` similarities.

    ``z = normalize(cat(z1, z2))`` (rows to unit length), logits ``z @ z.T / temperature``
    with each row's self-similarity excluded; row ``i``'s positive is the other view of
    the same example (``i + N`` or ``i - N``); mean cross-entropy over the ``2N`` rows, in
    nats.

    Args:
        z1, z2: ``(N, D)`` projections of two views of the same ``N`` examples. CPU:
            float32/float64; CUDA: also float16/bfloat16 (float32 accumulation).
        temperature: a positive float or a 0-d tensor (differentiable).

    Returns:
        0-d loss in the inputs' dtype, differentiable in ``z1``, ``z2`` and ``temperature``.

    Raises:
        ValueError: shapes differ or are not ``(N, D)``, empty batch, temperature not
            finite and positive.
        TypeError: non-floating or mismatched dtypes.
    """
    check_tensors(z1=z1, z2=z2)
    t = _as_scale(temperature, "temperature", z1, reciprocal=True)
    if transforms_active("gencore.ops.nt_xent_loss", z1, z2, t):
        return _NTXentLoss.apply(z1, z2, t)[0]
    loss, _ = _ntxent(z1, z2, t)
    return loss


def contrastive_cross_entropy(query: torch.Tensor, keys: torch.Tensor, scale, positive: torch.Tensor,
                              exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row contrastive cross-entropy of queries against a set of keys, tiled.

    ``loss[i] = logsumexp_{j != exclude[i]}(scale * q_i . k_j) - scale * q_i . k_{positive[i]}``
    in nats. This is the building block of the distributed losses (each rank's rows against
    the gathered keys), and of InfoNCE with any positive assignment.

    Args:
        query: ``(n, D)``.
        keys: ``(m, D)``, same dtype and device as ``query``.
        scale: positive float or 0-d tensor (differentiable), multiplies the dot products.
        positive: ``(n,)`` int64 indices into ``keys``.
        exclude: ``(n,)`` int64 index of a key left out of row ``i``'s normalizer (its own
            copy, for self-similarity), ``-1`` for none; ``None``: nothing excluded.

    Returns:
        ``(n,)`` losses in the query's dtype, differentiable in ``query``, ``keys``, ``scale``.
    """
    check_tensors(query=query, keys=keys, positive=positive)
    s = _as_scale(scale, "scale", query)
    if exclude is None:
        exclude = torch.full((query.shape[0] if query.dim() > 0 else 0,), -1, dtype=torch.int64,
                             device=query.device)
    if transforms_active("gencore.ops.contrastive_cross_entropy", query, keys, s):
        return _ContrastiveRows.apply(query, keys, s, positive, exclude)[0]
    loss, _ = _rows(query, keys, s, positive, exclude)
    return loss


def sigmoid_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale,
                             logit_bias) -> torch.Tensor:
    """SigLIP's sigmoid loss, without materializing the ``(N, N)`` logits.

    ``L = logit_scale * image_features @ text_features.T + logit_bias``; every pair is a
    binary problem, positive on the diagonal (``z_ii = 1``) and negative elsewhere
    (``z_ij = -1``): ``loss = -(1/N) sum_ij log sigmoid(z_ij L_ij)``, in nats per image (Zhai
    et al. 2023, "Sigmoid Loss for Language Image Pre-Training"). Each term is computed as
    ``softplus(-z L)``, finite at any logit; the positives' gradient ``sigmoid(L) - 1`` as
    ``-sigmoid(-L)`` (no cancellation). At SigLIP's initialisation (``logit_scale`` 10,
    ``logit_bias`` -10) and at scale 100, bias -10 the loss and gradients stay finite.

    Unlike :func:`clip_loss` there is no normalizer over a row or column: the forward is one
    pass of tiles summing elementwise terms. Where a gradient will be wanted (grad mode on
    and an input requiring grad) the same visit of the logits also forms the gradients at
    ``grad_loss = 1`` (``gencore::sigmoid_contrastive_loss_with_grads``), which are kept and
    scaled by ``grad_loss`` in the backward: on CUDA's GEMM path (from ``2048 x 2048`` pairs)
    three matrix products per step instead of four. Memory ``O(N D)``.

    Args:
        image_features: ``(N, D)``. CPU: float32/float64; CUDA: also float16/bfloat16
            (float32 accumulation). Used as given (normalize them first for cosine logits).
        text_features: ``(N, D)``, same dtype and device.
        logit_scale: the multiplier ``t``, already exponentiated: a positive float or a 0-d
            tensor (differentiable, e.g. ``log_scale.exp()``).
        logit_bias: the bias ``b``: a finite float or a 0-d tensor (differentiable).

    Returns:
        0-d loss in the features' dtype, differentiable in both feature tensors, the scale
        and the bias.

    Raises:
        ValueError: shapes differ or are not ``(N, D)``, empty batch, ``logit_scale`` not
            finite and positive, ``logit_bias`` not finite, tensors on different devices.
        TypeError: non-floating or mismatched dtypes.
    """
    check_tensors(image_features=image_features, text_features=text_features)
    if image_features.dim() == 2 and text_features.dim() == 2 and image_features.shape[0] != text_features.shape[0]:
        raise ValueError("gencore: image_features and text_features must have the same number of rows N (row i of "
                         "one is the positive of row i of the other): got image_features.shape="
                         f"{tuple(image_features.shape)} and text_features.shape={tuple(text_features.shape)}")
    return sigmoid_contrastive_pairs(image_features, text_features, logit_scale, logit_bias)


def sigmoid_contrastive_pairs(query: torch.Tensor, keys: torch.Tensor, logit_scale, logit_bias, *,
                              positive_offset: int = 0) -> torch.Tensor:
    """The sigmoid loss of every (query, key) pair, rectangular, tiled.

    ``L = logit_scale * query @ keys.T + logit_bias`` (``n x m``); the pair ``(i, j)`` is
    positive where ``j == i + positive_offset`` and negative elsewhere;
    ``loss = (1/n) sum_ij softplus(-z_ij L_ij)``, in nats per query row. With ``n == m`` and
    offset 0 this is :func:`sigmoid_contrastive_loss`. An offset of ``m`` (or ``-n``) makes
    every pair negative: the block of a distributed loss that pairs this rank's images with
    another rank's texts (:class:`gencore.nn.SigLIPLoss`).

    Args:
        query: ``(n, D)``; keys: ``(m, D)``, same dtype and device.
        logit_scale: positive float or 0-d tensor; logit_bias: finite float or 0-d tensor.
        positive_offset: an int in ``[-n, m]``.

    Returns:
        0-d loss, differentiable in ``query``, ``keys``, the scale and the bias.
    """
    check_tensors(image_features=query, text_features=keys)
    if (offset := int_in(positive_offset)) is None:
        raise TypeError(f"gencore: positive_offset must be an int, got {type(positive_offset).__name__}")
    positive_offset = offset
    if not -(1 << 63) <= positive_offset < (1 << 63):  # beyond the schema's int64; the op checks [-n, m]
        raise ValueError(f"gencore: positive_offset must be in [-n, m] (n, m the rows of query and keys), "
                         f"got {positive_offset}")
    scale = _as_scale(logit_scale, "logit_scale", query)
    bias = _as_bias(logit_bias, query)
    if transforms_active("gencore.ops.sigmoid_contrastive_loss", query, keys, scale, bias):
        return _SigmoidLoss.apply(query, keys, scale, bias, positive_offset)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (query, keys, scale, bias)):
        # A gradient will be wanted: the loss and its gradients from one visit of the logits.
        return _SigmoidLossWithGrads.apply(query, keys, scale, bias, positive_offset)
    return _sigmoid(query, keys, scale, bias, positive_offset)


# ----------------------------------------------------------------- fake kernels -----------
def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_pair_fake(a, b, same_rows, names):
    torch._check_value(a.dim() == 2 and b.dim() == 2, lambda: f"gencore: {names} must have shape (N, D)")
    torch._check_type(a.dtype == b.dtype, lambda: f"gencore: {names} must have the same dtype")
    torch._check_type(a.dtype.is_floating_point, lambda: f"gencore: {names} must be floating-point")
    torch._check_value(a.device == b.device, lambda: f"gencore: {names} must be on one device")
    torch._check_value(a.shape[1] == b.shape[1], lambda: f"gencore: {names} must have the same D")
    if same_rows:
        torch._check_value(a.shape[0] == b.shape[0], lambda: f"gencore: {names} must have the same N")


def _check_scale_fake(s, name, like):
    torch._check_value(s.dim() == 0, lambda: f"gencore: {name} must be a 0-d tensor")
    torch._check_type(s.dtype.is_floating_point, lambda: f"gencore: {name} must be floating-point")
    _check_device_fake(s, name, like)


def _check_device_fake(t, name, like):
    # A meta tensor beside real ones makes the dispatcher pick these fake kernels: without
    # this check the call would "succeed" with uninitialised outputs.
    torch._check_value(t.device == like.device,
                       lambda: f"gencore: {name} must be on the features' device ({like.device}), got {t.device}")


@torch.library.register_fake("gencore::clip_loss")
def _(image_features, text_features, logit_scale):
    _check_pair_fake(image_features, text_features, True, "image_features and text_features")
    _check_scale_fake(logit_scale, "logit_scale", image_features)
    n = image_features.shape[0]
    acc = _acc(image_features.dtype)
    return (image_features.new_empty(()), image_features.new_empty((n,), dtype=acc),
            image_features.new_empty((n,), dtype=acc))


@torch.library.register_fake("gencore::clip_loss_backward")
def _(grad_loss, image_features, text_features, logit_scale, row_lse, col_lse):
    _check_pair_fake(image_features, text_features, True, "image_features and text_features")
    for name, t in (("grad_loss", grad_loss), ("logit_scale", logit_scale), ("row_lse", row_lse), ("col_lse", col_lse)):
        _check_device_fake(t, name, image_features)
    return (torch.empty_like(image_features, memory_format=torch.contiguous_format),
            torch.empty_like(text_features, memory_format=torch.contiguous_format),
            torch.empty_like(logit_scale))


@torch.library.register_fake("gencore::nt_xent_loss")
def _(z1, z2, temperature):
    _check_pair_fake(z1, z2, True, "z1 and z2")
    _check_scale_fake(temperature, "temperature", z1)
    return z1.new_empty(()), z1.new_empty((2 * z1.shape[0],), dtype=_acc(z1.dtype))


@torch.library.register_fake("gencore::nt_xent_loss_backward")
def _(grad_loss, z1, z2, temperature, lse):
    _check_pair_fake(z1, z2, True, "z1 and z2")
    for name, t in (("grad_loss", grad_loss), ("temperature", temperature), ("lse", lse)):
        _check_device_fake(t, name, z1)
    return (torch.empty_like(z1, memory_format=torch.contiguous_format),
            torch.empty_like(z2, memory_format=torch.contiguous_format), torch.empty_like(temperature))


@torch.library.register_fake("gencore::contrastive_rows")
def _(query, keys, scale, positive, exclude):
    _check_pair_fake(query, keys, False, "query and keys")
    _check_scale_fake(scale, "scale", query)
    _check_device_fake(positive, "positive", query)
    _check_device_fake(exclude, "exclude", query)
    n = query.shape[0]
    return query.new_empty((n,)), query.new_empty((n,), dtype=_acc(query.dtype))


@torch.library.register_fake("gencore::contrastive_rows_backward")
def _(grad_loss, query, keys, scale, positive, exclude, lse):
    _check_pair_fake(query, keys, False, "query and keys")
    for name, t in (("grad_loss", grad_loss), ("scale", scale), ("positive", positive), ("exclude", exclude),
                    ("lse", lse)):
        _check_device_fake(t, name, query)
    return (torch.empty_like(query, memory_format=torch.contiguous_format),
            torch.empty_like(keys, memory_format=torch.contiguous_format), torch.empty_like(scale))


@torch.library.register_fake("gencore::sigmoid_contrastive_loss")
def _(image_features, text_features, logit_scale, logit_bias, positive_offset=0):
    _check_pair_fake(image_features, text_features, False, "image_features and text_features")
    _check_scale_fake(logit_scale, "logit_scale", image_features)
    _check_scale_fake(logit_bias, "logit_bias", image_features)
    return image_features.new_empty(())


@torch.library.register_fake("gencore::sigmoid_contrastive_loss_with_grads")
def _(image_features, text_features, logit_scale, logit_bias, positive_offset=0):
    _check_pair_fake(image_features, text_features, False, "image_features and text_features")
    _check_scale_fake(logit_scale, "logit_scale", image_features)
    _check_scale_fake(logit_bias, "logit_bias", image_features)
    return (image_features.new_empty(()),
            torch.empty_like(image_features, memory_format=torch.contiguous_format),
            torch.empty_like(text_features, memory_format=torch.contiguous_format),
            torch.empty_like(logit_scale), torch.empty_like(logit_bias))


@torch.library.register_fake("gencore::sigmoid_contrastive_loss_backward")
def _(grad_loss, image_features, text_features, logit_scale, logit_bias, positive_offset):
    _check_pair_fake(image_features, text_features, False, "image_features and text_features")
    for name, t in (("grad_loss", grad_loss), ("logit_scale", logit_scale), ("logit_bias", logit_bias)):
        _check_device_fake(t, name, image_features)
    return (torch.empty_like(image_features, memory_format=torch.contiguous_format),
            torch.empty_like(text_features, memory_format=torch.contiguous_format),
            torch.empty_like(logit_scale), torch.empty_like(logit_bias))


# ----------------------------------------------------------------- autograd ---------------
def _clip_setup(ctx, inputs, output):
    image, text, scale = inputs
    _, row_lse, col_lse = output
    ctx.save_for_backward(image, text, scale, row_lse, col_lse)


@first_order("gencore.ops.clip_loss")
def _clip_bwd(ctx, grad_loss, _grad_row_lse, _grad_col_lse):
    image, text, scale, row_lse, col_lse = ctx.saved_tensors
    ga, gb, gs = _clip_backward(grad_loss, image, text, scale, row_lse, col_lse)
    return ga, gb, gs


def _ntxent_setup(ctx, inputs, output):
    z1, z2, t = inputs
    ctx.save_for_backward(z1, z2, t, output[1])


@first_order("gencore.ops.nt_xent_loss")
def _ntxent_bwd(ctx, grad_loss, _grad_lse):
    z1, z2, t, lse = ctx.saved_tensors
    return _ntxent_backward(grad_loss, z1, z2, t, lse)


def _rows_setup(ctx, inputs, output):
    query, keys, scale, positive, exclude = inputs
    ctx.save_for_backward(query, keys, scale, positive, exclude, output[1])


@first_order("gencore.ops.contrastive_cross_entropy")
def _rows_bwd(ctx, grad_loss, _grad_lse):
    query, keys, scale, positive, exclude, lse = ctx.saved_tensors
    gq, gk, gs = _rows_backward(grad_loss, query, keys, scale, positive, exclude, lse)
    return gq, gk, gs, None, None


def _sigmoid_setup(ctx, inputs, output):
    image, text, scale, bias, offset = inputs
    ctx.offset = offset
    ctx.save_for_backward(image, text, scale, bias)


@first_order("gencore.ops.sigmoid_contrastive_loss")
def _sigmoid_bwd(ctx, grad_loss):
    image, text, scale, bias = ctx.saved_tensors
    gi, gt, gs, gb = _sigmoid_backward(grad_loss, image, text, scale, bias, ctx.offset)
    return gi, gt, gs, gb, None


torch.library.register_autograd("gencore::sigmoid_contrastive_loss", _sigmoid_bwd, setup_context=_sigmoid_setup)


# The log-sum-exp outputs are the backward's saved statistics, not part of the loss: the
# wrappers never return them, and their incoming gradients are ignored.
torch.library.register_autograd("gencore::clip_loss", _clip_bwd, setup_context=_clip_setup)
torch.library.register_autograd("gencore::nt_xent_loss", _ntxent_bwd, setup_context=_ntxent_setup)
torch.library.register_autograd("gencore::contrastive_rows", _rows_bwd, setup_context=_rows_setup)


def _function(name, op, setup, backward):
    """A setup_context-style autograd.Function over ``op`` with the formula above, used
    under torch.func transforms (ops/_autograd.py)."""

    def forward(*inputs):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*inputs)

    return type(name, (torch.autograd.Function,), {
        "generate_vmap_rule": True,
        "forward": staticmethod(forward),
        "setup_context": staticmethod(lambda ctx, inputs, output: setup(ctx, inputs, output)),
        "backward": staticmethod(backward),
    })


_ClipLoss = _function("_ClipLoss", _clip, _clip_setup, _clip_bwd)
_NTXentLoss = _function("_NTXentLoss", _ntxent, _ntxent_setup, _ntxent_bwd)
_ContrastiveRows = _function("_ContrastiveRows", _rows, _rows_setup, _rows_bwd)
_SigmoidLoss = _function("_SigmoidLoss", _sigmoid, _sigmoid_setup, _sigmoid_bwd)


class _SigmoidLossWithGrads(torch.autograd.Function):
    """The sigmoid loss where a gradient will be wanted: the forward returns the loss and
    keeps its gradients at ``grad_loss = 1``, all from one visit of the logits
    (``gencore::sigmoid_contrastive_loss_with_grads``; on CUDA's GEMM path three products
    where a forward and a separate backward take four); the backward scales them by
    ``grad_loss`` (the loss's gradients are linear in it). Memory: the gradients,
    ``O((n + m) D)``, held from the forward. The inputs are saved too (no copy), so that a
    second derivative raises (first_order) instead of being silently zero."""

    @staticmethod
    def forward(ctx, query, keys, scale, bias, offset):
        loss, gq, gk, gs, gb = _sigmoid_with_grads(query, keys, scale, bias, offset)
        ctx.save_for_backward(query, keys, scale, bias, gq, gk, gs, gb)
        return loss

    @staticmethod
    @first_order("gencore.ops.sigmoid_contrastive_loss")
    def backward(ctx, grad_loss):
        grads = ctx.saved_tensors[4:]
        return (*(g * grad_loss if need else None for g, need in zip(grads, ctx.needs_input_grad)), None)
