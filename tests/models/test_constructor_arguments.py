"""Every public constructor of gencore.nn and gencore.models checks its own arguments.

A bad argument gets a TypeError or ValueError whose message names the argument as the
caller wrote it, at once: not a TypeError from inside torch.empty ("failed to unpack the
object"), an "unhashable type" from a dict lookup, a submodule's own parameter name, or a
constructor that loops over 10**30 layers. The models are built on the meta device, so an
accepted size costs no memory.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import signal
import warnings

import pytest
import torch

import gencore.nn as gnn
from gencore import models
from gencore._arguments import MAX_DEPTH, MAX_SIZE

#: The keyword arguments each constructor is built from, before one of them is replaced.
BASE = {
    models.Autoencoder: dict(features=16, latent_dim=2),
    models.GAN: dict(features=4, latent_dim=2, hidden=[8]),
    models.SimCLR: dict(),
    models.CLIP: dict(),
    models.VQVAE: dict(),
    models.TextToImage: dict(),
    models.HierarchicalVAE: dict(features=16),
    models.VAE: dict(features=16),
    models.RealNVP: dict(features=4),
    models.NICE: dict(features=4),
    models.Glow: dict(features=(1, 8, 8)),
    models.NeuralSplineFlow: dict(features=4),
    models.PCA: dict(),
    gnn.MADE: dict(features=4, out_per_feature=3),
    gnn.MLP: dict(in_features=4, out_features=3),
    gnn.SplineCoupling: dict(features=4, conditioner=gnn.MLP(2, 2 * 23, [8])),
    gnn.AffineCoupling: dict(features_or_channels=4, conditioner=gnn.MLP(2, 4, [8])),
    gnn.AdditiveCoupling: dict(features_or_channels=4, conditioner=gnn.MLP(2, 2, [8])),
    gnn.ActNorm: dict(features_or_channels=4),
    gnn.InvertibleLinear: dict(features_or_channels=4),
    gnn.DiagonalScale: dict(features_or_channels=4),
    gnn.VectorQuantizer: dict(num_codes=8, dim=4),
    gnn.Reparameterize: dict(),
    gnn.ConvConditioner: dict(in_channels=2, out_channels=4),
    gnn.SigLIPLoss: dict(),
    gnn.CLIPLoss: dict(),
    gnn.NTXentLoss: dict(),
}

#: Values of the wrong kind or out of range for most arguments (some are right for some).
BAD = [None, True, 2.5, "x", -1, 0, 10**30, 2**62, float("nan"), [], [0], [2.5], (1,), object()]


@contextlib.contextmanager
def deadline(seconds: int, what: str):
    """Fail (instead of hanging the suite) when the body runs longer than ``seconds``."""
    def expired(*_):
        raise AssertionError(f"{what} did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _arguments(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


CASES = [(cls, name) for cls in BASE for name in _arguments(cls)]


@pytest.mark.parametrize("cls, name", CASES, ids=[f"{c.__name__}-{n}" for c, n in CASES])
def test_a_bad_argument_is_named(cls, name):
    cls(**BASE[cls])  # the base arguments are good
    for value in BAD:
        kwargs = {**BASE[cls], name: value}
        with deadline(20, f"{cls.__name__}({name}={value!r:.30})"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with torch.device("meta"):
                    cls(**kwargs)
            except (TypeError, ValueError) as e:  # the argument itself, not a longer name holding it
                assert re.search(rf"(?<![A-Za-z_]){name}(?![A-Za-z_])", str(e)), \
                    f"{cls.__name__}({name}={value!r:.30}) raised {type(e).__name__}: {e}"


#: Arguments that must be refused (each of these used to fail inside torch or Python, or hang).
REFUSED = [
    (gnn.MLP, "hidden", None), (gnn.MLP, "hidden", 2.5), (gnn.MLP, "activation", "relu"),
    (gnn.MADE, "hidden", True), (gnn.MADE, "activation", None),
    (models.VAE, "hidden", None), (models.VAE, "features", None), (models.VAE, "latent_dim", 10**30),
    (models.Autoencoder, "hidden", 2.5), (models.Autoencoder, "activation", []),
    (models.GAN, "hidden", 2.5), (models.GAN, "n_classes", 10**30),
    (models.SimCLR, "hidden", 0), (models.SimCLR, "kind", []),
    (models.CLIP, "text_hidden", None), (models.CLIP, "text_feature_dim", 0), (models.CLIP, "token_dim", "x"),
    (models.CLIP, "loss", []),
    (models.RealNVP, "hidden", None), (models.RealNVP, "n_couplings", 10**30),
    (models.NICE, "n_couplings", MAX_DEPTH + 1), (models.Glow, "steps", 10**30), (models.Glow, "n_levels", 10**30),
    (models.NeuralSplineFlow, "n_couplings", 10**30), (models.NeuralSplineFlow, "hidden", None),
    (models.VQVAE, "prior_layers", 10**30), (models.VQVAE, "prior_width", 0), (models.VQVAE, "features", "x"),
    (models.TextToImage, "layers", 10**30), (models.TextToImage, "num_codes", MAX_SIZE + 1),
    (models.HierarchicalVAE, "levels", 10**30),
    (gnn.ActNorm, "features_or_channels", None), (gnn.ActNorm, "eps", -1.0),
    (gnn.DiagonalScale, "features_or_channels", 2.5), (gnn.InvertibleLinear, "features_or_channels", "x"),
    (gnn.ConvConditioner, "hidden", None), (gnn.ConvConditioner, "context_features", -1),
    (gnn.AdditiveCoupling, "features_or_channels", 1), (gnn.VectorQuantizer, "num_codes", 2**62),
]


@pytest.mark.parametrize("cls, name, value", REFUSED,
                         ids=[f"{c.__name__}-{n}-{v!r:.12}" for c, n, v in REFUSED])
def test_a_bad_argument_is_refused(cls, name, value):
    with deadline(20, f"{cls.__name__}({name}={value!r:.30})"), torch.device("meta"):
        with pytest.raises((TypeError, ValueError), match=rf"(?<![A-Za-z_]){name}(?![A-Za-z_])"):
            cls(**{**BASE[cls], name: value})


def test_widths_and_factories_that_are_right_still_build():
    """The checks take what the constructors took before (one int for one hidden layer, a
    tuple, no hidden layer where an MLP may be linear, an activation factory), and numpy ints."""
    import functools

    import numpy as np

    assert len(gnn.MLP(3, 2, 5)) == 3
    assert len(gnn.MLP(3, 2, ())) == 1
    assert gnn.MLP(3, 2, (np.int64(4),))[0].out_features == 4
    leaky = gnn.MLP(3, 2, [4], activation=functools.partial(torch.nn.LeakyReLU, 0.2))
    assert isinstance(leaky[1], torch.nn.LeakyReLU) and leaky[1].negative_slope == 0.2
    assert models.VAE(16, hidden=32).config["hidden"] == [32]
    assert models.SimCLR(hidden=[16, 32]).config["hidden"] == [16, 32]
    assert models.RealNVP(4, hidden=[]).config["hidden"] == []
    assert models.NICE(4, n_couplings=MAX_DEPTH // 64).config["n_couplings"] == MAX_DEPTH // 64


def test_hierarchical_vae_names_a_one_row_training_batch():
    """Batch normalisation cannot take statistics of one row: the model says so (and what to
    do) instead of BatchNorm's "Expected more than 1 value per channel". The evaluations
    that switch to eval mode themselves take one row in training mode too."""
    net = models.HierarchicalVAE(16, latent_dims=(4, 2), hidden=(8,))
    x = torch.rand(1, 16)
    with pytest.raises(ValueError, match="batch of 1 row.*batch_norm=True.*eval"):
        net.loss(x)
    assert torch.isfinite(net.log_likelihood(x, n_samples=2)).all() and net.training
    net.eval()
    assert torch.isfinite(net.elbo(x)).all()  # running statistics: one row is fine
    plain = models.HierarchicalVAE(16, latent_dims=(4, 2), hidden=(8,), batch_norm=False)
    assert torch.isfinite(plain.loss(x))


def test_arrays_and_numpy_sizes_build_and_round_trip_through_the_config():
    """1-D arrays and tensors of sizes are taken as lists (they were before the checks), and
    numpy sizes are stored in the config as plain ints: the config is JSON and builds the
    same model again."""
    import json

    import numpy as np

    cases = {
        "vae": models.VAE(features=np.array([1, 8, 8]), hidden=np.array([16, 16]), latent_dim=np.int64(2)),
        "vqvae": models.VQVAE(torch.tensor([1, 8, 8]), num_codes=8, prior=False),
        "gan": models.GAN(features=(1, 8, 8), arch="conv", hidden=np.array([16]), latent_dim=4),
        "realnvp": models.RealNVP(np.int64(4), 2, hidden=np.int64(8)),
        "glow": models.Glow(np.int64(4), 2, 1, hidden=np.array([8])),
        "nice": models.NICE(np.int64(4), 2, hidden=np.int64(8)),
        "nsf": models.NeuralSplineFlow(np.int64(4), 2, hidden=np.array([8])),
        "ae": models.Autoencoder(np.int64(16), 2, hidden=np.array([8])),
        "hvae": models.HierarchicalVAE(np.int64(16), np.array([4, 2]), (8,)),
    }
    for name, net in cases.items():
        config = json.loads(json.dumps(net.config))  # plain JSON
        again = models.build(name, config)
        assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in net.parameters()), name
    assert cases["realnvp"].config["features"] == 4 and cases["realnvp"].config["hidden"] == 8


def test_a_vqvae_without_prior_keeps_its_unread_prior_arguments():
    """prior=False builds no prior: its arguments are not checked (a config of such a model,
    as saved before the checks, still builds)."""
    net = models.VQVAE(prior=False, prior_width=30, prior_heads=4)
    assert net.prior is None and models.build("vqvae", net.config).prior is None
    with pytest.raises(ValueError, match="prior_width .30. must be divisible by prior_heads"):
        models.VQVAE(prior_width=30, prior_heads=4)


def _is_plain(v) -> bool:
    if isinstance(v, dict):
        return all(_is_plain(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return all(_is_plain(x) for x in v)
    return v is None or type(v) in (int, float, bool, str)


def _numpy_versions(default):
    """numpy scalars of the types numpy code hands over, for an int or float default."""
    import numpy as np

    if isinstance(default, bool):
        return []
    if isinstance(default, int):
        return [np.int64(default), np.int32(default)]
    if isinstance(default, float):
        return [np.float32(default), np.float64(default)]
    if isinstance(default, (tuple, list)) and default and all(type(x) is int for x in default):
        return [tuple(np.int64(x) for x in default)]
    return []


NUMPY_CASES = [(cls, p.name) for cls in BASE for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
               if _numpy_versions(BASE[cls].get(p.name, p.default))]


@pytest.mark.parametrize("cls, name", NUMPY_CASES, ids=[f"{c.__name__}-{n}" for c, n in NUMPY_CASES])
def test_numpy_scalars_are_taken_and_the_config_stays_plain(cls, name):
    """An argument given as the numpy scalar of its default builds (np.float32 clamps,
    bounds, betas and np.int64 bins were refused as "must be a number" / "an int"), and a
    model's config holds plain Python values (np.int64 couplings went into it as they
    were, so the checkpoint's JSON failed)."""
    import json

    default = BASE[cls].get(name, inspect.signature(cls.__init__).parameters[name].default)
    for value in _numpy_versions(default):
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = cls(**{**BASE[cls], name: value})
        config = getattr(net, "config", None)
        if isinstance(config, dict):
            assert _is_plain(config), (name, type(value).__name__, config)
            json.dumps(config)
            key = next(k for k, c in models.MODELS.items() if c is cls)
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                again = models.build(key, config)
            assert again.config == config


def test_build_bounds_numpy_ints_as_ints():
    """A config read with numpy (np.int64 from an array) is bounded as its ints are: it
    went past MAX_CONFIG_INT before, and the model's own checkpoint was then refused."""
    import numpy as np

    config = {"features": 4, "latent_dim": 2, "hidden": [8], "n_critic": np.int64(models.MAX_CONFIG_INT + 1)}
    with pytest.raises(ValueError, match="n_critic = 1048577 exceeds the bound"):
        models.build("gan", config)


def test_plain_config_keeps_tuples_and_lists_the_rest():
    from collections import namedtuple

    import numpy as np

    from gencore._arguments import plain_config

    pair = namedtuple("pair", "a b")
    out = plain_config({"t": (np.int64(1), 2.5), "n": pair(np.float32(0.5), None), "s": torch.Size([2, 3]),
                        "x": torch.tensor([1, 2]), "b": np.bool_(True), "nested": {"k": [np.int32(3)]}})
    assert out == {"t": (1, 2.5), "n": [0.5, None], "s": [2, 3], "x": [1, 2], "b": True, "nested": {"k": [3]}}
    assert _is_plain(out) and type(out["t"]) is tuple and type(out["b"]) is bool


def test_gan_networks_take_numpy_shapes():
    import numpy as np

    from gencore.models.gan import MLPDiscriminator, MLPGenerator

    assert MLPGenerator(2, np.int64(4), (8,)).event_shape == (4,)
    assert MLPDiscriminator(np.array([1, 8, 8]), (8,)).net[0].in_features == 64
