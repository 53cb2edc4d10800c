"""Model classes for the methods of the lecture. Each trainable model has ``loss(batch)``
and a JSON-serialisable ``config`` from which ``build(name, config)`` re-creates it."""

import torch

from gencore._arguments import MAX_DEPTH as _MAX_DEPTH
from gencore._arguments import plain_config
from gencore.models.autoencoder import Autoencoder
from gencore.models.contrastive import CLIP, SimCLR
from gencore.models.flows import NICE, Flow, Glow, NeuralSplineFlow, RealNVP
from gencore.models.gan import GAN
from gencore.models.hvae import HierarchicalVAE
from gencore.models.pca import PCA
from gencore.models.text2image import TextToImage
from gencore.models.vae import VAE
from gencore.models.vqvae import VQVAE

MODELS = {"nice": NICE, "realnvp": RealNVP, "glow": Glow, "nsf": NeuralSplineFlow}
MODELS["gan"] = GAN
MODELS["pca"] = PCA
MODELS["ae"] = Autoencoder
MODELS["vae"] = VAE
MODELS["simclr"] = SimCLR
MODELS["clip"] = CLIP
MODELS["vqvae"] = VQVAE
MODELS["hvae"] = HierarchicalVAE
MODELS["text2image"] = TextToImage


#: Bounds on a config built by :func:`build` (from the command line or a checkpoint's JSON):
#: every integer in it (widths, latent sizes, vocabulary...), the layer counts and list lengths, and the
#: parameter count of the model it describes (2**31 float32 parameters are 8 GiB).
MAX_CONFIG_INT = 1 << 20
MAX_DEPTH = _MAX_DEPTH  # the constructors' own bound on a layer count (gencore._arguments)
DEPTH_KEYS = ("n_couplings", "steps", "n_levels", "n_scales", "layers", "prior_layers")
MAX_PARAMETERS = 1 << 31


def _check_config(name: str, config) -> None:
    """Check the bounds on the config's integers and list lengths."""
    if not isinstance(config, dict):
        raise ValueError(f"invalid config for {name}: a mapping of arguments, got {type(config).__name__}")

    def ints(key, v):
        if isinstance(v, bool):
            return
        if isinstance(v, int):
            yield key, v
        elif isinstance(v, (list, tuple)):
            if len(v) > MAX_DEPTH:
                raise ValueError(f"invalid config for {name}: {key} has {len(v)} entries, more than "
                                 f"the bound {MAX_DEPTH}")
            for u in v:
                yield from ints(key, u)

    for key, value in config.items():
        for k, v in ints(key, value):
            bound = MAX_DEPTH if k in DEPTH_KEYS else MAX_CONFIG_INT
            if abs(v) > bound:
                raise ValueError(f"invalid config for {name}: {k} = {v} exceeds the bound {bound}")


def _parameter_count(cls, config: dict) -> int | None:
    """Parameters (and buffers) of ``cls(**config)`` counted on the meta device (no memory),
    or None where the model cannot be built there."""
    try:
        with torch.device("meta"):
            model = cls(**config)
    except Exception:  # noqa: BLE001 - the real construction reports the problem
        return None
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def build(name: str, config: dict):
    """Instantiate the model ``name`` (a key of ``MODELS``) from its ``config``.

    The config is bounded before anything is allocated: integers at most
    :data:`MAX_CONFIG_INT`, layer counts (:data:`DEPTH_KEYS`) at most :data:`MAX_DEPTH`, and
    at most :data:`MAX_PARAMETERS` parameters and buffers (counted on the meta device, for
    every config: products of allowed sizes, e.g. a spline flow's bins times its widths,
    reach billions); a crafted
    checkpoint or a typo on the command line gets a ``ValueError`` naming the key instead of
    an allocation failure or a hang."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    if isinstance(config, dict):
        config = plain_config(config)  # numpy ints are bounded as the ints they are
    _check_config(name, config)
    n = _parameter_count(MODELS[name], config)
    if n is not None and n > MAX_PARAMETERS:
        raise ValueError(f"invalid config for {name}: {n:,} parameters exceed the bound {MAX_PARAMETERS:,}")
    try:
        return MODELS[name](**config)
    except TypeError as e:
        raise ValueError(f"invalid config for {name}: {e}") from e


def model_name(model) -> str:
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered gencore model")


__all__ = ["Flow", "NICE", "RealNVP", "Glow", "NeuralSplineFlow", "MODELS", "build", "model_name"]
__all__ += ["GAN"]
__all__ += ["PCA", "Autoencoder", "VAE"]
__all__ += ["SimCLR", "CLIP"]
__all__ += ["VQVAE", "HierarchicalVAE", "TextToImage"]
