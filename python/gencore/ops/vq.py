"""Vector quantization: each row's nearest code in a codebook, without the ``(N, K)`` distances.

The eager way (``torch.cdist`` or ``|x|^2 + |c|^2 - 2 x c^T``, then ``argmin``) stores
several ``(N, K)`` matrices: at ``N = 32768`` tokens and ``K = 8192`` codes each is 1 GiB in
float32. :func:`nearest_code` visits the distances tile by tile (a GEMM per tile with a
fused minimum-and-index epilogue) and keeps only each row's running best: memory
``O((N + K) D)``. The schema is in ``csrc/registration.cpp``, the kernels in ``csrc/vq/``.
"""

from __future__ import annotations

import torch

from gencore.ops._autograd import first_order, transforms_active
from gencore.ops._errors import check_tensors, typed

__all__ = ["nearest_code"]

_op = typed(torch.ops.gencore.nearest_code.default)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, *, cosine: bool = False):
    """The nearest code of every row of ``x``, and the squared distance to it.

    ``indices[i] = argmin_j |x_i - codebook_j|^2`` (ties to the lowest ``j``), computed
    from ``|codebook_j|^2 - 2 <x_i, codebook_j>``, so codes of different norms are compared
    correctly; ``sq_dist[i] = |x_i - codebook_{indices[i]}|^2``, recomputed exactly from
    the chosen code (no cancellation of the norms). With ``cosine=True`` both ``x`` and
    the codes are first scaled to unit length (rows of norm below ``1e-12`` divided by
    ``1e-12``, as ``F.normalize``): the nearest code is the one of highest cosine
    similarity and ``sq_dist = |x̂ - ĉ|^2 = 2 - 2 cos``.

    The search is deterministic: it does not depend on the thread count (CPU) or on the
    order in which blocks run (CUDA). NaNs: a NaN distance never wins; a row whose
    distances are all NaN or ``+inf`` gets index 0 (and a NaN ``sq_dist`` when the row
    has a NaN).

    Args:
        x: ``(N, D)`` vectors to quantize. CPU: float32/float64; CUDA: also
            float16/bfloat16 (float32 accumulation). ``N = 0`` gives empty results.
        codebook: ``(K, D)`` codes, ``K >= 1``, same dtype and device.
        cosine: compare directions (unit rows) instead of points.

    Returns:
        ``(indices, sq_dist)``: ``(N,)`` int64 and ``(N,)`` in ``x``'s dtype.
        ``sq_dist`` is differentiable in ``x`` and ``codebook`` (the gradient flows to the
        chosen codes only; ``indices`` is piecewise constant and has none).

    Raises:
        ValueError: shapes are not ``(N, D)`` and ``(K, D)`` with one ``D``, an empty
            codebook, tensors on different devices.
        TypeError: non-floating or mismatched dtypes, ``cosine`` not a bool.
    """
    check_tensors(x=x, codebook=codebook)
    if not isinstance(cosine, bool):
        raise TypeError(f"gencore: cosine must be a bool, got {type(cosine).__name__}")
    if transforms_active("gencore.ops.nearest_code", x, codebook):
        sq_dist, indices = _NearestCode.apply(x, codebook, cosine)
    else:
        sq_dist, indices = _op(x, codebook, cosine=cosine)
    return indices, sq_dist


# ----------------------------------------------------------------- fake kernel ------------
@torch.library.register_fake("gencore::nearest_code")
def _(x, codebook, *, cosine=False):
    torch._check_value(x.dim() == 2, lambda: f"gencore: x must have shape (N, D), got {tuple(x.shape)}")
    torch._check_value(codebook.dim() == 2,
                       lambda: f"gencore: codebook must have shape (K, D), got {tuple(codebook.shape)}")
    torch._check_type(x.dtype.is_floating_point, lambda: f"gencore: x must be floating-point, got {x.dtype}")
    torch._check_type(x.dtype == codebook.dtype, lambda: "gencore: x and codebook must have the same dtype")
    torch._check_value(x.device == codebook.device, lambda: "gencore: x and codebook must be on the same device")
    torch._check_value(x.shape[1] == codebook.shape[1],
                       lambda: "gencore: x and codebook must have the same code dimension D")
    torch._check_value(codebook.shape[0] > 0, lambda: "gencore: codebook must have at least one code")
    n = x.shape[0]
    return x.new_empty((n,)), x.new_empty((n,), dtype=torch.int64)


# ----------------------------------------------------------------- autograd ---------------
def _unit(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``t`` in the accumulation dtype scaled to unit length, and the clamped norms."""
    norm = t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return t / norm, norm


def _through_unit(grad: torch.Tensor, unit: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """The gradient with respect to ``t`` of a function of ``unit = t / max(|t|, 1e-12)``,
    given its gradient with respect to ``unit`` (F.normalize's backward)."""
    proj = (grad * unit).sum(1, keepdim=True)
    clamped = norm <= 1e-12
    return torch.where(clamped, grad / norm, (grad - unit * proj) / norm)


def _save(ctx, x, codebook, cosine, indices):
    ctx.cosine = cosine
    ctx.save_for_backward(x, codebook, indices)


def _setup(ctx, inputs, keyword_only_inputs, output):
    _save(ctx, *inputs, keyword_only_inputs.get("cosine", False), output[1])


def _function_setup(ctx, inputs, output):  # the torch.func path: cosine is positional
    _save(ctx, *inputs, output[1])


@first_order("gencore.ops.nearest_code")
def _backward(ctx, grad_sq, _grad_indices):
    # sq_dist_i = |u_i - v_{idx_i}|^2 with u, v the rows (cosine: unit rows) of x and the
    # codebook: d/du_i = 2 g_i (u_i - v_idx), d/dv_idx = -(the same), summed per code.
    x, codebook, indices = ctx.saved_tensors
    if grad_sq is None:
        return None, None, None
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xa, ca, g = x.to(acc), codebook.to(acc), grad_sq.to(acc)
    if ctx.cosine:
        (xu, xn), (cu, cn) = _unit(xa), _unit(ca)
        # the forward searched and measured the unit rows rounded to the input dtype
        xr, cr = xu.to(x.dtype).to(acc), cu.to(x.dtype).to(acc)
        gu = 2 * g[:, None] * (xr - cr.index_select(0, indices))
        gv = torch.zeros_like(ca).index_add(0, indices, -gu)
        gx, gc = _through_unit(gu, xu, xn), _through_unit(gv, cu, cn)
    else:
        gx = 2 * g[:, None] * (xa - ca.index_select(0, indices))
        gc = torch.zeros_like(ca).index_add(0, indices, -gx)
    gx = gx.to(x.dtype) if ctx.needs_input_grad[0] else None
    gc = gc.to(codebook.dtype) if ctx.needs_input_grad[1] else None
    return gx, gc, None


def _op_backward(ctx, grad_sq, grad_indices):
    # The registered op has two positional inputs (cosine is keyword-only): torch 2.14
    # refuses a third gradient, which the autograd.Function path below needs.
    return _backward(ctx, grad_sq, grad_indices)[:2]


torch.library.register_autograd("gencore::nearest_code", _op_backward, setup_context=_setup)


def _forward(x, codebook, cosine):
    with torch._C._AutoDispatchBelowAutograd():
        return _op(x, codebook, cosine=cosine)


_NearestCode = type("_NearestCode", (torch.autograd.Function,), {
    "generate_vmap_rule": True,
    "forward": staticmethod(_forward),
    "setup_context": staticmethod(_function_setup),
    "backward": staticmethod(_backward),
})
