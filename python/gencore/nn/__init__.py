"""Drop-in ``torch.nn`` modules over the fused ops."""

from gencore.nn.contrastive import CLIPLoss, NTXentLoss, SigLIPLoss
from gencore.nn.coupling import AffineCoupling
from gencore.nn.flow_layers import (
    ActNorm,
    AdditiveCoupling,
    ConvConditioner,
    DiagonalScale,
    FactorOut,
    InvertibleLinear,
    Reverse,
    Squeeze,
)
from gencore.nn.layers import MADE, MLP, MaskedLinear
from gencore.nn.reparam import Reparameterize
from gencore.nn.spline import AutoregressiveSpline, SplineCoupling
from gencore.nn.vq import VectorQuantizer, VQOutput

__all__ = ["AffineCoupling", "AdditiveCoupling", "ActNorm", "DiagonalScale", "Reverse", "Squeeze",
           "FactorOut", "InvertibleLinear", "ConvConditioner", "MLP", "Reparameterize",
           "NTXentLoss", "CLIPLoss", "SigLIPLoss", "VectorQuantizer", "VQOutput", "SplineCoupling",
           "AutoregressiveSpline", "MADE", "MaskedLinear"]
