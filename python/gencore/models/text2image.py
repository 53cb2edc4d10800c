"""Text to image in the DALL-E 1 form: captions and VQ codes as one token sequence.

The lecture closes its "giving up on the dream" section with CLIP and DALL-E: one model
aligns text and images, the other draws an image from text. DALL-E (Ramesh et al., 2021)
joins the two lines of the lecture that came apart: a discrete auto-encoder turns every
image into a grid of tokens (here :class:`gencore.models.VQVAE`: an 8x8 digit is a 4x4 grid
of codes), and a decoder-only transformer models the concatenation

    [caption tokens, image tokens],   p(z | c) = prod_t p(z_t | c, z_<t),

trained with cross-entropy on the image tokens (:class:`CaptionPrior`, attention by
``torch.nn.functional.scaled_dot_product_attention``). Drawing an image for a caption
samples the 16 codes one by one (temperature, top-k) and decodes them. DALL-E then
generated many candidates per caption and kept the best by CLIP's image-text similarity;
:class:`TextToImage` holds a :class:`gencore.models.CLIP` for that re-ranking, trained in
the same run.

One model, one loss (:meth:`TextToImage.loss`), nats per example:

    -log p(x | z_q(x))  +  commitment  -  log p(z_q(x) | c)  +  clip_weight * CLIP loss,

where the prior reads the codes of the current encoder (detached, as in
:class:`~gencore.models.VQVAE`), so :func:`gencore.train.fit` trains the codebook, the
decoder, the prior and the re-ranker together, with one checkpoint and exact resumption.
``-log p(x | z_q(x)) - log p(z_q(x) | c)`` bounds ``-log p(x | c)`` from above.

Captions are the words of :data:`gencore.data.VOCAB` (``"bold slanted seven"`` is not one:
the slants are ``left``, ``upright``, ``right``). Each word has its slot (stroke, slant,
class: :func:`caption_slots`), in any order, and any of them may be left out: a partial
caption (``"seven"``, ``"thin seven"``) asks for the missing properties at their training
frequencies; training drops words (``token_dropout``) and whole captions
(``caption_dropout``) so that partial and empty captions are in distribution, which also
gives the unconditional prior of classifier-free guidance (``guidance``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gencore.data.captions import CAPTION_LENGTH, CLASS_WORDS, SLANT_WORDS, STROKE_WORDS, VOCAB, encode_caption, \
    token_id
from gencore._arguments import check_depth, check_size, plain_config
from gencore.models._common import batch_starts, in_eval, require_int, require_nonneg_real, require_real
from gencore.models.contrastive import CLIP
from gencore.models.vqvae import VQVAE, _Block

__all__ = ["TextToImage", "CaptionPrior", "caption_slots"]

#: Token ids of each caption slot: stroke words, slant words, class words.
_SLOTS = tuple(torch.tensor([token_id(w) for w in words]) for words in (STROKE_WORDS, SLANT_WORDS, CLASS_WORDS))
_SLOT_NAMES = ("stroke", "slant", "class")
_SLOT_OF = {int(t): s for s, ids in enumerate(_SLOTS) for t in ids}


def caption_slots(captions) -> torch.Tensor:
    """Captions as slot tokens ``(B, 3)`` int64: column 0 the stroke word, 1 the slant, 2 the
    class (the order of :func:`gencore.data.caption_digits`), 0 where the caption leaves
    the slot open.

    Args:
        captions: a caption (``str``), a list of captions, or token ids ``(T,)`` / ``(B, T)``
            (0 = padding) of :data:`gencore.data.VOCAB`, words in any order.

    Raises:
        ValueError: an unknown word (the message lists the vocabulary), an unknown token id,
            two words for one slot (``"thin bold seven"``), an empty batch.
        TypeError: captions that are neither strings nor integer tensors.
    """
    if isinstance(captions, str) or (isinstance(captions, (list, tuple)) and captions
                                     and all(isinstance(c, str) for c in captions)):
        tokens = encode_caption(captions)
    elif isinstance(captions, torch.Tensor):
        tokens = captions
    elif isinstance(captions, (list, tuple)) and not captions:
        raise ValueError("TextToImage: no captions given")
    else:
        raise TypeError(f"TextToImage: captions must be a string, a list of strings or a tensor of token ids, "
                        f"got {type(captions).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise TypeError(f"TextToImage: caption tokens must be integer ids, got {tokens.dtype}")
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2 or tokens.shape[1] == 0:
        raise ValueError(f"TextToImage: caption tokens must have shape (B, T), got {tuple(tokens.shape)}")
    if tokens.shape[0] == 0:
        raise ValueError("TextToImage: empty batch of captions")
    tokens = tokens.long()
    bad = (tokens < 0) | (tokens >= len(VOCAB))
    if bool(bad.any()):
        raise ValueError(f"TextToImage: unknown caption token id {tokens[bad][0].item()}; ids are 0..{len(VOCAB) - 1} "
                         f"({', '.join(VOCAB[1:])})")
    out = torch.zeros(tokens.shape[0], CAPTION_LENGTH, dtype=torch.long, device=tokens.device)
    for s, ids in enumerate(_SLOTS):
        hit = torch.isin(tokens, ids.to(tokens.device))
        count = hit.sum(1)
        if bool((count > 1).any()):
            row = int((count > 1).nonzero()[0, 0])
            words = [VOCAB[t] for t in tokens[row][hit[row]].tolist()]
            raise ValueError(f"TextToImage: caption {row} names two {_SLOT_NAMES[s]} words ({' and '.join(words)})")
        out[:, s] = (tokens * hit).sum(1)
    return out


class CaptionPrior(nn.Module):
    """``p(z | c)``: a decoder-only transformer over ``[caption slots, image codes]``.

    The input is the 3 caption slot tokens (:func:`caption_slots`; 0 = open slot) followed by
    the codes ``z_0 .. z_{T-2}``; the outputs at the last caption position and at the codes
    predict ``z_0 .. z_{T-1}``. Token embeddings (caption words and codes in separate tables)
    plus learned positions, pre-norm causal blocks with dropout, a final norm and a linear
    head over the ``num_codes`` codes.

    Args:
        num_codes: ``K``; length: ``T`` codes per image (the grid in raster order).
        width, layers, heads: the transformer (``width`` divisible by ``heads``).
        dropout: on attention weights and residual branches, in training.
    """

    def __init__(self, num_codes: int, length: int, width: int = 128, layers: int = 4, heads: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        for name, v in (("num_codes", num_codes), ("length", length), ("width", width), ("heads", heads)):
            check_size(v, f"CaptionPrior: {name}")
        check_depth(layers, "CaptionPrior: layers")
        if width % heads:
            raise ValueError(f"CaptionPrior: width ({width}) must be divisible by heads ({heads})")
        dropout = require_real(dropout, "dropout", "CaptionPrior")
        if not 0 <= dropout < 1:
            raise ValueError(f"CaptionPrior: dropout must lie in [0, 1), got {dropout!r}")
        self.num_codes, self.length = num_codes, length
        self.words = nn.Embedding(len(VOCAB), width)
        self.codes = nn.Embedding(num_codes, width)
        self.pos = nn.Parameter(0.02 * torch.randn(CAPTION_LENGTH + length - 1, width))
        self.blocks = nn.ModuleList(_Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_codes)

    def logits(self, codes: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: codes ``(B, t)`` (``t <= T``) and slots ``(B, 3)`` -> logits
        ``(B, t, K)`` of ``p(z_i | c, z_<i)`` for ``i < t`` (``t = 0`` gives ``(B, 1, K)``,
        the first code's)."""
        h = torch.cat([self.words(slots), self.codes(codes[:, : max(codes.shape[1] - 1, 0)])], 1)
        h = h + self.pos[: h.shape[1]]
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.norm(h[:, CAPTION_LENGTH - 1:]))

    def token_log_probs(self, codes: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """``log p(z_t | c, z_<t)`` per code, ``(B, T)`` in nats."""
        if codes.dim() != 2 or codes.shape[1] != self.length:
            raise ValueError(f"CaptionPrior: codes must have shape (B, {self.length}), got {tuple(codes.shape)}")
        logp = torch.log_softmax(self.logits(codes, slots).float(), -1)
        return logp.gather(-1, codes[..., None]).squeeze(-1)

    @torch.no_grad()
    def sample(self, slots: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
               guidance: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """One code sequence ``(B, T)`` per row of ``slots`` (checked by the caller), drawn
        code by code on the CPU generator: logits divided by ``temperature``, the ``top_k``
        most likely kept; ``guidance != 1`` mixes in the empty caption's logits,
        ``l_empty + guidance * (l_caption - l_empty)`` (classifier-free guidance)."""
        b = slots.shape[0]
        codes = torch.zeros(b, self.length, dtype=torch.long, device=slots.device)
        both = torch.cat([slots, torch.zeros_like(slots)]) if guidance != 1.0 else slots
        for t in range(self.length):
            cur = codes[:, :t + 1]
            logits = self.logits(torch.cat([cur, cur]) if guidance != 1.0 else cur, both)[:, t].float()
            if guidance != 1.0:
                cond, empty = logits[:b], logits[b:]
                logits = empty + guidance * (cond - empty)
            logits = logits / temperature
            if top_k is not None:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -math.inf)
            probs = torch.softmax(logits.double(), -1)
            codes[:, t] = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(codes.device)
        return codes


class TextToImage(nn.Module):
    """Text to image on the captioned digits (``load_dataset("digits-captions")``): a VQ-VAE,
    a caption-conditioned transformer prior over its codes, and a CLIP re-ranker.

    Args:
        num_codes, code_dim, hidden: the VQ-VAE (:class:`gencore.models.VQVAE`; an 8x8 digit
            is a 4x4 grid of codes).
        width, layers, heads, dropout: the prior (:class:`CaptionPrior`). The defaults
            (64 wide, 2 layers) drew better digits than 128 x 4 layers on the 1099 training
            digits, which the larger prior memorizes sooner (bench/results/text2image-quality.md).
        token_dropout: in training, each caption word is dropped (its slot opened) with this
            probability, so partial captions are in distribution.
        caption_dropout: in training, the whole caption is dropped with this probability: the
            empty caption's prior, needed by ``guidance``.
        clip_embed_dim: the re-ranker's embedding size (:class:`gencore.models.CLIP`, the
            digits-captions configuration); 0 builds no re-ranker (``candidates`` must be 1).
        clip_weight: weight of the CLIP loss in :meth:`loss`.
        levels, beta, ema_decay, restart_dead_codes: as :class:`~gencore.models.VQVAE`.

    Units: :meth:`loss`, :meth:`terms` and :meth:`nll_bound` in nats per digit.
    """

    features = 64
    event_shape = (1, 8, 8)

    def __init__(self, num_codes: int = 64, code_dim: int = 16, hidden: int = 64, *, width: int = 64,
                 layers: int = 2, heads: int = 4, dropout: float = 0.1, token_dropout: float = 0.1,
                 caption_dropout: float = 0.1, clip_embed_dim: int = 32, clip_weight: float = 1.0, levels: int = 17,
                 beta: float = 0.25, ema_decay: float | None = 0.99, restart_dead_codes: bool = True) -> None:
        super().__init__()
        for name, v in (("token_dropout", token_dropout), ("caption_dropout", caption_dropout)):
            if not 0 <= require_real(v, name, "TextToImage") < 1:
                raise ValueError(f"TextToImage: {name} must lie in [0, 1), got {v!r}")
        clip_embed_dim = check_size(clip_embed_dim, "TextToImage: clip_embed_dim", 0)
        require_nonneg_real(clip_weight, "clip_weight", "TextToImage")
        self.vqvae = VQVAE(self.event_shape, num_codes, code_dim, hidden, levels=levels, beta=beta,
                           ema_decay=ema_decay, restart_dead_codes=restart_dead_codes, prior=False)
        self.length = self.vqvae.grid[0] * self.vqvae.grid[1]
        self.prior = CaptionPrior(num_codes, self.length, width, layers, heads, dropout)
        self.clip = CLIP(kind="conv", embed_dim=clip_embed_dim, token_dropout=0.3) if clip_embed_dim else None
        self.token_dropout, self.caption_dropout = float(token_dropout), float(caption_dropout)
        self.clip_weight = float(clip_weight)
        self.config = plain_config({
            "num_codes": num_codes, "code_dim": code_dim, "hidden": hidden, "width": width, "layers": layers,
            "heads": heads, "dropout": float(dropout), "token_dropout": self.token_dropout,
            "caption_dropout": self.caption_dropout, "clip_embed_dim": clip_embed_dim, "clip_weight": self.clip_weight,
            "levels": levels, "beta": float(beta), "ema_decay": ema_decay, "restart_dead_codes": restart_dead_codes})

    @property
    def num_codes(self) -> int:
        return self.vqvae.num_codes

    # ---- inputs --------------------------------------------------------------------------
    def _pair(self, x: torch.Tensor, captions) -> tuple[torch.Tensor, torch.Tensor]:
        slots = caption_slots(captions)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"TextToImage: x must be a tensor, got {type(x).__name__}")
        w = self.prior.head.weight
        if x.device != w.device:
            raise ValueError(f"TextToImage: x is on {x.device} but the model is on {w.device}")
        if x.dtype.is_floating_point and x.dtype != w.dtype:
            raise TypeError(f"TextToImage: x is {x.dtype} but the model is {w.dtype} (convert one of them)")
        if x.dim() >= 1 and x.shape[0] != slots.shape[0]:
            raise ValueError(f"TextToImage: {x.shape[0]} images but {slots.shape[0]} captions")
        return x, slots.to(x.device)

    def _drop(self, slots: torch.Tensor) -> torch.Tensor:
        """Training-time word and caption dropout (torch's global RNG)."""
        keep = torch.rand(slots.shape, device=slots.device) >= self.token_dropout
        keep &= torch.rand(slots.shape[0], 1, device=slots.device) >= self.caption_dropout
        return slots * keep

    # ---- objectives ----------------------------------------------------------------------
    def terms(self, x: torch.Tensor, captions) -> dict[str, torch.Tensor]:
        """Per-digit terms in nats, each ``(B,)``: ``distortion = -log p(x | z_q(x))``,
        ``prior_nll = -log p(z_q(x) | c)`` and ``bound`` (their sum, ``>= -log p(x | c)``);
        ``vq``, the quantizer's output. ``x``: dequantized digits ``(B, 64)`` or
        ``(B, 1, 8, 8)`` in [0, 1]; ``captions``: see :func:`caption_slots`. In training mode
        the prior sees the captions after word and caption dropout."""
        x, slots = self._pair(x, captions)
        distortion, vq = self.vqvae.autoencode(x)
        if self.training and (self.token_dropout or self.caption_dropout):
            slots = self._drop(slots)
        prior_nll = -self.prior.token_log_probs(vq.indices.flatten(1).detach(), slots).sum(1)
        return {"distortion": distortion, "prior_nll": prior_nll, "bound": distortion + prior_nll, "vq": vq}

    def loss(self, batch) -> torch.Tensor:
        """The training loss of a batch ``(x, tokens)`` or ``(x, tokens, labels)`` (labels
        ignored): the mean bound, the commitment loss per digit and ``clip_weight`` times the
        re-ranker's CLIP loss (which sees the full captions), in nats."""
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError("TextToImage.loss: batch must be (images, tokens) or (images, tokens, labels)")
        x, tokens = batch[0], batch[1]
        t = self.terms(x, tokens)
        loss = t["bound"].mean() + t["vq"].loss * t["vq"].quantized[0].numel()
        if self.clip is not None and self.clip_weight > 0:
            loss = loss + self.clip_weight * self.clip.loss((x, tokens))
        return loss

    @torch.no_grad()
    def nll_bound(self, x: torch.Tensor, captions, batch_size: int = 512) -> torch.Tensor:
        """``-log p(x | z_q(x)) - log p(z_q(x) | c)`` per digit, ``(B,)`` nats (eval mode)."""
        x, slots = self._pair(x, captions)
        starts = batch_starts(x, batch_size, "TextToImage.nll_bound")
        return in_eval(self, lambda: torch.cat([self.terms(x[i:i + batch_size], slots[i:i + batch_size])["bound"]
                                                for i in starts]))

    @torch.no_grad()
    def token_log_probs(self, x: torch.Tensor, captions) -> torch.Tensor:
        """``log p(z_t | c, z_<t)`` of the code grid of each digit, ``(B, 16)`` nats (eval
        mode): what :func:`gencore.metrics.perplexity` reads."""
        x, slots = self._pair(x, captions)
        return in_eval(self, lambda: self.prior.token_log_probs(self.vqvae.codes(x).flatten(1), slots))

    # ---- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def similarity(self, images: torch.Tensor, captions) -> torch.Tensor:
        """The re-ranker's cosine between each image and its caption, ``(B,)`` (eval mode)."""
        if self.clip is None:
            raise ValueError("TextToImage: this model has no CLIP re-ranker (clip_embed_dim=0)")
        tokens = _caption_tokens(captions)
        return in_eval(self.clip, lambda: (self.clip.encode_image(images)
                                           * self.clip.encode_text(tokens.to(images.device))).sum(1))

    @torch.no_grad()
    def generate(self, captions, *, temperature: float = 1.0, top_k: int | None = None, guidance: float = 1.0,
                 candidates: int = 1, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """One image ``(B, 1, 8, 8)`` in [0, 1] per caption.

        Args:
            captions: ``B`` captions: a string, a list of strings, or token ids ``(B, T)``
                (see :func:`caption_slots`; words may be left out, an all-padding row asks
                for any digit).
            temperature: > 0, divides the prior's logits; top_k: keep the k most likely codes
                at each step (None: all).
            guidance: classifier-free guidance scale (1: the conditional prior as trained).
            candidates: draw this many images per caption and keep the one the CLIP
                re-ranker finds most similar to the caption (DALL-E's re-ranking); 1: no
                re-ranking.
            generator: a CPU generator for the codes (and the pixels when ``mean=False``).
            mean: decode the codes to the decoder's mean; False: to a draw of the pixels.
        """
        slots = caption_slots(captions)
        temperature = require_real(temperature, "temperature", "TextToImage.generate")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"TextToImage.generate: temperature must be finite and > 0, got {temperature!r}")
        if top_k is not None and not 1 <= require_int(top_k, "top_k", "TextToImage.generate") <= self.num_codes:
            raise ValueError(f"TextToImage.generate: top_k must be in [1, {self.num_codes}], got {top_k!r}")
        if not math.isfinite(require_real(guidance, "guidance", "TextToImage.generate")):
            raise ValueError(f"TextToImage.generate: guidance must be finite, got {guidance!r}")
        check_size(candidates, "TextToImage.generate: candidates")
        if candidates > 1 and self.clip is None:
            raise ValueError("TextToImage.generate: candidates > 1 needs the CLIP re-ranker (clip_embed_dim > 0)")
        device = self.prior.head.weight.device
        b = slots.shape[0]
        rep = slots.to(device).repeat_interleave(candidates, 0)

        def draw():
            codes = self.prior.sample(rep, temperature=temperature, top_k=top_k, guidance=float(guidance),
                                      generator=generator)
            logits = self.vqvae.decode_codes(codes.reshape(-1, *self.vqvae.grid))
            return self.vqvae._mean(logits, sample=not mean, generator=generator)

        images = in_eval(self, draw)
        if candidates == 1:
            return images
        sim = self._rerank_similarity(images, rep).reshape(b, candidates)
        best = sim.argmax(1) + torch.arange(b, device=device) * candidates
        return images[best]

    def _rerank_similarity(self, images: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        # A caption with every slot open has nothing to match: all candidates score 0.
        empty = (slots == 0).all(1)
        safe = torch.where(empty[:, None], torch.full_like(slots, token_id(CLASS_WORDS[0])), slots)
        sim = self.similarity(images, safe)
        return sim.masked_fill(empty, 0.0)


def _caption_tokens(captions) -> torch.Tensor:
    """Token ids ``(B, T)`` of captions for CLIP (its bag-of-words encoder ignores order)."""
    slots = caption_slots(captions)
    if bool((slots == 0).all(1).any()):
        raise ValueError("TextToImage: a caption has no words")
    return slots
