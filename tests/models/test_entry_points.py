"""Every model family at its public entry points, side by side: the parameter bound of
``gencore.models.build`` counts every family's config on the meta device; inputs on the
meta device or of another dtype than the model's, flags that are not bools, code ids out
of range, batch sizes that are not positive, and non-finite data get an error that names
the model and the problem (the families' own test files hold their quality tests)."""

import math

import pytest
import torch

from gencore import models
from gencore.models import (CLIP, GAN, NICE, PCA, VAE, VQVAE, Autoencoder, Glow, HierarchicalVAE,
                            NeuralSplineFlow, RealNVP, SimCLR, TextToImage)
from gencore.nn import CLIPLoss, NTXentLoss, SigLIPLoss

SMALL = {
    "nice": lambda: NICE(4, 2, (8,)),
    "realnvp": lambda: RealNVP(4, 2, (8,)),
    "glow": lambda: Glow((1, 4, 4), 1, 1, hidden=4),
    "nsf": lambda: NeuralSplineFlow(3, 2, (8,), bins=4),
    "gan": lambda: GAN(features=4, latent_dim=2, hidden=(8,)),
    "pca": lambda: PCA(2),
    "ae": lambda: Autoencoder(4, 2, (8,)),
    "vae": lambda: VAE(4, latent_dim=2, hidden=(8,)),
    "simclr": lambda: SimCLR(kind="mlp", hidden=[16]),
    "clip": lambda: CLIP(embed_dim=4, kind="mlp", hidden=[8], image_feature_dim=8, text_feature_dim=8, token_dim=4,
                         text_hidden=[8], loss="siglip", augment={}),
    "vqvae": lambda: VQVAE((1, 4, 4), num_codes=4, code_dim=2, hidden=4, prior_width=8, prior_layers=1,
                           prior_heads=2),
    "hvae": lambda: HierarchicalVAE(4, latent_dims=(2, 2), hidden=(8,)),
    "text2image": lambda: TextToImage(num_codes=4, code_dim=2, hidden=4, width=8, layers=1, heads=2),
}


def test_every_family_is_small_here():
    assert set(SMALL) == set(models.MODELS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_parameter_bound_counts_every_family(name):
    # SimCLR's and CLIP's augment options were checked with a CPU generator on a tensor of
    # the default device: on the meta device that raised, the count came back None and
    # build skipped its bound for every SimCLR config.
    model = SMALL[name]()
    real = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert models._parameter_count(models.MODELS[name], model.config) == real
    rebuilt = models.build(name, model.config)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())


def test_a_simclr_config_over_the_bound_is_refused(monkeypatch):
    config = SMALL["simclr"]().config
    monkeypatch.setattr(models, "MAX_PARAMETERS", 1000)
    with pytest.raises(ValueError, match="parameters exceed the bound 1,000"):
        models.build("simclr", config)


def _entry(name):
    """(model, a call of its main entry point on x) for a family with one data input."""
    model = SMALL[name]()
    calls = {
        "nice": lambda m, x: m.log_prob(x), "realnvp": lambda m, x: m.log_prob(x), "glow": lambda m, x: m.log_prob(x),
        "nsf": lambda m, x: m.log_prob(x), "gan": lambda m, x: m.critic(x), "ae": lambda m, x: m.encode(x),
        "vae": lambda m, x: m.loss(x), "simclr": lambda m, x: m.embed(x), "vqvae": lambda m, x: m.loss(x),
        "hvae": lambda m, x: m.loss(x),
    }
    return model, calls[name]


def _example(name, dtype=torch.float32, device="cpu"):
    shapes = {"glow": (3, 1, 4, 4), "nsf": (3, 3), "simclr": (3, 64), "vqvae": (3, 16)}
    return torch.rand(shapes.get(name, (3, 4)), dtype=dtype, device=device)


ENTRIES = ["nice", "realnvp", "glow", "nsf", "gan", "ae", "vae", "simclr", "vqvae", "hvae"]


@pytest.mark.parametrize("name", ENTRIES)
def test_meta_inputs_are_named(name):
    model, call = _entry(name)
    with pytest.raises(ValueError, match="is on the meta device"):
        call(model, _example(name, device="meta"))


@pytest.mark.parametrize("name", ENTRIES)
def test_another_dtype_than_the_models_is_named(name):
    model, call = _entry(name)
    with pytest.raises(ValueError, match="is torch.float64 on cpu, the model is torch.float32 on cpu"):
        call(model, _example(name, dtype=torch.float64))
    call(model.double(), _example(name, dtype=torch.float64))  # converted: fine


def test_pca_refuses_meta_input():
    pca = PCA(2).fit(torch.randn(10, 4))
    with pytest.raises(ValueError, match="PCA: X is on the meta device"):
        pca.transform(torch.empty(3, 4, device="meta"))


@pytest.mark.parametrize("make, flag", [
    (lambda v: SigLIPLoss(distributed=v), "SigLIPLoss: distributed"),
    (lambda v: CLIPLoss(distributed=v), "CLIPLoss: distributed"),
    (lambda v: NTXentLoss(distributed=v), "NTXentLoss: distributed"),
    (lambda v: NTXentLoss(learnable=v), "NTXentLoss: learnable"),
    (lambda v: SimCLR(kind="mlp", hidden=[8], distributed=v), "SimCLR: distributed"),
    (lambda v: CLIP(kind="mlp", hidden=[8], distributed=v), "CLIP: distributed"),
    (lambda v: RealNVP(3, 2, (8,), actnorm=v), "RealNVP: actnorm"),
    (lambda v: NICE(4, 2, (8,), actnorm=v), "NICE: actnorm"),
    (lambda v: NeuralSplineFlow(3, 2, (8,), actnorm=v), "NeuralSplineFlow: actnorm"),
    (lambda v: RealNVP(3, 2, (8,), memory_efficient=v), "RealNVP: memory_efficient"),
])
def test_flags_must_be_bools(make, flag):
    # "no" is truthy: it used to switch the flag on (and land in the config as "no").
    for value in ("no", 1, None):
        with pytest.raises(TypeError, match=f"{flag} must be a bool, got"):
            make(value)


@pytest.mark.parametrize("cls", [SigLIPLoss, CLIPLoss])
def test_logit_scale_limits_are_checked_in_float32(cls):
    with pytest.raises(ValueError, match="exp\\(init_logit_scale\\) exceeds max_logit_scale"):
        cls(init_logit_scale=1000.0)  # (math.exp(1000) overflowed in the message itself)
    with pytest.raises(ValueError, match="max_logit_scale must be a positive finite number \\(float32"):
        cls(max_logit_scale=1e39)
    with pytest.raises(ValueError, match="init_logit_scale must be a finite number"):
        cls(init_logit_scale=10**400)
    loss = cls(max_logit_scale=3e38, init_logit_scale=math.log(10.0))
    a = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    assert torch.isfinite(loss(a, a))


def test_vae_decode_checks_the_latent_size():
    vae = SMALL["vae"]()
    with pytest.raises(ValueError, match=r"VAE: z must have shape \(\.\.\., 2\)"):
        vae.decode(torch.randn(3, 4))
    assert vae.decode(torch.randn(5, 3, 2)).shape[:3] == (5, 3, 4)


def test_vqvae_code_ids_are_checked():
    q = SMALL["vqvae"]()
    with pytest.raises(ValueError, match=r"codes must have shape \(B, 2, 2\)"):
        q.decode_codes(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"code ids must be in \[0, 4\), got values in \[-1, -1\]"):
        q.decode_codes(torch.full((2, 2, 2), -1))
    with pytest.raises(ValueError, match=r"code ids must be in \[0, 4\)"):
        q.decode_codes(torch.full((2, 2, 2), 7))
    with pytest.raises(TypeError, match="codes must be an integer tensor"):
        q.decode_codes(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match=r"CodePrior: code ids must be in \[0, 4\)"):
        q.prior.log_prob(torch.full((2, 4), 4))
    assert q.decode_codes(torch.full((2, 2, 2), 3)).shape[0] == 2


@pytest.mark.parametrize("call", [
    lambda x, b: SMALL["vqvae"]().nll_bound(x, batch_size=b),
    lambda x, b: SMALL["vae"]().log_likelihood(x.reshape(-1, 16)[:, :4], 4, batch_size=b),
])
def test_batched_evaluations_check_batch_size_and_emptiness(call):
    x = torch.rand(5, 16)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"batch_size must be a positive int, got {bad}"):
            call(x, bad)
    with pytest.raises(ValueError, match="empty batch"):
        call(x[:0], 2)
    assert call(x, 2).shape == (5,)


def test_text2image_nll_bound_checks_batch_size():
    model = SMALL["text2image"]()
    x = torch.rand(3, 64)
    captions = ["one", "thin two", "seven"]
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.nll_bound(x, captions, batch_size=0)


def test_gan_refuses_non_finite_data_before_a_step():
    gan = SMALL["gan"]()
    before = [p.detach().clone() for p in gan.parameters()]
    optimizers = gan.configure_optimizers(1e-3)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="GAN: x contains NaN or infinite values"):
            gan.train_step(torch.full((3, 4), bad), optimizers)
    assert all(torch.equal(a, p) for a, p in zip(before, gan.parameters()))


@pytest.mark.parametrize("name", ["nice", "realnvp", "glow", "nsf"])
def test_flow_log_prob_refuses_infinite_input(name):
    model = SMALL[name]().eval()
    x = _example(name)
    x.view(-1)[0] = math.inf
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        model.log_prob(x)


def test_flow_context_must_be_a_finite_tensor():
    flow = RealNVP(3, 2, (8,), context_features=2).eval()
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match=r"context must be a floating-point tensor of shape \(4, 2\), got list"):
        flow.log_prob(x, [[0.0, 1.0]] * 4)
    with pytest.raises(ValueError, match="RealNVP: context contains NaN or infinite values"):
        flow.log_prob(x, torch.full((4, 2), math.nan))
    assert torch.isfinite(flow.log_prob(x, torch.zeros(4, 2))).all()


@pytest.mark.parametrize("name", ["nice", "realnvp", "glow", "nsf", "gan"])
def test_sampling_names_a_generator_that_is_not_one(name):
    net = SMALL[name]()
    for bad in ("x", 0, 2.5):
        with pytest.raises(TypeError, match="generator must be a torch.Generator or None"):
            net.sample(2, generator=bad)  # before: "'str' object has no attribute 'device'"


def test_huge_temperatures_and_candidates_are_numbers_not_overflows():
    """An int temperature beyond int64 used to reach the logits' division as an int
    (OverflowError); candidates beyond int64 reached repeat_interleave."""
    vq = SMALL["vqvae"]()
    assert vq.sample(2, temperature=10**19).shape == (2, 1, 4, 4)
    t2i = TextToImage(num_codes=4, code_dim=2, hidden=4, width=8, layers=1, heads=2, clip_embed_dim=0)
    assert t2i.generate(["zero"], temperature=10**19).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="candidates must be an int <= 2147483647"):
        t2i.generate(["zero"], candidates=10**19)


def test_vae_interpolate_checks_its_examples():
    vae = SMALL["vae"]()
    with pytest.raises(TypeError, match="x_a must be a tensor"):
        vae.interpolate([0.5] * 4, torch.rand(4))
    with pytest.raises(ValueError, match=r"x_b must be one example of 4 values, got shape \(2, 4\)"):
        vae.interpolate(torch.rand(4), torch.rand(2, 4))
    assert vae.interpolate(torch.rand(4), torch.rand(1, 4), steps=3).shape == (3, 4)


def test_vqvae_nll_bound_checks_the_labels():
    vq = VQVAE((1, 4, 4), num_codes=4, code_dim=2, hidden=4, prior_width=8, prior_layers=1, prior_heads=2,
               classes=3)
    x = torch.rand(5, 1, 4, 4)
    for bad in (0, torch.tensor(1), torch.zeros(4, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
            vq.nll_bound(x, bad)  # before: "'int' object is not subscriptable" / a slice IndexError
    with pytest.raises(TypeError, match="labels must be class labels of shape"):
        vq.nll_bound(x, object())
    assert torch.isfinite(vq.nll_bound(x, torch.tensor([0, 1, 2, 0, 1]))).all()
    assert torch.equal(vq.nll_bound(x, [0, 1, 2, 0, 1]), vq.nll_bound(x, torch.tensor([0, 1, 2, 0, 1])))


def test_numpy_scalars_reach_the_helpers_as_the_numbers_they_hold():
    """Counts and rates from numpy code (np.int64 k, np.float32 C) give what the Python
    numbers give: the helpers refused them as "must be a positive int" before."""
    import numpy as np

    from gencore import representation as rep
    from gencore.data import encode_caption, load_dataset
    from gencore.data.augment import random_erase, random_shift
    from gencore.metrics import bits_per_dim

    x, _ = load_dataset("8gaussians", "train", n=np.int64(7), seed=np.int64(1))
    assert torch.equal(x, load_dataset("8gaussians", "train", n=7, seed=1)[0])
    assert torch.equal(encode_caption("bold zero", length=np.int64(4)), encode_caption("bold zero", length=4))
    img = torch.rand(3, 64)

    def seeded(fn, **kw):
        return fn(img, torch.Generator().manual_seed(0), **kw)

    assert torch.equal(seeded(random_shift, max_shift=np.int64(2)), seeded(random_shift, max_shift=2))
    assert torch.equal(seeded(random_erase, size=np.int32(2), prob=np.float32(0.5)),
                       seeded(random_erase, size=2, prob=0.5))
    assert bits_per_dim(np.float32(10.0), 4) == bits_per_dim(10.0, 4)
    assert type(bits_per_dim(10.0, np.int64(4), np.int64(17))) is float  # "same type as nll_nats"
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 3, generator=g), torch.randn(10, 3, generator=g)
    ya, yb = torch.arange(20) % 2, torch.arange(10) % 2
    assert rep.knn_accuracy(a, ya, b, yb, k=np.int64(3)) == rep.knn_accuracy(a, ya, b, yb, k=3)
    assert rep.linear_probe(a, ya, b, yb, C=np.float32(0.5)) == rep.linear_probe(a, ya, b, yb, C=0.5)
    assert rep.retrieval_recall(a[:10], b, k=np.array([1, 2])) == rep.retrieval_recall(a[:10], b, k=(1, 2))
    assert rep.retrieval_recall(a[:10], b, k=np.int64(2)) == rep.retrieval_recall(a[:10], b, k=2)
    assert torch.equal(rep.nearest(b, a, k=np.int64(2)), rep.nearest(b, a, k=2))
    assert torch.equal(rep.embed(nn_identity, a, batch_size=np.int64(7)), a)
    with pytest.raises(ValueError, match="k must be a positive int"):
        rep.retrieval_recall(a[:10], b, k=np.array([1.5]))
    import json

    from gencore.data import load_dataset as load

    images, tokens, _ = load("digits-captions", "val")
    out = rep.caption_arithmetic(SMALL["clip"]().eval(), images[:40], tokens[:40], k=np.int64(3))
    assert out["k"] == 3 and type(out["k"]) is int
    json.dumps(out)
    with pytest.raises(ValueError, match="k must be an int in 1..40"):
        rep.caption_arithmetic(SMALL["clip"]().eval(), images[:40], tokens[:40], k=41)


def nn_identity(x):
    return x
