"""VQ-VAE: a discrete latent grid, a categorical decoder and an autoregressive prior.

The lecture's first fix of the VAE's blur (van den Oord et al., 2017): the encoder maps an
image to a small grid of vectors, each replaced by its nearest code in a learned codebook
(:class:`gencore.nn.VectorQuantizer`, on the tiled :func:`gencore.ops.nearest_code`); the
decoder reads the grid of codes; and since the posterior is a point mass, generation needs
a prior over code grids: here a small causal transformer over the grid in raster order
(:class:`CodePrior`, attention by ``torch.nn.functional.scaled_dot_product_attention``).

Likelihood. With ``z_q(x)`` the code grid of ``x`` and the prior ``p(z)``,

    log p(x) = log sum_z p(x | z) p(z)  >=  log p(x | z_q(x)) + log p(z_q(x)),

so ``-log p(x | z_q(x)) - log p(z_q(x))`` (nats per example) is an upper bound on the
negative log-likelihood, comparable with the other models' NLL (bits/dim via
:func:`gencore.metrics.bits_per_dim`). Like the VAE's ``"categorical"`` decoder, ``x`` is the
dequantized data ``(level + u) / levels`` in [0, 1) and its density carries the
dequantization volume ``levels^D``.

Training (:meth:`VQVAE.loss`) minimises the bound plus the quantizer's commitment (and, without
EMA, codebook) loss as a sum per example; the prior learns the codes of the current encoder
(detached), jointly, so one run of :func:`gencore.train.fit` trains all three parts and its
validation loss is the bound itself (plus the small commitment term).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gencore._arguments import check_depth, check_shape, check_size, plain_config, to_tensor
from gencore.models._common import (batch_starts, categorical_log_px, categorical_mean, check_like_model, in_eval,
                                    require_int, require_real)
from gencore.nn import VectorQuantizer

__all__ = ["VQVAE", "CodePrior"]


class _Block(nn.Module):
    """A pre-norm transformer block: causal self-attention (``scaled_dot_product_attention``)
    and a 4x MLP, each residual; ``dropout`` on the attention weights and on both branches
    in training."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dropout = heads, float(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape
        q, k, v = self.qkv(self.norm1(h)).reshape(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        a = self.proj(a.transpose(1, 2).reshape(b, t, w))
        if p > 0:
            a = F.dropout(a, p)
        h = h + a
        m = self.mlp(self.norm2(h))
        return h + (F.dropout(m, p) if p > 0 else m)


def check_codes(codes, shape: tuple[int, ...], num_codes: int, owner: str) -> None:
    """Code ids ``(B, *shape)``: an integer tensor (not bool) with values in ``[0, num_codes)``;
    a negative id would silently index from the end of the codebook."""
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype.is_complex \
            or codes.dtype == torch.bool:
        raise TypeError(f"{owner}: codes must be an integer tensor of code ids, got "
                        f"{codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__}")
    if codes.dim() != len(shape) + 1 or tuple(codes.shape[1:]) != tuple(shape):
        raise ValueError(f"{owner}: codes must have shape (B, {', '.join(map(str, shape))}), got {tuple(codes.shape)}")
    if codes.numel() and codes.device.type != "meta" and bool(((codes < 0) | (codes >= num_codes)).any()):
        raise ValueError(f"{owner}: code ids must be in [0, {num_codes}), got values in "
                         f"[{int(codes.min())}, {int(codes.max())}]")


class CodePrior(nn.Module):
    """An autoregressive prior over sequences of ``length`` codes out of ``num_codes``:
    ``p(z) = prod_t p(z_t | z_<t)`` by a causal transformer (a start token, learned positions,
    pre-norm blocks of causal self-attention and an MLP).

    Args:
        num_codes: ``K``.
        length: ``T``, the codes per sequence (the grid's cells in raster order).
        width, layers, heads: the transformer's size (``width`` divisible by ``heads``).
        classes: with ``classes > 0`` the prior is class-conditional, ``p(z | y)``: the
            start token is the class's (labels ``0..classes-1``).
    """

    def __init__(self, num_codes: int, length: int, width: int = 64, layers: int = 2, heads: int = 4,
                 classes: int = 0) -> None:
        super().__init__()
        for name, v in (("num_codes", num_codes), ("length", length), ("width", width), ("heads", heads)):
            check_size(v, f"CodePrior: {name}")
        check_depth(layers, "CodePrior: layers")
        check_size(classes, "CodePrior: classes", 0)
        if width % heads:
            raise ValueError(f"CodePrior: width ({width}) must be divisible by heads ({heads})")
        self.num_codes, self.length, self.classes = num_codes, length, classes
        self.embed = nn.Embedding(num_codes + max(1, classes), width)  # codes, then the start token(s)
        self.pos = nn.Parameter(0.02 * torch.randn(length, width))
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_codes)

    def _start(self, n: int, labels: torch.Tensor | None, device) -> torch.Tensor:
        if self.classes == 0:
            if labels is not None:
                raise ValueError("CodePrior: labels given to an unconditional prior")
            return torch.full((n, 1), self.num_codes, dtype=torch.long, device=device)
        if labels is None:
            raise ValueError(f"CodePrior: this prior is class-conditional: pass labels in 0..{self.classes - 1}")
        labels = torch.as_tensor(labels, device=device)
        if labels.shape != (n,) or labels.dtype != torch.long or bool((labels < 0).any()) \
                or bool((labels >= self.classes).any()):
            raise ValueError(f"CodePrior: labels must be {n} int64 values in 0..{self.classes - 1}")
        return (self.num_codes + labels)[:, None]

    def logits(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T)`` codes -> ``(B, T, K)`` logits of ``p(z_t | z_<t)`` (teacher forcing)."""
        start = self._start(codes.shape[0], labels, codes.device)
        inp = torch.cat([start, codes[:, :-1]], 1)
        h = self.embed(inp) + self.pos[: inp.shape[1]]
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.norm(h))

    def log_prob(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z)`` (or ``log p(z | y)``) per sequence, ``(B,)`` in nats."""
        check_codes(codes, (self.length,), self.num_codes, "CodePrior")
        return self._log_prob(codes, labels)

    def _log_prob(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        # (unchecked: for the quantizer's own indices, every training step, without a sync)
        logp = torch.log_softmax(self.logits(codes, labels), -1)
        return logp.gather(-1, codes[..., None]).squeeze(-1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, *, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` sequences ``(n, T)`` drawn code by code (``temperature`` divides the logits;
        ``top_k`` keeps the k most likely codes at each step)."""
        if require_int(n, "n", "CodePrior.sample") < 1:
            raise ValueError(f"CodePrior.sample: n must be a positive int, got {n!r}")
        temperature = require_real(temperature, "temperature", "CodePrior.sample")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"CodePrior.sample: temperature must be finite and > 0, got {temperature!r}")
        if top_k is not None and not 1 <= require_int(top_k, "top_k", "CodePrior.sample") <= self.num_codes:
            raise ValueError(f"CodePrior.sample: top_k must be in [1, {self.num_codes}], got {top_k!r}")
        device = self.head.weight.device
        self._start(n, labels, device)  # checks the labels
        codes = torch.zeros(n, self.length, dtype=torch.long, device=device)
        for t in range(self.length):
            logits = self.logits(codes[:, : t + 1], labels)[:, t] / temperature
            if top_k is not None:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -math.inf)
            probs = torch.softmax(logits.double(), -1)
            codes[:, t] = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        return codes


class VQVAE(nn.Module):
    """VQ-VAE for images ``(B, C, H, W)`` (H, W even; the digits: ``(1, 8, 8)``, or their
    flattened ``(B, 64)`` form) with a categorical decoder over ``levels`` pixel values.

    The encoder (3x3 conv, a stride-2 4x4 conv, 3x3 conv, 1x1 to ``code_dim``) makes an
    ``(H/2, W/2)`` grid of vectors; the decoder mirrors it (transposed stride-2 conv) and
    outputs ``levels`` logits per pixel. The prior is a :class:`CodePrior` over the grid.

    Args:
        features: the image shape ``(C, H, W)``.
        num_codes: codebook size ``K``: each example is ``(H/2)(W/2) log2 K`` bits.
        code_dim: size of each code vector.
        hidden: channels of the convolutions.
        levels: pixel levels of the categorical decoder (17 for the digits).
        beta: commitment weight.
        ema_decay: EMA codebook updates (``None``: learned by gradient).
        restart_dead_codes: restart unused codes from the batch (see VectorQuantizer).
        prior_width, prior_layers, prior_heads: the prior transformer.
        classes: a class-conditional prior ``p(z | y)`` over ``classes`` labels (0: none);
            the batches are then ``(x, y)`` with int64 labels.
        prior: False builds the auto-encoder and codebook only (``self.prior`` is None; the
            prior-dependent methods refuse): a stage of a model with its own prior over the
            codes (:class:`gencore.models.TextToImage`).
    """

    def __init__(self, features=(1, 8, 8), num_codes: int = 64, code_dim: int = 16, hidden: int = 64, *,
                 levels: int = 17, beta: float = 0.25, ema_decay: float | None = 0.99,
                 restart_dead_codes: bool = True, prior_width: int = 64, prior_layers: int = 2,
                 prior_heads: int = 4, classes: int = 0, prior: bool = True) -> None:
        super().__init__()
        shape = list(check_shape(features, "VQVAE: features", image_only=True))
        if shape[1] % 2 or shape[2] % 2:
            raise ValueError(f"VQVAE: features must be an image shape (C, H, W) with even H and W, got {features!r}")
        num_codes, code_dim, hidden = (check_size(v, f"VQVAE: {name}") for name, v in
                                       (("num_codes", num_codes), ("code_dim", code_dim), ("hidden", hidden)))
        levels = check_size(levels, "VQVAE: levels", 2)
        if not isinstance(prior, bool):
            raise TypeError(f"VQVAE: prior must be a bool, got {type(prior).__name__}")
        if prior:  # (prior=False keeps the arguments in the config unread, as before)
            prior_width = check_size(prior_width, "VQVAE: prior_width")
            prior_heads = check_size(prior_heads, "VQVAE: prior_heads")
            prior_layers = check_depth(prior_layers, "VQVAE: prior_layers")
            classes = check_size(classes, "VQVAE: classes", 0)
            if prior_width % prior_heads:
                raise ValueError(f"VQVAE: prior_width ({prior_width}) must be divisible by prior_heads "
                                 f"({prior_heads})")
        c, h, w = shape
        self.event_shape = tuple(shape)
        self.features = c * h * w
        self.grid = (h // 2, w // 2)
        self.levels = levels
        self.encoder = nn.Sequential(
            nn.Conv2d(c, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, code_dim, 1))
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta=beta, ema_decay=ema_decay,
                                         restart_dead_codes=restart_dead_codes)
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, hidden, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, c * levels, 1))
        self.prior = CodePrior(num_codes, self.grid[0] * self.grid[1], prior_width, prior_layers, prior_heads,
                               classes) if prior else None
        self.classes = classes
        self.config = plain_config({
            "features": shape, "num_codes": num_codes, "code_dim": code_dim, "hidden": hidden, "levels": levels,
            "beta": float(beta), "ema_decay": ema_decay, "restart_dead_codes": restart_dead_codes,
            "prior_width": prior_width, "prior_layers": prior_layers, "prior_heads": prior_heads, "classes": classes})
        if not prior:
            self.config["prior"] = False

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    @property
    def latent_bits(self) -> float:
        """Bits of one example's code grid: ``cells * log2(K)``."""
        return self.grid[0] * self.grid[1] * math.log2(self.num_codes)

    # ---- parts ---------------------------------------------------------------------------
    def _image(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"VQVAE: {name} must be a floating-point tensor")
        if x.dim() == 2 and x.shape[1] == self.features:
            x = x.reshape(-1, *self.event_shape)
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"VQVAE: {name} must have shape (B, {', '.join(map(str, self.event_shape))}) "
                             f"or (B, {self.features}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("VQVAE: empty batch")
        check_like_model(x, self, "VQVAE", name)
        if not bool(torch.isfinite(x).all()) or bool((x < 0).any()) or bool((x > 1).any()):
            raise ValueError(f"VQVAE: {name} must be dequantized data in [0, 1] (finite), got values in "
                             f"[{x.min().item():.4g}, {x.max().item():.4g}]")
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's grid of vectors ``(B, code_dim, H/2, W/2)``."""
        return self.encoder(2 * self._image(x) - 1)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code grid ``(B, H/2, W/2)`` (int64) of ``x`` (the quantizer in eval mode: no update)."""
        return in_eval(self.quantizer, lambda: self.quantizer(self.encode(x)).indices)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits ``(B, C, H, W, levels)`` of ``p(x | z)`` for a code grid ``(B, H/2, W/2)``."""
        check_codes(codes, self.grid, self.quantizer.num_codes, "VQVAE.decode_codes")
        vectors = self.quantizer.codebook[codes].movedim(-1, 1)
        return self._logits(self.decoder(vectors))

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        b, _, h, w = out.shape
        return out.reshape(b, self.event_shape[0], self.levels, h, w).permute(0, 1, 3, 4, 2)

    def _log_px(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return categorical_log_px(x, logits, self.levels).flatten(1).sum(1)

    def _prior(self, what: str) -> CodePrior:
        if self.prior is None:
            raise ValueError(f"VQVAE.{what}: this VQVAE was built with prior=False (no prior over its codes)")
        return self.prior

    # ---- objectives ----------------------------------------------------------------------
    def autoencode(self, x: torch.Tensor):
        """The auto-encoder's pass: ``(distortion, vq)`` with ``distortion = -log p(x | z_q(x))``
        per example ``(B,)`` in nats and ``vq`` the quantizer's output (its ``indices``, the
        code grid ``(B, H/2, W/2)``; its ``loss``, the commitment term). The quantizer updates
        its codebook in training mode."""
        x = self._image(x)
        out = self.quantizer(self.encode(x))
        return -self._log_px(x, self._logits(self.decoder(out.quantized))), out

    def terms(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-example terms in nats, each ``(B,)``: ``distortion = -log p(x | z_q(x))``,
        ``prior_nll = -log p(z_q(x))`` (conditional prior: ``-log p(z_q(x) | y)``),
        ``bound = distortion + prior_nll`` (>= -log p(x), or -log p(x | y)); and the
        quantizer's output (``vq``)."""
        distortion, out = self.autoencode(x)
        prior_nll = -self._prior("terms")._log_prob(out.indices.flatten(1), labels)
        return {"distortion": distortion, "prior_nll": prior_nll, "bound": distortion + prior_nll, "vq": out}

    def loss(self, batch) -> torch.Tensor:
        """Mean over the batch of the bound plus the quantizer's loss summed per example (nats);
        with ``prior=False`` the distortion alone in place of the bound."""
        x, labels = (batch[0], batch[1] if self.classes else None) if isinstance(batch, (tuple, list)) \
            else (batch, None)
        if self.prior is None:
            distortion, vq = self.autoencode(x)
            return distortion.mean() + vq.loss * vq.quantized[0].numel()
        t = self.terms(x, labels)
        per_example = t["vq"].loss * (t["vq"].quantized[0].numel())
        return t["bound"].mean() + per_example

    @torch.no_grad()
    def nll_bound(self, x: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 512) -> torch.Tensor:
        """``-log p(x | z_q(x)) - log p(z_q(x))`` per example (nats, ``(B,)``): an upper bound
        on the negative log-likelihood (eval mode: the codebook is not updated)."""
        starts = batch_starts(x, batch_size, "VQVAE.nll_bound")
        if labels is not None:
            labels = to_tensor(labels, "VQVAE.nll_bound: labels", f"class labels of shape ({x.shape[0]},)")
            if labels.shape != (x.shape[0],):
                raise ValueError(f"VQVAE.nll_bound: labels must have shape ({x.shape[0]},) (one class per "
                                 f"example), got {tuple(labels.shape)}")
        return in_eval(self, lambda: torch.cat([
            self.terms(x[i:i + batch_size], None if labels is None else labels[i:i + batch_size])["bound"]
            for i in starts]))

    # ---- generation ----------------------------------------------------------------------
    def _mean(self, logits: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        return categorical_mean(logits, self.levels, sample, generator)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, *, labels: torch.Tensor | None = None,
               temperature: float = 1.0, top_k: int | None = None, mean: bool = True) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)``: code grids from the prior (given ``labels`` for a
        class-conditional one), decoded to the decoder's mean (``mean=True``) or to a draw
        from ``p(x | z)``."""
        codes = self._prior("sample").sample(n, temperature=temperature, top_k=top_k, generator=generator, labels=labels)
        logits = self.decode_codes(codes.reshape(n, *self.grid))
        return self._mean(logits, sample=not mean, generator=generator)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at ``z_q(x)``, in ``x``'s shape."""
        return self._mean(self.decode_codes(self.codes(x))).reshape(x.shape)

    @torch.no_grad()
    def code_perplexity(self, x: torch.Tensor) -> float:
        """``exp(entropy)`` of the code frequencies over all cells of ``x``: codes in effective use."""
        counts = torch.bincount(self.codes(x).flatten(), minlength=self.num_codes).double()
        p = counts / counts.sum()
        return math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())
