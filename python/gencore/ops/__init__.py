"""Fused operators. Each wraps a ``torch.ops.gencore`` op with its fake kernel and autograd."""

from gencore.ops.contrastive import (clip_loss, contrastive_cross_entropy, nt_xent_loss, sigmoid_contrastive_loss,
                                    sigmoid_contrastive_pairs)
from gencore.ops.coupling import affine_coupling, masked_affine_coupling
from gencore.ops.reparam import draw_rng_state, reparameterize
from gencore.ops.spline import rq_spline
from gencore.ops.vq import nearest_code

__all__ = ["affine_coupling", "masked_affine_coupling", "reparameterize", "draw_rng_state", "clip_loss", "nt_xent_loss",
           "contrastive_cross_entropy", "sigmoid_contrastive_loss", "sigmoid_contrastive_pairs", "nearest_code",
           "rq_spline"]
