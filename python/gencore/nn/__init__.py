"""Drop-in ``torch.nn`` modules over the fused ops."""

from gencore.nn.coupling import AffineCoupling
from gencore.nn.flow_layers import ActNorm, AdditiveCoupling, DiagonalScale, Reverse
from gencore.nn.layers import MLP

__all__ = ["AffineCoupling", "AdditiveCoupling", "ActNorm", "DiagonalScale", "Reverse", "MLP"]
