"""gencore.models.HierarchicalVAE: the top-down posterior against learned priors, its
importance-weighted likelihood (checked against quadrature), training on the digits against
the single-layer VAE, per-layer KL and active units, free bits, generation, checkpoints and
bad inputs."""

import math

import pytest
import torch

from gencore.data import dequantize, load_dataset
from gencore.models import VAE, HierarchicalVAE, build
from gencore.models.hvae import LOGVAR_BOUND
from gencore.train import fit, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def digits():
    x, _ = load_dataset("digits", "fit", dequantized=False)  # levels; dequantized per batch
    xv, _ = load_dataset("digits", "val")
    xt, _ = load_dataset("digits", "test")
    return x, xv, xt


def _train(model, digits, steps):
    x, xv, _ = digits
    fit(model, x, steps=steps, batch_size=128, lr=2e-3, seed=0, eval_data=xv, eval_every=50, progress=False,
        schedule="cosine", batch_transform=lambda b, g: dequantize(b, g), keep_best=True)
    return model.eval()


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    return _train(HierarchicalVAE(64, (16, 8)), digits, 600)


def test_two_layers_beat_the_vae_trained_the_same_way(digits, trained):
    """The issue's target: trained the same way (fit split, the state with the best val loss,
    the test split scored once), the hierarchical VAE's IWAE (K = 1000) test NLL is more than
    1 nat below the VAE's. Measured at 600 steps, seed 0: see the assert's message."""
    _, _, xt = digits
    torch.manual_seed(0)
    vae = _train(VAE(64, latent_dim=16, hidden=[256, 256], likelihood="categorical"), digits, 600)
    g = torch.Generator().manual_seed(0)
    nll_h = -trained.log_likelihood(xt, 1000, generator=g).mean().item()
    nll_v = -vae.log_likelihood(xt, 1000, generator=g).mean().item()
    assert nll_h < nll_v - 1.0, (nll_h, nll_v)
    # Better than uniform over the 17 levels (0 nats) by far, and the IW bound above the ELBO.
    assert nll_h < -80
    assert -trained.elbo(xt, generator=g).mean().item() > nll_h


def test_iw_estimate_matches_quadrature_of_a_tiny_model():
    """With one-dimensional z_1 and z_2, log p(x) = log double-integral of p(x|z1) p(z1|z2)
    p(z2) is computed on a grid; the IWAE estimate at large K agrees, and K = 1 (the ELBO)
    lies below it."""
    torch.manual_seed(3)
    m = HierarchicalVAE(6, (1, 1), hidden=[8], levels=3, batch_norm=False).double().eval()
    with torch.no_grad():
        for p in m.parameters():  # a non-trivial model: random weights, posteriors off their priors
            p.normal_(0, 0.4)
    x = dequantize(torch.randint(0, 3, (3, 6)).double(), torch.Generator().manual_seed(1), n_levels=3).double()
    grid = torch.linspace(-12, 12, 1201, dtype=torch.float64)
    dz = (grid[1] - grid[0]).item()
    with torch.no_grad():
        z2 = grid[:, None]
        _, pm, plv, _ = m._prior_step(0, z2)  # p(z1 | z2) for every grid z2: (G, 1)
        z1 = grid[None, :]  # (1, G)
        log_p12 = (-0.5 * ((z1 - pm) ** 2 * torch.exp(-plv) + plv + math.log(2 * math.pi))
                   - 0.5 * (z2 ** 2 + math.log(2 * math.pi)))  # (G2, G1)
        log_px = m._log_px(x[:, None, :].expand(-1, len(grid), -1), m._logits(grid[:, None]).expand(len(x), -1, -1, -1))  # (B, G1)
        exact = torch.logsumexp(log_p12[None] + log_px[:, None, :], dim=(1, 2)) + 2 * math.log(dz)
        g = torch.Generator().manual_seed(0)
        iw = m.log_likelihood(x, 100000, generator=g)
        elbo = m.log_likelihood(x, 1, generator=g)
    assert torch.allclose(iw, exact, atol=0.01), (iw, exact)
    assert (elbo <= exact + 1e-9).all()


def test_fresh_lower_layers_start_at_their_prior():
    """The residual posterior starts at dmu = dlogvar = 0: every layer but the top has a KL of
    exactly 0 (the fused op's KL of equal Gaussians), and no active unit."""
    torch.manual_seed(0)
    m = HierarchicalVAE(64, (16, 8, 4)).eval()
    x = torch.rand(32, 64)
    kl = m.kl_per_layer(x)
    assert kl.shape == (32, 3)
    assert (kl[:, :2] == 0).all() and (kl[:, 2] > 0).all()
    assert m.active_units(x)[:2] == [0, 0]


def test_terms_rate_loss_and_elbo_agree(trained, digits):
    _, xv, _ = digits
    t = trained.terms(xv, generator=torch.Generator().manual_seed(5))
    assert t["kl"].shape == (len(xv), 2) and (t["kl"] >= 0).all()
    assert torch.allclose(t["rate"], t["kl"].sum(1))
    elbo = trained.elbo(xv, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(elbo, -(t["rate"] + t["distortion"]))
    torch.manual_seed(7)
    loss = trained.loss(xv)
    torch.manual_seed(7)
    assert loss.item() == pytest.approx(-trained.elbo(xv).mean().item(), rel=1e-6)


def test_kl_per_layer_and_active_units_report_what_each_layer_carries(trained, digits):
    _, _, xt = digits
    kl = trained.kl_per_layer(xt, generator=torch.Generator().manual_seed(0)).mean(0)
    au = trained.active_units(xt)
    assert len(au) == 2 and 0 <= au[0] <= 16 and 0 <= au[1] <= 8
    assert (kl > 0.5).all(), kl  # both layers used after training: no collapse at these sizes
    assert sum(au) >= 8


def test_free_bits_floor_each_layers_kl_in_the_loss_only():
    torch.manual_seed(0)
    x = torch.rand(16, 20)
    base = HierarchicalVAE(20, (4, 2), hidden=[32])
    with torch.no_grad():  # the lower posterior slightly off its prior: 0 < KL_1 < the floor
        base.td_posterior[0][-1].weight.normal_(0, 0.01)
    floored = HierarchicalVAE(20, (4, 2), hidden=[32], free_bits=5.0)
    floored.load_state_dict(base.state_dict())
    torch.manual_seed(1)
    t = base.terms(x)
    kl = t["kl"].mean(0)
    assert 0 < kl[0] < 5
    expected = t["distortion"].mean() + kl.clamp(min=5.0).sum()
    torch.manual_seed(1)
    loss = floored.loss(x)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # below the floor a layer's KL sends no gradient: the floored loss's gradient is the
    # distortion's plus the top layer's KL alone (when the top is above the floor)
    head = [floored.td_posterior[0][-1].weight]
    (g_loss,) = torch.autograd.grad(loss, head)
    torch.manual_seed(1)
    t2 = floored.terms(x)
    rest = t2["distortion"].mean() + t2["kl"].mean(0)[1].clamp(min=5.0)
    (g_rest,) = torch.autograd.grad(rest, head)
    (g_kl1,) = torch.autograd.grad(t["kl"].mean(0)[0], [base.td_posterior[0][-1].weight])
    assert torch.allclose(g_loss, g_rest, atol=1e-7) and g_kl1.abs().max() > 1e-4
    # the ELBO does not see the floor
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    assert torch.equal(base.elbo(x, generator=g1), floored.elbo(x, generator=g2))


def test_iw_estimate_increases_with_k(trained, digits):
    _, xv, _ = digits
    g = torch.Generator().manual_seed(3)
    vals = [trained.log_likelihood(xv, n_samples=k, generator=g).mean().item() for k in (1, 10, 100)]
    assert vals[0] < vals[1] < vals[2]


def test_generation_reconstruction_and_seeds(trained, digits):
    _, xv, _ = digits
    s1 = trained.sample(12, generator=torch.Generator().manual_seed(4))
    s2 = trained.sample(12, generator=torch.Generator().manual_seed(4))
    assert s1.shape == (12, 64) and torch.equal(s1, s2)
    assert ((s1 >= 0) & (s1 <= 1)).all()
    draws = trained.sample(5, generator=torch.Generator().manual_seed(4), mean=False)
    assert set((draws * 17 - 0.5).round().unique().tolist()) <= set(range(17))
    rec = trained.reconstruct(xv)
    assert rec.shape == xv.shape
    # reconstructions through z_1 are far closer to the inputs than the data's mean is
    assert (rec - xv).pow(2).sum(1).mean() < 0.5 * (xv.mean(0) - xv).pow(2).sum(1).mean()


def test_image_event_shape():
    torch.manual_seed(0)
    m = HierarchicalVAE([1, 8, 8], (4, 2), hidden=[16]).eval()
    x = torch.rand(3, 1, 8, 8)
    assert m.sample(2).shape == (2, 1, 8, 8)
    assert m.reconstruct(x).shape == (3, 1, 8, 8)
    assert m.log_likelihood(x, 4).shape == (3,)
    assert m.elbo(x.reshape(3, 64)).shape == (3,)  # flat inputs are accepted too


def test_float64_and_gradients_reach_every_layer():
    torch.manual_seed(0)
    m = HierarchicalVAE(10, (3, 2, 2), hidden=[8]).double()
    with torch.no_grad():
        for head in m.td_posterior:  # leave the prior so every KL depends on both heads
            head[-1].weight.normal_(0, 0.1)
    loss = m.loss(torch.rand(6, 10, dtype=torch.float64))
    loss.backward()
    assert loss.dtype == torch.float64
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not name.endswith("running_mean"):
            assert p.grad.abs().sum() > 0, name


def test_log_variances_are_soft_clamped():
    """Posterior log-variances stay inside +-LOGVAR_BOUND even for huge pre-activations, so the
    KL and the IWAE weights stay finite."""
    torch.manual_seed(0)
    m = HierarchicalVAE(10, (3, 2), hidden=[8], batch_norm=False).eval()
    with torch.no_grad():
        m.top_posterior.bias[2:] = 1e4
        m.td_prior[0].bias[3:] = -1e4
    x = torch.rand(4, 10)
    t = m.terms(x)
    assert torch.isfinite(t["kl"]).all() and torch.isfinite(t["distortion"]).all()
    assert torch.isfinite(m.log_likelihood(x, 8)).all()
    assert LOGVAR_BOUND == 8.0


def test_checkpoint_round_trip(tmp_path, trained, digits):
    _, xv, _ = digits
    save_checkpoint(tmp_path / "ck", trained, step=3)
    clone = build("hvae", trained.config).eval()
    load_checkpoint(tmp_path / "ck", clone)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(trained.log_likelihood(xv[:8], 16, generator=g1), clone.log_likelihood(xv[:8], 16, generator=g2))
    assert clone.config == {"features": 64, "latent_dims": [16, 8], "hidden": [256, 256], "levels": 17,
                            "batch_norm": True, "free_bits": 0.0, "beta": 1.0}


@pytest.mark.parametrize("kwargs, err, match", [
    ({"latent_dims": ()}, ValueError, "latent_dims"),
    ({"latent_dims": (4, 0)}, ValueError, "latent_dims"),
    ({"latent_dims": 4}, TypeError, "latent_dims"),
    ({"latent_dims": (4, True)}, TypeError, "latent_dims"),
    ({"latent_dims": [2] * 65}, ValueError, "at most 64"),
    ({"hidden": ()}, ValueError, "hidden"),
    ({"hidden": 16}, TypeError, "hidden"),
    ({"levels": 1}, ValueError, "levels"),
    ({"batch_norm": 1}, TypeError, "batch_norm"),
    ({"free_bits": float("nan")}, ValueError, "free_bits"),
    ({"free_bits": True}, TypeError, "free_bits"),
    ({"beta": -1.0}, ValueError, "beta"),
])
def test_bad_constructor_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        HierarchicalVAE(64, **kwargs)


def test_bad_features():
    for bad in (0, [1, 8], True, "64"):
        with pytest.raises((TypeError, ValueError), match="features"):
            HierarchicalVAE(bad)


def test_bad_inputs_name_the_problem():
    m = HierarchicalVAE(16, (4, 2), hidden=[8]).eval()
    x = torch.rand(4, 16)
    cases = [
        (lambda: m.elbo(torch.rand(4, 15)), ValueError, "shape"),
        (lambda: m.elbo(torch.rand(0, 16)), ValueError, "empty batch"),
        (lambda: m.elbo(torch.full((2, 16), float("nan"))), ValueError, "NaN"),
        (lambda: m.elbo(x * 17), ValueError, r"\[0, 1\]"),
        (lambda: m.elbo(torch.ones(2, 16, dtype=torch.long)), TypeError, "floating-point"),
        (lambda: m.elbo(x.double()), ValueError, "float64"),
        (lambda: m.elbo(torch.rand(2, 16, device="meta")), ValueError, "meta"),
        (lambda: m.log_likelihood(x, 0), ValueError, "n_samples"),
        (lambda: m.log_likelihood(x, 4, batch_size=0), ValueError, "batch_size"),
        (lambda: m.log_likelihood(x, 4, torch.zeros(4, 10)), ValueError, "unconditional"),
        (lambda: m.rate_distortion(x, torch.zeros(4, 10)), ValueError, "unconditional"),
        (lambda: m.sample(0), ValueError, "positive"),
        (lambda: m.sample(True), TypeError, "bool"),
        (lambda: m.active_units(x[:1]), ValueError, "at least 2"),
        (lambda: m.loss(x, beta=float("inf")), ValueError, "beta"),
    ]
    for fn, err, match in cases:
        with pytest.raises(err, match=match):
            fn()


def test_evaluation_runs_in_eval_mode_and_restores_the_mode(trained, digits):
    """Batch normalisation: the likelihood, samples, reconstructions and active units use the
    running statistics whatever the model's mode, which is restored after."""
    _, xv, _ = digits
    x = xv[:8]
    trained.train()
    try:
        got = (trained.log_likelihood(x, 16, generator=torch.Generator().manual_seed(0)),
               trained.sample(4, generator=torch.Generator().manual_seed(0)), trained.reconstruct(x),
               trained.active_units(xv))
        assert trained.training
    finally:
        trained.eval()
    want = (trained.log_likelihood(x, 16, generator=torch.Generator().manual_seed(0)),
            trained.sample(4, generator=torch.Generator().manual_seed(0)), trained.reconstruct(x),
            trained.active_units(xv))
    for a, b in zip(got, want):
        assert (a == b) if isinstance(a, list) else torch.equal(a, b)
