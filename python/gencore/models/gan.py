"""Generative adversarial networks: the lecture's two-player game.

A generator ``G: z -> x`` and a discriminator (critic) ``f: x -> R`` are trained by
alternating (approximate) best responses: ``n_critic`` updates of ``f`` against the current
``G``, then one update of ``G`` against the current ``f``. The critic's objective reads as an
integral probability metric

    d_F(p, q) = sup_{f in F} E_{x~p} f(x) - E_{x~q} f(x),        q = law of G(z), z ~ N(0, I)

which is the Wasserstein-1 distance when F is the 1-Lipschitz functions (``"wasserstein_gp"``
enforces the constraint softly with a per-sample gradient penalty); the value
``E_p f - E_q f`` of the current critic is reported during training as the IPM estimate.

Losses, with ``r = f(x_real)``, ``s = f(G(z))`` the critic's raw scores (logits) and means
over the batch:

==================  ===========================================  ====================
``loss``            discriminator minimises                       generator minimises
==================  ===========================================  ====================
non_saturating      ``softplus(-r) + softplus(s)``                ``softplus(-s)``
                    (``-log sigmoid(r) - log(1 - sigmoid(s))``)   (``-log sigmoid(s)``)
wasserstein_gp      ``s - r + gp_weight * GP``                    ``-s``
hinge               ``relu(1 - r) + relu(1 + s)``                 ``-s``
==================  ===========================================  ====================

``GP = mean_i (||grad_x f(x_hat_i)||_2 - 1)^2`` with ``x_hat_i = a_i x_i + (1 - a_i) G(z_i)``,
``a_i ~ U[0, 1)``, each gradient flattened per example (Gulrajani et al. 2017). Optional for
any loss: spectral normalisation of the critic's layers, the R1 penalty
``r1_weight / 2 * mean_i ||grad_x f(x_i)||^2`` on real data (Mescheder et al. 2018), and an
exponential moving average of the generator's weights used for sampling.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from gencore._arguments import check_generator, check_shape, check_size, check_widths, plain_config
from gencore.models._common import check_like_model, event_shape, require_int, require_real
from gencore.nn import MLP

__all__ = [
    "GAN", "LOSSES", "MLPGenerator", "MLPDiscriminator", "ConvGenerator", "ConvDiscriminator",
    "discriminator_loss_from_scores", "generator_loss_from_scores", "gradient_penalty", "r1_penalty",
]

LOSSES = ("non_saturating", "wasserstein_gp", "hinge")


def _check_loss(loss) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    return loss


def discriminator_loss_from_scores(real: torch.Tensor, fake: torch.Tensor, loss: str = "non_saturating"):
    """The discriminator's loss (without penalties) from its scores.

    Args:
        real: ``(B,)`` scores ``f(x)`` of real examples (logits for ``"non_saturating"``).
        fake: ``(B',)`` scores ``f(G(z))`` of generated examples.
        loss: ``"non_saturating"``, ``"wasserstein_gp"`` or ``"hinge"`` (formulas in the
            module docstring).

    Returns:
        A 0-d tensor; for ``"non_saturating"`` in nats (a sum of two mean binary cross-entropies).
    """
    _check_loss(loss)
    if loss == "non_saturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if loss == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return fake.mean() - real.mean()


def generator_loss_from_scores(fake: torch.Tensor, loss: str = "non_saturating"):
    """The generator's loss from the discriminator's scores ``fake: (B,)`` of its samples:
    ``mean softplus(-s)`` (non-saturating: ``-log sigmoid(s)``), else ``-mean s``."""
    _check_loss(loss)
    if loss == "non_saturating":
        return F.softplus(-fake).mean()
    return -fake.mean()


def _input_gradients(critic, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``grad_x sum_i f(x_i)``, flattened per example: ``(B, prod(event_shape))``. The graph
    is kept (``create_graph``) so a penalty on it trains the critic (double backward)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = critic(x, context)
        (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, context: torch.Tensor | None = None, *,
                     alpha: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's per-sample gradient penalty ``mean_i (||grad_x f(x_hat_i)||_2 - 1)^2``.

    Args:
        critic: ``f(x, context) -> (B,)`` scores.
        real, fake: ``(B, ...)`` examples of the same shape.
        context: ``(B, K)`` conditioning passed to the critic, or None.
        alpha: ``(B,)`` interpolation weights ``x_hat = alpha x_real + (1 - alpha) x_fake``;
            default ``U[0, 1)`` drawn from ``generator`` (or torch's default generator).

    Returns:
        A 0-d tensor, differentiable w.r.t. the critic's parameters. The gradient of every
        example is flattened and normed on its own: the penalty is not on the norm of the
        whole batch's gradient.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real and fake must have the same shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    if alpha is None:
        alpha = torch.rand(real.shape[0], generator=generator, dtype=real.dtype,
                           device="cpu" if generator is None else generator.device).to(real.device)
    if alpha.shape != (real.shape[0],):
        raise ValueError(f"gradient_penalty: alpha must have shape ({real.shape[0]},), got {tuple(alpha.shape)}")
    a = alpha.reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = a * real.detach() + (1 - a) * fake.detach()
    grad = _input_gradients(critic, x_hat, context)
    # The tiny constant keeps the norm's gradient finite where the input gradient vanishes.
    norm = torch.sqrt(grad.pow(2).sum(1) + 1e-12)
    return (norm - 1).pow(2).mean()


def r1_penalty(critic, real: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """R1: ``mean_i ||grad_x f(x_i)||_2^2`` on real examples ``(B, ...)``, per example; a 0-d
    tensor (the GAN multiplies it by ``r1_weight / 2``)."""
    return _input_gradients(critic, real, context).pow(2).sum(1).mean()


# ---------------------------------------------------------------------------------------------
# Default networks. Generators map ``(z: (B, latent_dim), c: (B, K) | None)`` to ``(B, *event_shape)``;
# discriminators map ``(x, c)`` to scores ``(B,)``. Class conditioning is a one-hot ``c``
# concatenated to the input of both (as constant feature maps for convolutions).
# ---------------------------------------------------------------------------------------------

_OUTPUTS = ("linear", "sigmoid")


def _leaky():
    return nn.LeakyReLU(0.2)


def _with_context(v: torch.Tensor, c: torch.Tensor | None, n_classes: int, name: str) -> torch.Tensor:
    if n_classes == 0:
        if c is not None:
            raise ValueError(f"{name} is unconditional: pass no class context")
        return v
    if c is None or c.shape != (v.shape[0], n_classes):
        raise ValueError(f"{name} is class-conditional: pass a one-hot context of shape ({v.shape[0]}, {n_classes})")
    return torch.cat([v, c.to(v.dtype)], 1)


class MLPGenerator(nn.Module):
    """``z: (B, latent_dim)`` [+ one-hot ``(B, K)``] ``-> MLP (ReLU) -> (B, *shape)``.

    ``shape`` is ``D`` or an image shape (the MLP's output is reshaped); ``output="sigmoid"``
    squashes to ``(0, 1)`` (digits live in ``[0, 1)``)."""

    def __init__(self, latent_dim: int, shape, hidden: Sequence[int] = (256, 256), n_classes: int = 0,
                 output: str = "linear") -> None:
        super().__init__()
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(_OUTPUTS)}, got {output!r}")
        self.latent_dim, self.n_classes, self.output = latent_dim, n_classes, output
        self.event_shape = check_shape(shape, "MLPGenerator: shape", any_rank=True)
        self.net = MLP(latent_dim + n_classes, math.prod(self.event_shape), hidden, activation=nn.ReLU)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = self.net(_with_context(z, c, self.n_classes, "the generator")).view(-1, *self.event_shape)
        return torch.sigmoid(x) if self.output == "sigmoid" else x


class MLPDiscriminator(nn.Module):
    """``x: (B, *shape)``, flattened [+ one-hot ``(B, K)``] ``-> MLP (LeakyReLU 0.2) -> scores (B,)``."""

    def __init__(self, shape, hidden: Sequence[int] = (256, 256), n_classes: int = 0) -> None:
        super().__init__()
        self.n_classes = n_classes
        d = math.prod(check_shape(shape, "MLPDiscriminator: shape", any_rank=True))
        self.net = MLP(d + n_classes, 1, hidden, activation=_leaky)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_with_context(x.flatten(1), c, self.n_classes, "the discriminator"))[:, 0]


class ConvGenerator(nn.Module):
    """Small DCGAN-style generator for ``(C, H, W)`` images, ``H, W`` divisible by 4:
    ``Linear -> (2w, H/4, W/4) -> ConvT 4x4/2 -> (w, H/2, W/2) -> ConvT 4x4/2 -> (w, H, W)
    -> Conv 3x3 -> (C, H, W)``, ReLU between, no normalisation layers (so training and
    evaluation modes compute the same function)."""

    def __init__(self, latent_dim: int, shape: Sequence[int], width: int = 64, n_classes: int = 0,
                 output: str = "sigmoid") -> None:
        super().__init__()
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(_OUTPUTS)}, got {output!r}")
        c, h, w = shape
        self.latent_dim, self.n_classes, self.output = latent_dim, n_classes, output
        self.event_shape = (c, h, w)
        self.start = (2 * width, h // 4, w // 4)
        self.fc = nn.Linear(latent_dim + n_classes, math.prod(self.start))
        self.net = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, 2, 1), nn.ReLU(), nn.Conv2d(width, c, 3, 1, 1))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(_with_context(z, c, self.n_classes, "the generator")).view(-1, *self.start)
        x = self.net(h)
        return torch.sigmoid(x) if self.output == "sigmoid" else x


class ConvDiscriminator(nn.Module):
    """Small convolutional critic for ``(C, H, W)`` images (``H, W`` divisible by 4):
    ``Conv 3x3 (w) -> Conv 4x4/2 (2w) -> Conv 4x4/2 (2w) -> Linear -> scores (B,)``,
    LeakyReLU 0.2, no batch normalisation (it would couple the examples of a batch, which
    the per-sample gradient penalty assumes independent)."""

    def __init__(self, shape: Sequence[int], width: int = 64, n_classes: int = 0) -> None:
        super().__init__()
        c, h, w = shape
        self.n_classes = n_classes
        self.net = nn.Sequential(
            nn.Conv2d(c + n_classes, width, 3, 1, 1), _leaky(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), _leaky(),
            nn.Conv2d(2 * width, 2 * width, 4, 2, 1), _leaky(), nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), 1))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes:
            if c is None or c.shape != (x.shape[0], self.n_classes):
                raise ValueError(f"the discriminator is class-conditional: pass a one-hot context of shape "
                                 f"({x.shape[0]}, {self.n_classes})")
            x = torch.cat([x, c.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
        elif c is not None:
            raise ValueError("the discriminator is unconditional: pass no class context")
        return self.net(x)[:, 0]


# ---------------------------------------------------------------------------------------------


def _int(name: str, v, low: int) -> int:
    return check_size(v, f"GAN: {name}", low)


def _number(name: str, v, low: float, high: float = math.inf, *, open_high: bool = False) -> float:
    require_real(v, name, "GAN")
    ok = math.isfinite(v) and v >= low
    ok = ok and (v < high if open_high else v <= high)
    if not ok:
        bound = f"< {high}" if open_high else (f"<= {high}" if math.isfinite(high) else "")
        raise ValueError(f"GAN: {name} must be a finite number >= {low}{' and ' + bound if bound else ''}, "
                         f"got {v!r}")
    return float(v)


def _event_shape(features) -> tuple[int, ...]:
    return event_shape(features, "GAN")


@contextmanager
def _frozen(module: nn.Module):
    """Parameters of ``module`` do not require grad inside (restored after): the generator's
    step needs gradients through the critic, not for it."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


class GAN(nn.Module):
    """A generator and a discriminator trained as a two-player game.

    Either pass the two networks, or leave them None and describe the data (``features``,
    ``latent_dim``, ...) to get the default pair: MLPs for vectors, a small convolutional
    pair for ``(C, H, W)`` images. Only the default pair can be rebuilt from ``config`` (so
    ``gencore.models.build("gan", config)`` and checkpoints without code work); a GAN with
    custom networks is loaded with ``load_checkpoint(path, model)``.

    Args:
        generator: ``G(z: (B, latent_dim), c: (B, K) | None) -> (B, *event_shape)``.
        discriminator: ``f(x: (B, *event_shape), c) -> (B,)`` scores (logits for the
            non-saturating loss).
        loss: ``"non_saturating"``, ``"wasserstein_gp"`` or ``"hinge"`` (see the module docstring).
        n_critic: discriminator updates per generator update (>= 1).
        gp_weight: weight of the per-sample gradient penalty (``"wasserstein_gp"`` only).
        r1_weight: ``gamma`` of the R1 penalty ``gamma / 2 * E ||grad f(x_real)||^2`` (0: off; any loss).
        spectral_norm: wrap every Linear / Conv layer of the discriminator in
            ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per forward).
        ema_decay: keep an exponential moving average of the generator's weights with this
            decay (in ``[0, 1)``; 0: off), updated after every generator step with a warm-up
            ``min(ema_decay, (1 + t) / (10 + t))`` at generator step t; :meth:`sample` uses it.
        features: ``D`` or ``(C, H, W)``: the shape of one example (default networks; with
            custom networks, used to check inputs, or taken from ``generator.event_shape``).
        latent_dim: size of ``z`` (default networks: default 16; with custom networks, pass
            it or give the generator a ``latent_dim`` attribute).
        hidden: hidden sizes of the default MLPs (default (256, 256)), or the width of the
            default conv pair (default 64).
        n_classes: ``K > 0`` makes the GAN class-conditional: batches are ``(x, labels)``
            and both networks see a one-hot ``(B, K)``.
        arch: ``"mlp"`` or ``"conv"`` (default: conv for images, MLP for vectors).
        output: the default generator's output: ``"linear"`` or ``"sigmoid"`` (data in (0, 1)).
        betas: Adam's betas for both players (GANs use a low beta1, e.g. (0.5, 0.9) or (0.0, 0.9)).
        lr_ratio: discriminator learning rate / generator learning rate (two time-scale rule).

    Training: :meth:`configure_optimizers` and :meth:`train_step` plug into
    :func:`gencore.train.fit`; :meth:`loss` (the evaluation loss) is the critic's IPM
    estimate ``E_p f - E_q f`` on a batch.
    """

    def __init__(self, generator: nn.Module | None = None, discriminator: nn.Module | None = None, *,
                 loss: str = "non_saturating", n_critic: int = 1, gp_weight: float = 10.0, r1_weight: float = 0.0,
                 spectral_norm: bool = False, ema_decay: float = 0.0, features=None, latent_dim: int | None = None,
                 hidden=None, n_classes: int = 0, arch: str | None = None, output: str = "linear",
                 betas: Sequence[float] = (0.5, 0.9), lr_ratio: float = 1.0, networks: str = "default") -> None:
        super().__init__()
        self.loss_kind = _check_loss(loss)
        self.n_critic = _int("n_critic", n_critic, 1)
        self.gp_weight = _number("gp_weight", gp_weight, 0.0)
        self.r1_weight = _number("r1_weight", r1_weight, 0.0)
        self.ema_decay = _number("ema_decay", ema_decay, 0.0, 1.0, open_high=True)
        self.lr_ratio = _number("lr_ratio", lr_ratio, 0.0)
        if self.lr_ratio == 0:
            raise ValueError(f"GAN: lr_ratio must be a finite number > 0, got {lr_ratio!r}")
        try:
            b1, b2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise ValueError(f"GAN: betas must be two numbers in [0, 1), got {betas!r}") from None
        if not all(math.isfinite(b) and 0 <= b < 1 for b in (b1, b2)):
            raise ValueError(f"GAN: betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = (b1, b2)
        self.n_classes = _int("n_classes", n_classes, 0)
        if not isinstance(spectral_norm, bool):
            raise ValueError(f"GAN: spectral_norm must be True or False, got {spectral_norm!r}")
        if networks not in ("default", "custom"):
            raise ValueError(f"GAN: networks must be 'default' or 'custom', got {networks!r}")
        custom = generator is not None or discriminator is not None
        if custom and (generator is None or discriminator is None):
            raise ValueError("GAN: pass both generator and discriminator, or neither (default networks)")
        if networks == "custom" and not custom:
            raise ValueError("GAN: this config describes custom networks, which cannot be rebuilt from it; "
                             "construct the GAN with its networks and load the checkpoint into it "
                             "(load_checkpoint(path, model))")

        if custom:
            if features is None:
                features = getattr(generator, "event_shape", None)
                if features is not None and len(features) == 1:
                    features = features[0]
            if latent_dim is None:
                latent_dim = getattr(generator, "latent_dim", None)
            if features is None or latent_dim is None:
                raise ValueError("GAN: with custom networks pass features= and latent_dim= (or give the "
                                 "generator event_shape and latent_dim attributes)")
        elif features is None:
            raise ValueError("GAN: pass features (D or (C, H, W)) to build the default networks, or pass "
                             "generator and discriminator")
        shape = _event_shape(features)
        self.event_shape = shape
        self.latent_dim = _int("latent_dim", 16 if latent_dim is None else latent_dim, 1)
        if arch is None:
            arch = "conv" if len(shape) == 3 else "mlp"
        if arch not in ("mlp", "conv"):
            raise ValueError(f"GAN: arch must be 'mlp' or 'conv', got {arch!r}")
        if output not in _OUTPUTS:
            raise ValueError(f"GAN: output must be one of {', '.join(_OUTPUTS)}, got {output!r}")

        if custom:
            hidden_cfg = None
        elif arch == "conv":
            if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
                raise ValueError(f"GAN: arch='conv' needs features = (C, H, W) with H and W divisible by 4, "
                                 f"got {features!r}")
            width = 64 if hidden is None else check_widths(hidden, "GAN: hidden (conv width)")[0]
            generator = ConvGenerator(self.latent_dim, shape, width, self.n_classes, output)
            discriminator = ConvDiscriminator(shape, width, self.n_classes)
            hidden_cfg = width
        else:
            sizes = [256, 256] if hidden is None else check_widths(hidden, "GAN: hidden", allow_empty=True)
            generator = MLPGenerator(self.latent_dim, shape, sizes, self.n_classes, output)
            discriminator = MLPDiscriminator(shape, sizes, self.n_classes)
            hidden_cfg = sizes
        if spectral_norm:
            layers = [m for m in discriminator.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d,
                                                                              nn.Conv3d))]
            for m in layers:
                nn.utils.parametrizations.spectral_norm(m)
        self.spectral_norm = spectral_norm
        self.generator = generator
        self.discriminator = discriminator
        self.generator_ema = None
        if self.ema_decay > 0:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.int64))
        self.config = plain_config({
            "loss": self.loss_kind, "n_critic": self.n_critic, "gp_weight": self.gp_weight,
            "r1_weight": self.r1_weight, "spectral_norm": spectral_norm, "ema_decay": self.ema_decay,
            "features": shape[0] if len(shape) == 1 else list(shape), "latent_dim": self.latent_dim,
            "hidden": hidden_cfg, "n_classes": self.n_classes, "arch": arch if not custom else None,
            "output": output, "betas": list(self.betas), "lr_ratio": self.lr_ratio,
            "networks": "custom" if custom else "default",
        })

    @classmethod
    def from_config(cls, config: dict) -> "GAN":
        """Rebuild a GAN with default networks from its ``config``."""
        return cls(**config)

    # -- inputs ---------------------------------------------------------------------------------

    def _check_x(self, x, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"GAN: {name} must be a tensor, got {type(x).__name__}")
        if x.dim() != len(self.event_shape) + 1 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"GAN: {name} must have shape (B, {', '.join(map(str, self.event_shape))}), "
                             f"got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"GAN: {name} is an empty batch")
        if not x.dtype.is_floating_point:
            raise TypeError(f"GAN: {name} must be floating point, got {x.dtype}")
        check_like_model(x, self.discriminator, "GAN", name)  # (x is the discriminator's input)
        if not torch.isfinite(x).all():
            raise ValueError(f"GAN: {name} contains NaN or infinite values")
        return x

    def _context(self, labels, n: int) -> torch.Tensor | None:
        """Class labels ``(n,)`` to a one-hot ``(n, K)``, checked."""
        if not self.n_classes:
            if labels is not None:
                raise ValueError("GAN: this GAN is unconditional; labels must be None")
            return None
        if labels is None:
            raise ValueError(f"GAN: this GAN is class-conditional: pass labels, integers in [0, {self.n_classes}) "
                             f"of shape ({n},)")
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != (n,):
            raise ValueError(f"GAN: labels must be integers of shape ({n},), got {tuple(labels.shape)} {labels.dtype}")
        if n and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"GAN: labels must lie in [0, {self.n_classes})")
        p = next(self.generator.parameters())
        return F.one_hot(labels.long().to(p.device), self.n_classes).to(p.dtype)

    def _unpack(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(batch, (tuple, list)):
            if len(batch) == 0:
                raise ValueError("GAN: empty batch")
            x = batch[0]
            labels = batch[1] if len(batch) > 1 else None
            if not self.n_classes and labels is not None:
                raise ValueError("GAN: this GAN is unconditional; batches are x, not (x, labels)")
        else:
            x, labels = batch, None
        x = self._check_x(x)
        return x, self._context(labels, x.shape[0])

    # -- players --------------------------------------------------------------------------------

    def _z(self, n: int, generator: torch.Generator | None = None):
        check_generator(generator, "GAN: generator")
        p = next(self.generator.parameters())
        dev = generator.device if generator is not None else p.device
        return torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype, device=dev).to(p.device)

    def generate(self, z: torch.Tensor, labels=None, *, use_ema: bool = False) -> torch.Tensor:
        """``G(z)``: ``z: (B, latent_dim)`` (+ labels ``(B,)`` when conditional) to
        ``(B, *event_shape)``, differentiable."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim or z.shape[0] == 0:
            raise ValueError(f"GAN: z must have shape (B, {self.latent_dim}) with B >= 1, "
                             f"got {tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        net = self.generator_ema if use_ema and self.generator_ema is not None else self.generator
        return net(z, self._context(labels, z.shape[0]))

    @torch.no_grad()
    def sample(self, n: int, labels=None, generator: torch.Generator | None = None,
               use_ema: bool | None = None) -> torch.Tensor:
        """``n`` samples ``(n, *event_shape)`` (no gradient), ``z ~ N(0, I)`` from ``generator``.

        Args:
            labels: class-conditional GANs: ``(n,)`` integer classes (required).
            use_ema: use the moving-average generator (default: when ``ema_decay > 0``).
        """
        if require_int(n, "n", "GAN") < 1:
            raise ValueError(f"GAN: n must be a positive int, got {n!r}")
        use_ema = self.generator_ema is not None if use_ema is None else use_ema
        return self.generate(self._z(n, generator=generator), labels, use_ema=use_ema)

    def critic(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        """The discriminator's scores ``f(x): (B,)`` (logits for the non-saturating loss)."""
        x = self._check_x(x)
        return self.discriminator(x, self._context(labels, x.shape[0]))

    def _scores(self, real: torch.Tensor, fake: torch.Tensor, c: torch.Tensor | None):
        """Real and fake scores in one forward (one spectral-norm power iteration, not two)."""
        cc = None if c is None else torch.cat([c, c])
        s = self.discriminator(torch.cat([real, fake]), cc)
        return s[:real.shape[0]], s[real.shape[0]:]

    def _discriminator_terms(self, x: torch.Tensor, c: torch.Tensor | None) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self.generator(self._z(x.shape[0]), c)
        real_s, fake_s = self._scores(x, fake, c)
        terms = {"loss": discriminator_loss_from_scores(real_s, fake_s, self.loss_kind),
                 "ipm": (real_s.mean() - fake_s.mean()).detach()}
        if self.loss_kind == "wasserstein_gp" and self.gp_weight > 0:
            terms["gp"] = gradient_penalty(self.discriminator, x, fake, c)
            terms["loss"] = terms["loss"] + self.gp_weight * terms["gp"]
        if self.r1_weight > 0:
            terms["r1"] = r1_penalty(self.discriminator, x, c)
            terms["loss"] = terms["loss"] + 0.5 * self.r1_weight * terms["r1"]
        return terms

    def discriminator_loss(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        """The discriminator's loss on real ``x: (B, *event_shape)`` against ``B`` fresh
        generator samples (with the same labels when conditional), penalties included."""
        x = self._check_x(x)
        return self._discriminator_terms(x, self._context(labels, x.shape[0]))["loss"]

    def generator_loss(self, n: int, labels=None) -> torch.Tensor:
        """The generator's loss on ``n`` fresh samples (``labels: (n,)`` when conditional);
        gradients flow to the generator only."""
        if require_int(n, "n", "GAN") < 1:
            raise ValueError(f"GAN: n must be a positive int, got {n!r}")
        c = self._context(labels, n)
        with _frozen(self.discriminator):
            fake_s = self.discriminator(self.generator(self._z(n), c), c)
        return generator_loss_from_scores(fake_s, self.loss_kind)

    def loss(self, batch) -> torch.Tensor:
        """Evaluation loss: the critic's IPM estimate ``E_p f - E_q f`` (units of ``f``) on a
        batch ``x`` or ``(x, labels)`` against as many fresh generator samples: the distance
        the generator minimises, as seen by the current critic."""
        x, c = self._unpack(batch)
        fake = self.generator(self._z(x.shape[0]), c)
        real_s, fake_s = self._scores(x, fake, c)
        return real_s.mean() - fake_s.mean()

    # -- training (used by gencore.train.fit) ---------------------------------------------------

    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """One Adam per player: ``{"discriminator": lr * lr_ratio, "generator": lr}``, with
        this GAN's ``betas`` (decoupled weight decay ``weight_decay``)."""
        def adam(params, rate):
            params = [p for p in params if p.requires_grad]
            if not params:
                raise ValueError("GAN: a player has no trainable parameters")
            return torch.optim.AdamW(params, lr=rate, betas=self.betas, weight_decay=weight_decay, foreach=True)

        return {"discriminator": adam(self.discriminator.parameters(), lr * self.lr_ratio),
                "generator": adam(self.generator.parameters(), lr)}

    def train_step(self, batch, optimizers: dict, step: int = 0) -> dict[str, float]:
        """One round of the game: ``n_critic`` discriminator updates on ``batch`` (the same
        real examples, fresh generator samples each time), then one generator update and the
        EMA update.

        Args:
            batch: ``x: (B, *event_shape)`` or ``(x, labels)``; generated samples get the
                batch's labels, so both players see the data's class frequencies.
            optimizers: ``{"discriminator": ..., "generator": ...}`` (:meth:`configure_optimizers`).
            step: the global step (1-based); unused by the game itself.

        Returns:
            ``{"loss_d", "loss_g", "ipm", ["gp"], ["r1"]}`` as floats: the last critic
            update's loss and IPM estimate ``E_p f - E_q f`` (before that update), the
            generator's loss.
        """
        x, c = self._unpack(batch)
        labels = None if c is None else c.argmax(1)
        opt_d, opt_g = optimizers["discriminator"], optimizers["generator"]
        for _ in range(self.n_critic):
            terms = self._discriminator_terms(x, c)
            opt_d.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt_d.step()
        loss_g = self.generator_loss(x.shape[0], labels)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        self._update_ema()
        out = {"loss_d": terms["loss"].item(), "loss_g": loss_g.item(), "ipm": terms["ipm"].item()}
        out.update({k: terms[k].item() for k in ("gp", "r1") if k in terms})
        return out

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.generator_ema is None:
            return
        t = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + t) / (10 + t))
        for pe, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            pe.lerp_(p, 1 - decay)
        for be, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            be.copy_(b)
        self.ema_updates += 1
