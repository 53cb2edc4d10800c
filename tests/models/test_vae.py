"""gencore.models.VAE: ELBO, importance-weighted likelihood, training on digits, the
conditional variants, generation, checkpoints and bad inputs."""


import pytest
import torch

from gencore.data import dequantize, load_dataset
from gencore.models import VAE, build
from gencore.models.vae import LIKELIHOODS
from gencore.train import fit, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def digits():
    x, y = load_dataset("digits", "train", dequantized=False)  # levels; dequantized per batch
    xt, yt = load_dataset("digits", "test")
    return x, y, xt, yt


def best_ppca_log_likelihood(x, xt):
    """Best held-out probabilistic-PCA log-likelihood (nats per example) over n_components."""
    from sklearn.decomposition import PCA

    return max(PCA(k).fit(x.double().numpy()).score(xt.double().numpy()) for k in (8, 16, 24, 32, 40, 48))


@pytest.fixture(scope="module")
def trained(digits):
    x, _, xt, _ = digits
    torch.manual_seed(0)
    m = VAE(64, latent_dim=16, hidden=[256, 256], likelihood="categorical")
    fit(m, x, steps=700, batch_size=128, lr=2e-3, seed=0, eval_data=xt, progress=False, schedule="cosine",
        batch_transform=lambda b, g: dequantize(b, g), keep_best=True)
    return m


def test_vae_beats_probabilistic_pca_and_iw_bound_is_above_elbo(digits, trained):
    x, _, xt, _ = digits
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = trained.elbo(xt, generator=g).mean().item()
        iw = trained.log_likelihood(xt, n_samples=1000, generator=g).mean().item()
    ppca = best_ppca_log_likelihood(dequantize(x, torch.Generator().manual_seed(1)), xt)
    # The importance-weighted estimate tightens the bound, and the VAE is the better density.
    assert iw >= elbo
    assert iw > ppca + 5, (iw, ppca)
    # Untrained: the uniform-ish decoder scores near 0 nats (log2(17) bits/dim).
    fresh = VAE(64, latent_dim=16, likelihood="categorical")
    with torch.no_grad():
        assert fresh.elbo(xt).mean().item() < iw - 60


def test_iw_estimate_increases_with_k(digits, trained):
    _, _, xt, _ = digits
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        vals = [trained.log_likelihood(xt[:200], n_samples=k, generator=g).mean().item() for k in (1, 10, 100)]
    assert vals[0] < vals[1] < vals[2]


def test_uniform_decoder_has_zero_log_density():
    # All-zero logits: each of the 17 levels has probability 1/17, so the dequantized
    # density is 1 on [0, 1)^D: log p(x | z) = 0 for every x.
    m = VAE(10, latent_dim=3, likelihood="categorical")
    torch.nn.init.zeros_(m.decoder[-1].weight)
    torch.nn.init.zeros_(m.decoder[-1].bias)
    x = torch.rand(7, 10)
    with torch.no_grad():
        rate, distortion = m.rate_distortion(x)
    torch.testing.assert_close(distortion, torch.zeros(7), atol=1e-5, rtol=0)
    assert (rate >= 0).all()


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_every_likelihood_learns(digits, likelihood):
    x, _, xt, _ = digits
    torch.manual_seed(0)
    m = VAE(64, latent_dim=8, hidden=[128], likelihood=likelihood, sigma=0.2)
    with torch.no_grad():
        before = m.loss(xt).item()
    fit(m, x / 17, steps=150, batch_size=128, lr=3e-3, progress=False)
    with torch.no_grad():
        after = m.loss(xt).item()
    assert after < before - 0.25 * abs(before), (before, after)
    assert m.sample(5).shape == (5, 64)


def test_image_shape_and_generation(digits, trained):
    _, _, xt, _ = digits
    m = VAE([1, 8, 8], latent_dim=4, hidden=[32])
    img = xt[:6].reshape(6, 1, 8, 8)
    assert m.elbo(img).shape == (6,)
    assert m.reconstruct(img).shape == (6, 1, 8, 8)
    assert m.sample(3).shape == (3, 1, 8, 8)
    path = trained.interpolate(xt[0], xt[1], steps=5)
    assert path.shape == (5, 64)
    torch.testing.assert_close(path[0], trained.reconstruct(xt[:1])[0])
    torch.testing.assert_close(path[-1], trained.reconstruct(xt[1:2])[0])
    s = trained.sample(16, generator=torch.Generator().manual_seed(0), mean=False)
    assert ((s * 17 - 0.5).round() - (s * 17 - 0.5)).abs().max() < 1e-5  # level centres


def test_sampling_and_loss_are_deterministic_under_a_seed(digits, trained):
    _, _, xt, _ = digits
    a = trained.sample(8, generator=torch.Generator().manual_seed(5))
    b = trained.sample(8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.manual_seed(1)
    la = trained.loss(xt[:50])
    torch.manual_seed(1)
    lb = trained.loss(xt[:50])
    assert torch.equal(la, lb)


def test_class_conditional_vae_generates_the_asked_class(digits):
    from gencore.metrics import digits_classifier

    x, y, xt, yt = digits
    c = torch.nn.functional.one_hot(y, 10).float()
    torch.manual_seed(0)
    m = VAE(64, latent_dim=8, hidden=[256, 256], context_features=10)
    fit(m, (x, c), steps=600, batch_size=128, lr=2e-3, progress=False, schedule="cosine",
        batch_transform=lambda b, g: (dequantize(b[0], g), b[1]))
    labels = torch.arange(10).repeat(20)
    samples = m.sample(200, generator=torch.Generator().manual_seed(0), context=torch.nn.functional.one_hot(labels, 10).float())
    clf = digits_classifier()
    with torch.no_grad():
        acc = (clf(samples).argmax(1) == labels).float().mean().item()
    assert acc > 0.7, acc


def test_half_to_half_completion_beats_the_unconditional_guess(digits):
    # The lecture's prediction task: the second half of a digit given the first half.
    x, _, xt, _ = digits
    x = x / 17
    first, second = x[:, :32], x[:, 32:]
    torch.manual_seed(0)
    m = VAE(32, latent_dim=8, hidden=[128, 128], context_features=32)
    fit(m, (second, first), steps=500, batch_size=128, lr=2e-3, progress=False)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([m.sample(xt.shape[0], generator=g, context=xt[:, :32]) for _ in range(32)])
    target = xt[:, 32:]
    # A drawn completion against a drawn second half of another digit (the marginal), and
    # the conditional mean against the marginal mean.
    err_draw = (draws[0] - target).pow(2).sum(1).mean().item()
    other = second[torch.randperm(len(second), generator=g)[: len(target)]]
    err_other = (other - target).pow(2).sum(1).mean().item()
    err_mean = (draws.mean(0) - target).pow(2).sum(1).mean().item()
    err_marginal_mean = (second.mean(0) - target).pow(2).sum(1).mean().item()
    assert err_draw < 0.75 * err_other, (err_draw, err_other)
    assert err_mean < 0.75 * err_marginal_mean, (err_mean, err_marginal_mean)


def test_checkpoint_round_trip(tmp_path, trained, digits):
    _, _, xt, _ = digits
    save_checkpoint(tmp_path, trained, step=3)
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["model"] == "vae" and isinstance(loaded, VAE)
    loaded.eval()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(loaded.elbo(xt[:20], generator=g1), trained.elbo(xt[:20], generator=g2))
    assert isinstance(build("vae", trained.config), VAE)


def test_bools_are_not_numbers():
    for kw, name in ((dict(latent_dim=True), "latent_dim"), (dict(levels=True), "levels"),
                     (dict(sigma=True), "sigma"), (dict(beta=True), "beta"),
                     (dict(context_features=True), "context_features"), (dict(features=True), "features")):
        with pytest.raises(TypeError, match=name):
            VAE(**{"features": 8, **kw})
    m = VAE(8, latent_dim=2, hidden=[8])
    with pytest.raises(TypeError, match="n_samples must be an int, got bool"):
        m.log_likelihood(torch.rand(2, 8), n_samples=True)
    with pytest.raises(TypeError, match="n must be an int, got bool"):
        m.sample(True)


def test_bad_inputs():
    m = VAE(64, latent_dim=4, hidden=[16])
    with pytest.raises(ValueError, match="shape"):
        m.elbo(torch.zeros(3, 63))
    with pytest.raises(ValueError, match="empty batch"):
        m.elbo(torch.zeros(0, 64))
    with pytest.raises(TypeError, match="floating"):
        m.elbo(torch.zeros(3, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        m.elbo(torch.zeros(3, 64), torch.zeros(3, 10))
    with pytest.raises(ValueError, match="beta"):
        m.loss(torch.zeros(3, 64), beta=float("nan"))
    with pytest.raises(ValueError, match="n_samples"):
        m.log_likelihood(torch.zeros(3, 64), n_samples=0)
    with pytest.raises(ValueError, match="likelihood"):
        VAE(64, likelihood="poisson")
    with pytest.raises(ValueError, match="sigma"):
        VAE(64, likelihood="gaussian", sigma=float("nan"))
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(64, latent_dim=0)
    cond = VAE(64, latent_dim=4, hidden=[16], context_features=10)
    with pytest.raises(ValueError, match="conditional"):
        cond.elbo(torch.zeros(3, 64))
    with pytest.raises(ValueError, match="context must have shape"):
        cond.elbo(torch.zeros(3, 64), torch.zeros(3, 9))
    with pytest.raises(ValueError, match="NaN"):
        fit(m, torch.full((8, 64), float("nan")), steps=1, progress=False)
    with pytest.raises(TypeError, match=r"batch must be x or \(x, context\), got a list of 3 items"):
        m.loss(torch.rand(3, 64).tolist())  # rows as a list (this used to fail unpacking 3 into 2)
    x = torch.rand(3, 64)
    torch.manual_seed(0)
    one = m.loss((x,))
    torch.manual_seed(0)
    assert torch.equal(one, m.loss(x))  # a 1-tuple is x alone


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli"])
def test_discrete_decoders_reject_data_outside_unit_interval(likelihood):
    """Raw levels 0..16 used to be clamped to the top level, and NaN gave a NaN loss (issue #15)."""
    m = VAE(8, latent_dim=2, hidden=[8], likelihood=likelihood)
    levels = torch.arange(8.0).repeat(3, 1) * 2  # raw levels 0..14
    with pytest.raises(ValueError, match=r"in \[0, 1\].*got values in \[0, 14\]"):
        m.loss(levels)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        m.elbo(torch.full((2, 8), -0.5))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        m.log_likelihood(levels, n_samples=2)
    ok = torch.rand(3, 8)
    ok[0, 0], ok[1, 1] = 0.0, 1.0  # the closed interval: 1.0 can come out of float rounding
    assert torch.isfinite(m.loss(ok))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_data_raises(likelihood, bad):
    m = VAE(8, latent_dim=2, hidden=[8], likelihood=likelihood)
    x = torch.rand(3, 8)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        m.loss(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.log_likelihood(x, n_samples=2)
