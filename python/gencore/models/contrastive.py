"""Contrastive representation learning: SimCLR (two augmented views of one digit) and CLIP
(a digit and the caption that describes it).

Both learn an encoder without reconstructing anything: the loss asks the representation of an
item to be closer to its positive partner than to every other item of the batch.

* :class:`SimCLR`: ``z = g(f(aug(x)))`` for two random views, NT-Xent loss
  (:class:`gencore.nn.NTXentLoss`); the representation is ``f(x)``, the encoder before the
  projection head ``g``.
* :class:`CLIP`: an image encoder and a text encoder mapped into one space of unit vectors,
  the symmetric loss with a learnable logit scale (:class:`gencore.nn.CLIPLoss`); the text
  side classifies images "zero-shot" through class captions, and differences of text
  embeddings carry properties ("bold seven" - "seven" + "two" lands on bold twos).

Both losses run on the fused, tiled ops (the ``N x N`` similarity matrix is never stored) and,
with ``distributed=True``, are exact across ``torch.distributed`` ranks. The default encoders
are sized for the embedded 8x8 digits (:func:`gencore.data.load_dataset`); any module that
maps ``(B, 1, 8, 8)`` images (or ``(B, T)`` tokens) to ``(B, F)`` features can replace them.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gencore.data.augment import DEFAULT_AUGMENT, augment_digits, digit_images, digit_views
from gencore.data.captions import VOCAB
from gencore._arguments import check_bool, check_choice, check_size, check_widths, plain_config
from gencore.models._common import check_like_model
from gencore.models._common import in_eval as _in_eval
from gencore.nn import MLP, CLIPLoss, NTXentLoss, SigLIPLoss

__all__ = ["SimCLR", "CLIP", "digit_encoder", "TokenEncoder", "ENCODER_KINDS"]

ENCODER_KINDS = ("conv", "mlp")
DEFAULT_HIDDEN = {"conv": (32, 64, 128), "mlp": (512, 256)}


def _encoder_args(kind, feature_dim, hidden, owner: str, feature_name: str = "feature_dim"):
    """The default image encoder's arguments, checked under ``owner``'s names: ``(kind,
    feature_dim, hidden)`` with ``None`` replaced by the defaults (128 features, the kind's
    widths) and ``hidden`` as a list of ints."""
    check_choice(kind, ENCODER_KINDS, f"{owner}: kind")
    feature_dim = check_size(128 if feature_dim is None else feature_dim, f"{owner}: {feature_name}")
    hidden = check_widths(DEFAULT_HIDDEN[kind] if hidden is None else hidden, f"{owner}: hidden")
    return kind, feature_dim, hidden


def digit_encoder(kind: str = "conv", feature_dim: int = 128, hidden: Sequence[int] | None = None) -> nn.Module:
    """A small encoder of 8x8 digits ``(B, 1, 8, 8) -> (B, feature_dim)``.

    ``"conv"``: a 3x3 convolution of ``hidden[0]`` channels at 8x8, then one 3x3 stride-2
    convolution per further width (8 -> 4 -> 2 for three widths), ReLU after each, flattened
    and mapped linearly to ``feature_dim``. ``"mlp"``: the 64 pixels through
    ``MLP(64 -> hidden... -> feature_dim)`` with ReLU.
    """
    kind, feature_dim, hidden = _encoder_args(kind, feature_dim, hidden, "digit_encoder")
    hidden = tuple(hidden)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), MLP(64, feature_dim, hidden))
    if len(hidden) > 4:
        raise ValueError(f"digit_encoder: kind='conv' takes at most 4 widths (8x8 halves 3 times), got {hidden!r}")
    layers: list[nn.Module] = [nn.Conv2d(1, hidden[0], 3, padding=1), nn.ReLU()]
    size = 8
    for a, b in zip(hidden[:-1], hidden[1:]):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU()]
        size //= 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(hidden[-1] * size * size, feature_dim))


class TokenEncoder(nn.Module):
    """Bag-of-tokens text encoder ``(B, T) int64 -> (B, feature_dim)``: token embeddings
    (id 0 is padding, ignored), averaged over the caption's tokens, through an MLP.

    Args:
        vocab_size: number of token ids (``len(gencore.data.VOCAB)`` for the digit captions).
        feature_dim: output size.
        width: token embedding size.
        hidden: hidden sizes of the MLP after pooling.
    """

    def __init__(self, vocab_size: int = len(VOCAB), feature_dim: int = 128, width: int = 64,
                 hidden: Sequence[int] = (128,)) -> None:
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("feature_dim", feature_dim), ("width", width)):
            check_size(v, f"TokenEncoder: {name}")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, width, padding_idx=0)
        self.mlp = MLP(width, feature_dim, check_widths(hidden, "TokenEncoder: hidden", allow_empty=True))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != 0).unsqueeze(-1).to(self.embedding.weight.dtype)
        pooled = (self.embedding(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.mlp(pooled)


class SimCLR(nn.Module):
    """SimCLR on 8x8 digits: two random views per digit, encoder ``f``, projection head ``g``,
    NT-Xent loss on ``g(f(view))``.

    Args:
        encoder: a module ``(B, 1, 8, 8) -> (B, feature_dim)``; None builds
            :func:`digit_encoder` ``(kind, feature_dim, hidden)``. A custom encoder is not
            rebuilt from ``config`` (load its checkpoint with ``load_checkpoint(path, model)``).
        projection_dim: size of ``g``'s output, where the loss is computed.
        feature_dim: size of the representation ``f(x)`` (default 128; inferred from a custom encoder).
        kind, hidden: the default encoder's architecture (``"conv"`` or ``"mlp"``).
        projection_hidden: hidden size of the two-layer head ``g``.
        temperature: NT-Xent temperature (positive).
        learnable_temperature: learn it (``gencore.nn.NTXentLoss(learnable=True)``).
        augment: options of :func:`gencore.data.augment_digits` overriding
            :data:`gencore.data.DEFAULT_AUGMENT`.
        distributed: gather negatives across ``torch.distributed`` ranks (exact global loss).

    Units: :meth:`loss` in nats per view (mean over the ``2B`` rows).
    """

    def __init__(self, encoder: nn.Module | None = None, projection_dim: int = 32, *, feature_dim: int | None = None,
                 kind: str = "conv", hidden: Sequence[int] | None = None, projection_hidden: int = 128,
                 temperature: float = 0.5, learnable_temperature: bool = False, augment: dict | None = None,
                 distributed: bool = False) -> None:
        super().__init__()
        projection_dim = check_size(projection_dim, "SimCLR: projection_dim")
        projection_hidden = check_size(projection_hidden, "SimCLR: projection_hidden")
        check_bool(distributed, "SimCLR: distributed")
        check_bool(learnable_temperature, "SimCLR: learnable_temperature")
        self.augment = _augment_options(augment, "SimCLR")
        if encoder is None:
            kind, feature_dim, hidden = _encoder_args(kind, feature_dim, hidden, "SimCLR")
            self.encoder = digit_encoder(kind, feature_dim, hidden)
            enc_config = {"kind": kind, "hidden": hidden}
        else:
            feature_dim = _custom_encoder(encoder, feature_dim, "SimCLR", "encoder")
            self.encoder = encoder
            enc_config = {"encoder": "custom"}
        self.feature_dim = feature_dim
        self.projection_dim = projection_dim
        self.projector = MLP(feature_dim, projection_dim, (projection_hidden,))
        self.criterion = NTXentLoss(temperature, distributed=distributed, learnable=learnable_temperature)
        self.config = plain_config({"projection_dim": projection_dim, "feature_dim": feature_dim, **enc_config,
                                    "projection_hidden": projection_hidden, "temperature": float(temperature),
                                    "learnable_temperature": learnable_temperature, "augment": _jsonable(self.augment),
                                    "distributed": distributed})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The representation ``f(x)``: ``x (B, 64)`` or ``(B, 1, 8, 8)`` -> ``(B, feature_dim)``
        (differentiable, in the module's current mode)."""
        return self.encoder(_digit_images(x, "SimCLR", self.encoder))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` in eval mode without gradients, ``(B, feature_dim)``: the features a linear
        probe or kNN classifier uses."""
        return _in_eval(self, lambda: self.forward(x))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``g(f(x))``, ``(B, projection_dim)``: where the loss compares views."""
        return self.projector(self.forward(x))

    def loss(self, batch) -> torch.Tensor:
        """NT-Xent of two fresh random views of ``batch`` (``x`` or ``(x, ...)``: extra entries
        such as labels are ignored), in nats. The views come from a generator seeded from
        torch's global RNG, so ``torch.manual_seed`` (and ``fit``'s ``seed``) reproduce them."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        img = _digit_images(x, "SimCLR", self.encoder)
        g = _generator_from_global_rng(img.device)
        v1, v2 = digit_views(img, g, **self.augment)
        z = self.projector(self.encoder(torch.cat([v1, v2])))
        n = img.shape[0]
        return self.criterion(z[:n], z[n:])


#: CLIP's losses: the name of ``CLIP(loss=...)`` -> the criterion module.
LOSSES = {"softmax": CLIPLoss, "siglip": SigLIPLoss}


class CLIP(nn.Module):
    """CLIP on digits with captions: image and text encoders, linear projections into a shared
    ``embed_dim`` space of unit vectors, the symmetric contrastive loss with a learnable logit
    scale (``gencore.nn.CLIPLoss``: initialised to ``ln(1/0.07)``, scale clamped at 100).

    Args:
        image_encoder: ``(B, 1, 8, 8) -> (B, image_feature_dim)``; None builds
            :func:`digit_encoder` ``(kind, image_feature_dim, hidden)``.
        text_encoder: ``(B, T) int64 -> (B, text_feature_dim)``; None builds
            :class:`TokenEncoder` ``(vocab_size, text_feature_dim, token_dim, text_hidden)``.
            Custom encoders are not rebuilt from ``config``.
        embed_dim: size of the shared embedding.
        image_feature_dim, text_feature_dim: encoder output sizes (default 128; inferred from
            custom encoders).
        kind, hidden: the default image encoder's architecture.
        vocab_size, token_dim, text_hidden: the default text encoder.
        token_dropout: in training, drop each caption token with this probability (a caption
            never loses all its tokens), so partial captions ("seven", "bold seven") are
            in-distribution: what zero-shot prompts and caption arithmetic use.
        augment: None (no image augmentation) or options of
            :func:`gencore.data.augment_digits` applied to the training images ({} for the
            defaults, :data:`gencore.data.DEFAULT_AUGMENT`). Off by default: rotations and
            intensity changes alter the slant and stroke the digit captions describe (measured
            on digits-captions: image->text recall@1 0.62 -> 0.28, caption arithmetic 0.87 -> 0.58).
        distributed: gather negatives across ``torch.distributed`` ranks (exact global loss).
        loss: ``"softmax"`` (CLIP's symmetric cross-entropy, :class:`gencore.nn.CLIPLoss`) or
            ``"siglip"`` (the sigmoid loss of every pair with a learnable scale and bias,
            :class:`gencore.nn.SigLIPLoss`, initialised at scale 10 and bias -10).

    Units: :meth:`loss` in nats: the mean of the image->text and text->image cross-entropies
    (softmax), or the sum over a row's pairs of the binary log-losses, averaged over images
    (siglip).
    """

    def __init__(self, image_encoder: nn.Module | None = None, text_encoder: nn.Module | None = None,
                 embed_dim: int = 32, *, image_feature_dim: int | None = None, text_feature_dim: int | None = None,
                 kind: str = "conv", hidden: Sequence[int] | None = None, vocab_size: int = len(VOCAB),
                 token_dim: int = 64, text_hidden: Sequence[int] = (128,), token_dropout: float = 0.0,
                 augment: dict | None = None, distributed: bool = False, loss: str = "softmax") -> None:
        super().__init__()
        embed_dim = check_size(embed_dim, "CLIP: embed_dim")
        check_bool(distributed, "CLIP: distributed")
        check_choice(loss, LOSSES, "CLIP: loss")
        vocab_size = check_size(vocab_size, "CLIP: vocab_size")
        if isinstance(token_dropout, bool) or not isinstance(token_dropout, numbers.Real) \
                or not 0 <= token_dropout < 1:
            raise ValueError(f"CLIP: token_dropout must be a number in [0, 1), got {token_dropout!r}")
        self.augment = None if augment is None else _augment_options(augment, "CLIP")
        config: dict = {"embed_dim": embed_dim}
        if image_encoder is None:
            kind, image_feature_dim, hidden = _encoder_args(kind, image_feature_dim, hidden, "CLIP",
                                                            "image_feature_dim")
            self.image_encoder = digit_encoder(kind, image_feature_dim, hidden)
            config.update(kind=kind, hidden=hidden)
        else:
            image_feature_dim = _custom_encoder(image_encoder, image_feature_dim, "CLIP", "image_encoder")
            self.image_encoder = image_encoder
            config["image_encoder"] = "custom"
        if text_encoder is None:
            text_feature_dim = check_size(128 if text_feature_dim is None else text_feature_dim,
                                          "CLIP: text_feature_dim")
            token_dim = check_size(token_dim, "CLIP: token_dim")
            text_hidden = check_widths(text_hidden, "CLIP: text_hidden", allow_empty=True)
            self.text_encoder = TokenEncoder(vocab_size, text_feature_dim, token_dim, text_hidden)
            config.update(token_dim=token_dim, text_hidden=text_hidden)
        else:
            text_feature_dim = _custom_text_encoder(text_encoder, text_feature_dim)
            self.text_encoder = text_encoder
            config["text_encoder"] = "custom"
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.image_feature_dim, self.text_feature_dim = image_feature_dim, text_feature_dim
        self.token_dropout = float(token_dropout)
        self.image_projection = nn.Linear(image_feature_dim, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_feature_dim, embed_dim, bias=False)
        self.loss_kind = loss
        self.criterion = LOSSES[loss](distributed=distributed)
        config.update(image_feature_dim=image_feature_dim, text_feature_dim=text_feature_dim, vocab_size=vocab_size,
                      token_dropout=self.token_dropout,
                      augment=None if self.augment is None else _jsonable(self.augment),
                      distributed=distributed, loss=loss)
        self.config = plain_config(config)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The learned (clamped) logit scale, a 0-d tensor."""
        return self.criterion.logit_scale

    def _tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"CLIP: tokens must be a tensor, got {type(tokens).__name__}")
        if tokens.dtype.is_floating_point or tokens.dtype in (torch.bool, torch.complex64, torch.complex128):
            raise TypeError(f"CLIP: tokens must be an integer tensor of token ids, got {tokens.dtype}")
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"CLIP: tokens must have shape (B, T) with T >= 1, got {tuple(tokens.shape)}")
        if tokens.shape[0] == 0:
            raise ValueError("CLIP: tokens is an empty batch")
        bad = (tokens < 0) | (tokens >= self.vocab_size)
        if bad.any():
            raise ValueError(f"CLIP: unknown caption token id {tokens[bad][0].item()}; "
                             f"ids are 0..{self.vocab_size - 1}")
        empty = (tokens == 0).all(1)
        if empty.any():
            raise ValueError(f"CLIP: caption {int(empty.nonzero()[0, 0])} has no tokens (all padding)")
        return tokens.long()

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings ``(B, embed_dim)`` of ``x (B, 64)`` or ``(B, 1, 8, 8)``
        (differentiable, in the module's current mode)."""
        h = self.image_encoder(_digit_images(x, "CLIP", self.image_encoder))
        return F.normalize(self.image_projection(h), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit-norm text embeddings ``(B, embed_dim)`` of captions ``(B, T)`` (int64 ids of
        :data:`gencore.data.VOCAB`, 0 = padding)."""
        h = self.text_encoder(self._tokens(tokens))
        return F.normalize(self.text_projection(h), dim=-1)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image encoder features before the projection, eval mode, no gradients:
        ``(B, image_feature_dim)`` (for linear probes and kNN)."""
        return _in_eval(self, lambda: self.image_encoder(_digit_images(x, "CLIP", self.image_encoder)))

    @torch.no_grad()
    def class_embeddings(self, class_prompts) -> torch.Tensor:
        """Unit-norm embedding per class ``(C, embed_dim)`` from prompts: a ``(C, T)`` token
        tensor (one prompt per class) or a list of C tensors ``(P, T)`` / ``(T,)`` whose
        embeddings are averaged (prompt ensembling). Prompts are moved to the model's device."""
        device = self.text_projection.weight.device
        if isinstance(class_prompts, torch.Tensor):
            if class_prompts.dim() != 2:
                raise ValueError(f"CLIP: class_prompts must be (C, T) or a list of (P, T) tensors, got "
                                 f"{tuple(class_prompts.shape)}")
            return _in_eval(self, lambda: self.encode_text(class_prompts.to(device)))
        prompts = list(class_prompts)
        if not prompts:
            raise ValueError("CLIP: class_prompts is empty")

        def one(p):
            p = torch.as_tensor(p).to(device)
            e = self.encode_text(p.reshape(1, -1) if p.dim() == 1 else p)
            return F.normalize(e.mean(0), dim=-1)

        return _in_eval(self, lambda: torch.stack([one(p) for p in prompts]))

    @torch.no_grad()
    def zero_shot_classify(self, x: torch.Tensor, class_prompts, *, return_scores: bool = False):
        """Zero-shot classes of images ``x (B, 64)`` or ``(B, 1, 8, 8)``: the class whose prompt
        embedding (:meth:`class_embeddings`) has the highest cosine with the image embedding.

        Returns:
            ``(B,)`` int64 class indices (positions in ``class_prompts``); with
            ``return_scores`` also the ``(B, C)`` cosine similarities.
        """
        cls = self.class_embeddings(class_prompts)
        img = _in_eval(self, lambda: self.encode_image(x))
        scores = img @ cls.T
        pred = scores.argmax(1)
        return (pred, scores) if return_scores else pred

    def _drop_tokens(self, tokens: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        keep = torch.rand(tokens.shape, generator=g, device=tokens.device) >= self.token_dropout
        dropped = tokens.masked_fill(~keep, 0)
        # A caption that lost every token keeps them all; the surviving tokens move to the
        # front so that position-aware text encoders see the usual right padding.
        dropped = torch.where((dropped == 0).all(1, keepdim=True), tokens, dropped)
        order = torch.sort((dropped == 0).to(torch.int8), dim=1, stable=True).indices
        return dropped.gather(1, order)

    def loss(self, batch) -> torch.Tensor:
        """CLIP loss of a batch ``(images, tokens)`` (or ``(images, tokens, labels)``, labels
        ignored): images ``(B, 64)`` or ``(B, 1, 8, 8)``, tokens ``(B, T)``; in nats. In
        training mode with ``augment`` / ``token_dropout`` the images are augmented and
        tokens dropped first, from a generator seeded from torch's global RNG."""
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError("CLIP.loss: batch must be (images, tokens) or (images, tokens, labels)")
        x, tokens = batch[0], batch[1]
        img = _digit_images(x, "CLIP", self.image_encoder)
        tokens = self._tokens(tokens)
        if img.shape[0] != tokens.shape[0]:
            raise ValueError(f"CLIP.loss: {img.shape[0]} images but {tokens.shape[0]} captions")
        if self.training and (self.augment is not None or self.token_dropout > 0):
            g = _generator_from_global_rng(img.device)
            if self.augment is not None:
                img = augment_digits(img, g, **self.augment)
            if self.token_dropout > 0:
                tokens = self._drop_tokens(tokens, g)
        return self.criterion(self.encode_image(img), self.encode_text(tokens))


# ---- helpers ------------------------------------------------------------------------------

def _digit_images(x, owner: str, encoder: nn.Module) -> torch.Tensor:
    """``x: (B, 64)`` or ``(B, 1, 8, 8)`` floating, non-empty, finite, of the dtype and on
    the device of ``encoder`` (the module that reads it) -> ``(B, 1, 8, 8)``."""
    img = digit_images(x, owner)
    check_like_model(img, encoder, owner)
    if not torch.isfinite(img).all():
        raise ValueError(f"{owner}: x contains NaN or infinite values")
    return img


def _augment_options(augment, owner: str) -> dict:
    if augment is None:
        return dict(DEFAULT_AUGMENT)
    if not isinstance(augment, dict):
        raise TypeError(f"{owner}: augment must be a dict of augment_digits options or None, got "
                        f"{type(augment).__name__}")
    unknown = set(augment) - set(DEFAULT_AUGMENT)
    if unknown:
        raise ValueError(f"{owner}: unknown augment option(s) {sorted(unknown)}; available: {sorted(DEFAULT_AUGMENT)}")
    opts = {**DEFAULT_AUGMENT, **augment}
    # Fail at construction, not at the first training step (on the CPU even where the model
    # is built under another default device, such as the meta device of models.build's count).
    augment_digits(torch.zeros(1, 64, device="cpu"), torch.Generator("cpu").manual_seed(0), **opts)
    return opts


def _jsonable(opts: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}


def _custom_encoder(encoder, feature_dim, owner: str, name: str) -> int:
    """Output size of a custom image encoder, probed on two blank digits."""
    def probe(p):
        return torch.zeros(2, 1, 8, 8, dtype=p.dtype if p is not None else torch.float32,
                           device=p.device if p is not None else "cpu")

    return _probe_encoder(encoder, feature_dim, owner, name, probe, "(B, 1, 8, 8)", "feature_dim")


def _custom_text_encoder(encoder, feature_dim) -> int:
    """Output size of a custom text encoder, probed on two 3-token captions."""
    def probe(p):
        return torch.ones(2, 3, dtype=torch.int64, device=p.device if p is not None else "cpu")

    return _probe_encoder(encoder, feature_dim, "CLIP", "text_encoder", probe, "(B, T) tokens", "text_feature_dim")


def _probe_encoder(encoder, feature_dim, owner: str, name: str, probe, input_desc: str, dim_name: str) -> int:
    if isinstance(encoder, str):
        raise ValueError(f"{owner}: {name}={encoder!r}: a model with a custom {name} is not rebuilt from its "
                         "config; construct it with the module and pass it to load_checkpoint(path, model)")
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"{owner}: {name} must be an nn.Module or None, got {type(encoder).__name__}")
    x = probe(next(encoder.parameters(), None))
    with torch.no_grad():
        out = _in_eval(encoder, lambda: encoder(x))
    if out.dim() != 2 or out.shape[0] != 2:
        raise ValueError(f"{owner}: {name} must map {input_desc} to (B, F), got {tuple(out.shape)} for B = 2")
    if feature_dim is not None and feature_dim != out.shape[1]:
        raise ValueError(f"{owner}: {dim_name}={feature_dim} but {name} outputs {out.shape[1]} features")
    return int(out.shape[1])


def _generator_from_global_rng(device: torch.device) -> torch.Generator:
    # One draw from the global RNG seeds the augmentation stream: fit's torch.manual_seed
    # fixes every view, and the views of one call do not depend on how many numbers they use.
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
    return torch.Generator(device=device).manual_seed(seed)
