"""Model classes for the methods of the lecture. Each trainable model has ``loss(batch)``
and a JSON-serialisable ``config`` from which ``build(name, config)`` re-creates it."""

from gencore.models.autoencoder import Autoencoder
from gencore.models.contrastive import CLIP, SimCLR
from gencore.models.flows import NICE, Flow, Glow, RealNVP
from gencore.models.gan import GAN
from gencore.models.pca import PCA
from gencore.models.vae import VAE

MODELS = {"nice": NICE, "realnvp": RealNVP, "glow": Glow}
MODELS["gan"] = GAN
MODELS["pca"] = PCA
MODELS["ae"] = Autoencoder
MODELS["vae"] = VAE
MODELS["simclr"] = SimCLR
MODELS["clip"] = CLIP


def build(name: str, config: dict):
    """Instantiate the model ``name`` (a key of ``MODELS``) from its ``config``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    try:
        return MODELS[name](**config)
    except TypeError as e:
        raise ValueError(f"invalid config for {name}: {e}") from e


def model_name(model) -> str:
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered gencore model")


__all__ = ["Flow", "NICE", "RealNVP", "Glow", "MODELS", "build", "model_name"]
__all__ += ["GAN"]
__all__ += ["PCA", "Autoencoder", "VAE"]
__all__ += ["SimCLR", "CLIP"]
