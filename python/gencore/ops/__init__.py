"""Fused operators. Each wraps a ``torch.ops.gencore`` op with its fake kernel and autograd."""

from gencore.ops.coupling import affine_coupling

__all__ = ["affine_coupling"]
