"""GAN: loss formulas, per-sample gradient penalty, R1, the game's update counts, EMA, spectral
norm, determinism, exact resume with two optimizers, checkpoints, errors, and short runs
that must learn (8gaussians, class-conditional digits)."""

import json
import math

import pytest
import torch
from torch import nn

from gencore import metrics
from gencore.data import dequantize, load_dataset
from gencore.models import GAN, build
from gencore.models.gan import (
    discriminator_loss_from_scores,
    generator_loss_from_scores,
    gradient_penalty,
    r1_penalty,
)
from gencore.metrics import collapsed_8gaussians, eight_gaussians_modes
from gencore.train import CheckpointError, fit, load_checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")


def softplus(v):
    return math.log1p(math.exp(v))


REAL = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
FAKE = torch.tensor([-0.5, 2.5], dtype=torch.float64)


def test_loss_formulas_against_hand_computed_values():
    # non-saturating: -log sigmoid(r) - log(1 - sigmoid(s)) = softplus(-r) + softplus(s)
    want = (softplus(-2) + softplus(1) + softplus(-0.5)) / 3 + (softplus(-0.5) + softplus(2.5)) / 2
    assert discriminator_loss_from_scores(REAL, FAKE, "non_saturating").item() == pytest.approx(want, rel=1e-12)
    assert generator_loss_from_scores(FAKE, "non_saturating").item() == pytest.approx(
        (softplus(0.5) + softplus(-2.5)) / 2, rel=1e-12)
    # hinge: mean relu(1 - r) = (0 + 2 + 0.5) / 3, mean relu(1 + s) = (0.5 + 3.5) / 2
    assert discriminator_loss_from_scores(REAL, FAKE, "hinge").item() == pytest.approx(2.5 / 3 + 2.0, rel=1e-12)
    # Wasserstein: E_q f - E_p f = 1.0 - 0.5; the generator maximises E_q f
    assert discriminator_loss_from_scores(REAL, FAKE, "wasserstein_gp").item() == pytest.approx(0.5, rel=1e-12)
    for kind in ("hinge", "wasserstein_gp"):
        assert generator_loss_from_scores(FAKE, kind).item() == pytest.approx(-1.0, rel=1e-12)
    # The non-saturating discriminator loss is the two binary cross-entropies.
    bce = (nn.functional.binary_cross_entropy_with_logits(REAL, torch.ones(3, dtype=torch.float64))
           + nn.functional.binary_cross_entropy_with_logits(FAKE, torch.zeros(2, dtype=torch.float64)))
    assert discriminator_loss_from_scores(REAL, FAKE).item() == pytest.approx(bce.item(), rel=1e-12)


class ConstantGenerator(nn.Module):
    """G(z) = b for every z: every fake scores the same under a linear critic."""

    def __init__(self, b):
        super().__init__()
        self.b = nn.Parameter(torch.as_tensor(b, dtype=torch.float64))
        self.latent_dim, self.event_shape = 3, (2,)

    def forward(self, z, c=None):
        return self.b.expand(len(z), -1) + 0 * z[:, :1]


class SumCritic(nn.Module):
    """f(x) = w . x with w = (1, 1): input gradient (1, 1), norm sqrt(2), for every x."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, dtype=torch.float64))

    def forward(self, x, c=None):
        return x @ self.w


@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "wasserstein_gp"])
def test_model_losses_wire_the_formulas(loss):
    gan = GAN(ConstantGenerator([1.0, 1.5]), SumCritic(), loss=loss, gp_weight=10.0, r1_weight=0.5)
    x = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.5, 0.0]], dtype=torch.float64)  # scores 2, -1, 0.5 = REAL
    fake = torch.full((3,), 2.5, dtype=torch.float64)
    want = discriminator_loss_from_scores(REAL, fake, loss).item()
    if loss == "wasserstein_gp":
        want += 10.0 * (math.sqrt(2) - 1) ** 2
    want += 0.5 / 2 * 2.0  # R1: r1_weight / 2 * ||(1, 1)||^2
    assert gan.discriminator_loss(x).item() == pytest.approx(want, rel=1e-12)
    assert gan.generator_loss(4).item() == pytest.approx(generator_loss_from_scores(fake, loss).item(), rel=1e-12)
    assert gan.loss(x).item() == pytest.approx(0.5 - 2.5, rel=1e-12)  # the IPM estimate E_p f - E_q f


def small_critic(d, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 1)).double()


def test_gradient_penalty_is_per_sample_and_matches_a_loop():
    net = small_critic(16)

    def critic(x, c=None):
        return net(x)[:, 0]

    g = torch.Generator().manual_seed(0)
    real = torch.randn(7, 1, 4, 4, generator=g, dtype=torch.float64)
    fake = torch.randn(7, 1, 4, 4, generator=g, dtype=torch.float64) * 2
    alpha = torch.rand(7, generator=g, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, alpha=alpha)
    terms = []
    for i in range(7):
        xi = (alpha[i] * real[i] + (1 - alpha[i]) * fake[i])[None].requires_grad_(True)
        (gi,) = torch.autograd.grad(critic(xi).sum(), xi, create_graph=True)
        terms.append((gi.flatten().norm() - 1) ** 2)
    loop = torch.stack(terms).mean()
    assert gp.item() == pytest.approx(loop.item(), rel=1e-9)
    # Same gradient for the critic's parameters (the penalty trains the critic: double backward).
    weights = [net[1].weight, net[1].bias, net[3].weight]  # the last bias does not move the input gradient
    g1 = torch.autograd.grad(gp, weights)
    g2 = torch.autograd.grad(loop, weights)
    for a, b in zip(g1, g2):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)
    # Not the penalty on the norm of the whole batch's gradient.
    x_hat = (alpha.view(-1, 1, 1, 1) * real + (1 - alpha.view(-1, 1, 1, 1)) * fake).requires_grad_(True)
    (gb,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    assert abs(gp.item() - ((gb.norm() - 1) ** 2).item()) > 0.1
    # Default alpha ~ U[0, 1) from the generator: reproducible.
    a = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    b = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    assert a.item() == b.item()


def test_r1_penalty_matches_a_loop():
    net = small_critic(5, seed=1)

    def critic(x, c=None):
        return net(x)[:, 0]

    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loop = []
    for i in range(6):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(critic(xi).sum(), xi)
        loop.append(gi.pow(2).sum())
    assert r1_penalty(critic, x).item() == pytest.approx(torch.stack(loop).mean().item(), rel=1e-9)


def test_train_step_makes_n_critic_discriminator_updates_per_generator_update():
    torch.manual_seed(0)
    gan = GAN(features=2, latent_dim=4, hidden=[16], loss="wasserstein_gp", n_critic=3)
    opts = gan.configure_optimizers(1e-3)
    assert opts["discriminator"].defaults["betas"] == (0.5, 0.9)
    x = torch.randn(32, 2)
    g_before = [p.detach().clone() for p in gan.generator.parameters()]
    for step in range(1, 5):
        stats = gan.train_step(x, opts, step)
    assert set(stats) == {"loss_d", "loss_g", "ipm", "gp"} and all(math.isfinite(v) for v in stats.values())
    d_steps = {int(st["step"]) for st in opts["discriminator"].state.values()}
    g_steps = {int(st["step"]) for st in opts["generator"].state.values()}
    assert d_steps == {12} and g_steps == {4}
    assert any(not torch.equal(a, b) for a, b in zip(g_before, gan.generator.parameters()))
    # The generator's step leaves the critic's gradient flags as they were.
    assert all(p.requires_grad for p in gan.discriminator.parameters())


def test_ema_generator_update_and_sampling():
    torch.manual_seed(0)
    gan = GAN(features=2, latent_dim=4, hidden=[16], ema_decay=0.9)
    opts = gan.configure_optimizers(1e-2)
    x = torch.randn(32, 2)
    gan.train_step(x, opts, 1)
    ema_1 = [p.detach().clone() for p in gan.generator_ema.parameters()]
    gen_1 = [p.detach().clone() for p in gan.generator.parameters()]
    gan.train_step(x, opts, 2)
    d = min(0.9, 2 / 11)  # the warm-up decay at the second update
    for e1, e2, g2 in zip(ema_1, gan.generator_ema.parameters(), gan.generator.parameters()):
        torch.testing.assert_close(e2, d * e1 + (1 - d) * g2, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(gen_1, gan.generator_ema.parameters()))
    assert not any(p.requires_grad for p in gan.generator_ema.parameters())
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    s = gan.sample(5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(s, gan.generate(z, use_ema=True))
    assert not torch.allclose(s, gan.sample(5, generator=torch.Generator().manual_seed(3), use_ema=False))


@pytest.mark.parametrize("features", [8, [1, 8, 8]])
def test_spectral_norm_makes_every_critic_layer_1_lipschitz(features):
    torch.manual_seed(0)
    gan = GAN(features=features, hidden=16 if isinstance(features, list) else [32, 32], spectral_norm=True)
    shape = (64, *features) if isinstance(features, list) else (64, features)
    gan.train()
    for _ in range(30):  # power iterations, one per forward in training mode
        gan.critic(torch.randn(*shape))
    layers = [m for m in gan.discriminator.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(layers) >= 3
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.02)


def gaussians(n=2048):
    return load_dataset("8gaussians", "train", n=n)[0]


def small_gan(**kw):
    torch.manual_seed(1)
    kw = {"features": 2, "latent_dim": 4, "hidden": [32, 32], "loss": "wasserstein_gp", "n_critic": 2, **kw}
    return GAN(**kw)


def state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_determinism_under_a_seed():
    x = gaussians(512)
    a = fit(small_gan(), x, steps=15, batch_size=64, seed=3, progress=False).model
    b = fit(small_gan(), x, steps=15, batch_size=64, seed=3, progress=False).model
    c = fit(small_gan(), x, steps=15, batch_size=64, seed=4, progress=False).model
    sa, sb, sc = state(a), state(b), state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(a.sample(10, generator=g), b.sample(10, generator=torch.Generator().manual_seed(0)))


def test_resume_with_two_optimizers_is_exact(tmp_path):
    x, xe = gaussians(512), load_dataset("8gaussians", "test", n=256)[0]
    kw = dict(steps=24, batch_size=64, lr=1e-3, seed=5, eval_data=xe, eval_every=6, progress=False)
    make = lambda: small_gan(spectral_norm=True, ema_decay=0.9, r1_weight=0.1)  # noqa: E731
    full = fit(make(), x, **kw)
    ckpt = tmp_path / "run"
    fit(make(), x, **{**kw, "steps": 12}, checkpoint_dir=ckpt)
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    assert meta["step"] == 12 and set(meta["optimizers"]) == {"discriminator", "generator"}
    resumed = fit(make(), x, **kw, checkpoint_dir=ckpt)
    sf, sr = state(full.model), state(resumed.model)
    assert sf.keys() == sr.keys() and all(torch.equal(sf[k], sr[k]) for k in sf), \
        [k for k in sf if not torch.equal(sf[k], sr[k])]
    # History: the IPM estimate per evaluation, identical on both paths.
    assert [h["step"] for h in resumed.history] == [6, 12, 18, 24]
    for h, hf in zip(resumed.history, full.history):
        assert {"train_loss_d", "train_loss_g", "train_ipm", "train_gp", "train_r1", "eval_loss"} <= set(h)
        assert h["eval_loss"] == hf["eval_loss"] and h["train_ipm"] == hf["train_ipm"]


def test_cosine_schedule_scales_each_players_learning_rate(tmp_path):
    fit(small_gan(lr_ratio=3.0), gaussians(256), steps=8, batch_size=32, lr=1e-3, schedule="cosine",
        progress=False, checkpoint_dir=tmp_path)
    groups = json.loads((tmp_path / "checkpoint.json").read_text())["optimizers"]
    factor = 0.5 * (1 + math.cos(math.pi * 7 / 8))  # the rate of the last step
    assert groups["generator"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * factor, rel=1e-12)
    assert groups["discriminator"]["param_groups"][0]["lr"] == pytest.approx(3e-3 * factor, rel=1e-12)


def test_evaluation_does_not_change_the_training_run():
    x, xe = gaussians(512), load_dataset("8gaussians", "test", n=128)[0]
    a = fit(small_gan(), x, steps=12, batch_size=64, seed=2, progress=False, eval_data=xe, eval_every=3)
    b = fit(small_gan(), x, steps=12, batch_size=64, seed=2, progress=False)
    sa, sb = state(a.model), state(b.model)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_rebuilds_the_gan_from_config(tmp_path):
    gan = small_gan(n_classes=3, ema_decay=0.5, spectral_norm=True)
    x, y = gaussians(256), torch.arange(256) % 3
    fit(gan, (x, y), steps=4, batch_size=32, progress=False, checkpoint_dir=tmp_path)
    loaded, meta = load_checkpoint(tmp_path)
    assert isinstance(loaded, GAN) and meta["model"] == "gan" and meta["config"]["n_classes"] == 3
    json.dumps(meta["config"])
    labels = torch.tensor([0, 1, 2, 2])
    torch.testing.assert_close(loaded.sample(4, labels=labels, generator=torch.Generator().manual_seed(1)),
                               gan.sample(4, labels=labels, generator=torch.Generator().manual_seed(1)),
                               rtol=0, atol=0)
    loaded.eval()
    gan.eval()
    torch.testing.assert_close(loaded.critic(x[:8], y[:8]), gan.critic(x[:8], y[:8]), rtol=0, atol=0)
    # Custom networks: the config says so; loading needs the model.
    custom = GAN(ConstantGenerator([0.0, 0.0]), SumCritic())
    assert custom.config["networks"] == "custom"
    with pytest.raises(ValueError, match="custom networks"):
        build("gan", custom.config)
    fit(custom, gaussians(64).double(), steps=2, batch_size=32, progress=False, checkpoint_dir=tmp_path / "c")
    again = GAN(ConstantGenerator([5.0, 5.0]), SumCritic())
    load_checkpoint(tmp_path / "c", again)
    assert torch.equal(again.generator.b, custom.generator.b)
    with pytest.raises(CheckpointError, match="holds optimizers"):
        load_checkpoint(tmp_path / "c", again, optimizer={"only": torch.optim.SGD(again.parameters(), lr=0.1)})


class TestBadInputs:
    def test_hyper_parameters(self):
        for kw, name in ((dict(gp_weight=float("nan")), "gp_weight"), (dict(n_critic=0), "n_critic"),
                         (dict(loss="minimax"), "loss"), (dict(ema_decay=1.0), "ema_decay"),
                         (dict(r1_weight=-1.0), "r1_weight"), (dict(latent_dim=0), "latent_dim"),
                         (dict(betas=(0.5, 1.5)), "betas"), (dict(lr_ratio=0.0), "lr_ratio"),
                         (dict(arch="conv"), "arch='conv'"), (dict(hidden=[0]), "hidden"),
                         (dict(n_classes=-1), "n_classes"), (dict(features=[1, 8]), "features")):
            with pytest.raises(ValueError, match=name):
                GAN(**{"features": 2, **kw})
        with pytest.raises(ValueError, match="features"):
            GAN()
        for kw, name in ((dict(n_critic=True), "n_critic"), (dict(gp_weight=True), "gp_weight"),
                         (dict(latent_dim=True), "latent_dim"), (dict(n_classes=False), "n_classes")):
            with pytest.raises(TypeError, match=f"GAN: {name} must be an? (int|real number), got bool"):
                GAN(**{"features": 2, **kw})
        with pytest.raises(TypeError, match="n must be an int, got bool"):
            small_gan().sample(True)
        with pytest.raises(ValueError, match="both generator and discriminator"):
            GAN(ConstantGenerator([0.0, 0.0]))
        with pytest.raises(ValueError, match="loss must be one of"):
            discriminator_loss_from_scores(REAL, FAKE, "wgan")

    def test_data(self):
        gan = small_gan()
        with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
            gan.loss(torch.randn(8, 3))
        with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
            gan.discriminator_loss(torch.randn(8))
        with pytest.raises(ValueError, match="empty batch"):
            gan.discriminator_loss(torch.randn(0, 2))
        with pytest.raises(ValueError, match="empty batch"):
            gan.loss(())
        with pytest.raises(ValueError, match="n must be a positive int"):
            gan.sample(0)
        with pytest.raises(ValueError, match="unconditional; labels must be None"):
            gan.sample(3, labels=torch.zeros(3, dtype=torch.long))
        with pytest.raises(ValueError, match="z must have shape"):
            gan.generate(torch.randn(3, 5))
        with pytest.raises(ValueError, match="real and fake must have the same shape"):
            gradient_penalty(gan.discriminator, torch.randn(4, 2), torch.randn(3, 2))

    def test_labels(self):
        gan = small_gan(n_classes=3)
        x = torch.randn(4, 2)
        with pytest.raises(ValueError, match="class-conditional: pass labels"):
            gan.loss(x)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            gan.loss((x, torch.tensor([0, 1, 2, 3])))
        with pytest.raises(ValueError, match="labels must be integers of shape"):
            gan.sample(2, labels=torch.tensor([0.0, 1.0]))
        with pytest.raises(ValueError, match="labels must be integers of shape"):
            gan.sample(2, labels=torch.tensor([0, 1, 2]))

    def test_fit_reports_a_diverging_game(self):
        critic = SumCritic()
        with torch.no_grad():
            critic.w.fill_(float("inf"))
        gan = GAN(ConstantGenerator([0.0, 0.0]), critic, loss="wasserstein_gp", gp_weight=0.0)
        with pytest.raises(FloatingPointError, match="loss_d became nan at step 1"):
            fit(gan, gaussians(64).double(), steps=1, batch_size=32, progress=False)


def test_short_run_learns_8gaussians():
    """A non-saturating GAN trained for about two seconds covers all 8 modes with mostly
    high-quality samples; its MMD^2 to held-out data is far below that of a generator
    collapsed onto one mode (the lecture's degenerate generator) and of the untrained one."""
    x = gaussians(4096)
    xe = load_dataset("8gaussians", "test", n=2000)[0]
    torch.manual_seed(0)
    gan = GAN(features=2, latent_dim=8, hidden=[128, 128], loss="non_saturating")
    untrained = gan.sample(2000, generator=torch.Generator().manual_seed(0))
    res = fit(gan, x, steps=800, batch_size=128, lr=1e-3, seed=0, eval_data=xe[:500], eval_every=200,
              progress=False)
    s = gan.sample(2000, generator=torch.Generator().manual_seed(0))
    cov = eight_gaussians_modes(s)
    h = metrics.median_bandwidth(xe[:1000], xe[1000:]).item()
    mmd_gan = metrics.mmd(s, xe, bandwidth=h).item()
    mmd_collapsed = metrics.mmd(collapsed_8gaussians(2000, torch.Generator().manual_seed(0)), xe, bandwidth=h).item()
    mmd_untrained = metrics.mmd(untrained, xe, bandwidth=h).item()
    # measured: 8 modes, 94% within 3 std, MMD^2 0.0045 (collapsed: 0.34, untrained: 0.088)
    assert cov["modes_covered"] == 8 and min(cov["mode_fractions"]) > 0.05
    assert cov["high_quality_fraction"] > 0.8
    assert mmd_gan < mmd_collapsed / 20 and mmd_gan < mmd_untrained / 5
    assert [h["step"] for h in res.history] == [200, 400, 600, 800]
    assert all(math.isfinite(h["eval_loss"]) for h in res.history)
    # The critic's IPM estimate on training batches falls as the generator approaches the data.
    assert res.history[-1]["train_ipm"] < 0.5 * res.history[0]["train_ipm"]


def test_short_run_learns_class_conditional_digits():
    """A conditional WGAN-GP on digits for a few seconds: its samples are recognised as their
    class, score well above noise, train a classifier that works on real digits, and are not
    copies of the training set."""
    levels, y = load_dataset("digits", "train", dequantized=False)
    x_tr, _ = load_dataset("digits", "train")
    x_te, y_te = load_dataset("digits", "test")
    torch.manual_seed(0)
    gan = GAN(features=64, latent_dim=32, hidden=[256, 256], n_classes=10, output="sigmoid",
              loss="wasserstein_gp", n_critic=5)

    def fresh(batch, g):
        return (dequantize(batch[0], g), batch[1])

    res = fit(gan, (levels, y), steps=300, batch_size=128, lr=1e-3, progress=False, batch_transform=fresh,
              eval_data=(x_te, y_te), eval_every=100)
    labels = torch.arange(500) % 10
    s = gan.sample(500, labels=labels, generator=torch.Generator().manual_seed(0))
    assert s.shape == (500, 64) and s.min() >= 0 and s.max() <= 1
    clf = metrics.digits_classifier()  # trained on first use: not under no_grad
    with torch.no_grad():
        agree = (clf(s).argmax(1) == labels).float().mean().item()
    is_mean = metrics.digits_inception_score(s)[0].item()
    tstr = metrics.classification_accuracy_score(s, labels, x_te, y_te, steps=300)
    mem = metrics.memorization_report(s, x_tr, x_te)
    # measured: 89% recognised, inception-style score 8.8, TSTR 0.87, no near copies
    assert agree > 0.6 and is_mean > 6.0 and tstr > 0.6, (agree, is_mean, tstr)
    assert mem["near_copy_fraction"] < 0.05 and mem["nn_ratio"] > 1.0
    ipm = [h["train_ipm"] for h in res.history]
    assert ipm[-1] < ipm[0], ipm
