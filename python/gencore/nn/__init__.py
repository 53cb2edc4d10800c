"""Drop-in ``torch.nn`` modules over the fused ops."""

from gencore.nn.coupling import AffineCoupling
from gencore.nn.layers import MLP

__all__ = ["AffineCoupling", "MLP"]
