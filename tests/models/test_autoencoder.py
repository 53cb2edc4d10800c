"""Autoencoder: beats PCA at r = 8 on held-out digits, a linear one converges to PCA,
the conv variant learns, shapes, checkpoints, errors.

Data: digits from ``load_dataset`` (dequantized, values in [0, 1); the train split with its
fixed seed-0 noise, the test split with its fixed test noise), as vectors (B, 64) or images
(B, 1, 8, 8). Reconstruction errors are squared errors summed over the 64 pixels, averaged
over examples, for both the auto-encoders and PCA.
"""

import pytest
import torch

from gencore.data import load_dataset
from gencore.models import PCA, Autoencoder, build, model_name
from gencore.train import fit, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def digits():
    x, _ = load_dataset("digits", "train")
    xt, _ = load_dataset("digits", "test")
    return x, xt




def test_autoencoder_beats_pca_at_r8(digits, one_thread):
    x, xt = digits
    pca_err = PCA(8).fit(x).reconstruction_error(xt).mean().item()  # measured 1.409
    torch.manual_seed(0)
    ae = Autoencoder(64, 8, hidden=(256, 128), activation="relu")
    res = fit(ae, x, steps=1000, batch_size=64, lr=1e-3, schedule="cosine", eval_data=xt, progress=False)
    with torch.no_grad():
        ae_err = ae.reconstruction_error(xt).mean().item()  # measured 0.845
    assert ae_err == pytest.approx(res.history[-1]["eval_loss"], rel=1e-5)
    assert ae_err < 0.75 * pca_err


def test_linear_autoencoder_converges_to_pca(digits, one_thread):
    x, xt = digits
    pca = PCA(8).fit(x)
    torch.manual_seed(0)
    ae = Autoencoder(64, 8, hidden=(), activation=None)
    fit(ae, x, steps=3000, batch_size=256, lr=2e-2, schedule="cosine", progress=False)
    with torch.no_grad():
        train_ae, test_ae = ae.reconstruction_error(x).mean().item(), ae.reconstruction_error(xt).mean().item()
    train_pca, test_pca = pca.reconstruction_error(x).mean().item(), pca.reconstruction_error(xt).mean().item()
    # PCA is the optimal linear auto-encoder on its training data: gradient descent can only
    # approach it from above (measured: 1.3638 vs 1.3632 train, 1.4085 vs 1.4091 held-out).
    assert train_pca * (1 - 1e-5) <= train_ae <= train_pca * 1.01
    assert test_ae == pytest.approx(test_pca, rel=0.02)
    # ... and it finds the same subspace: cosines of the principal angles between the
    # decoder's column space and the top-8 components (measured: min 0.990).
    q, _ = torch.linalg.qr(ae.decoder[0][0].weight.detach().double())
    cosines = torch.linalg.svdvals(pca.components_ @ q)
    assert cosines.min() > 0.95 and cosines.square().mean() > 0.99


def test_conv_autoencoder_learns(digits, one_thread):
    x, xt = digits
    xi, xti = x.reshape(-1, 1, 8, 8), xt.reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    ae = Autoencoder((1, 8, 8), 8, hidden=(32, 64), kind="conv")
    with torch.no_grad():
        initial = ae.loss(xti).item()  # measured 8.5
    res = fit(ae, xi, steps=500, batch_size=64, lr=2e-3, schedule="cosine", eval_data=xti, progress=False)
    final = res.history[-1]["eval_loss"]  # measured 0.92
    assert final < 0.15 * initial
    assert final < PCA(8).fit(x).reconstruction_error(xt).mean().item()


@pytest.mark.parametrize("kind,shape", [("mlp", (64,)), ("mlp", (1, 8, 8)), ("conv", (1, 8, 8)),
                                        ("conv", (3, 8, 12))])
def test_shapes_and_units(kind, shape):
    torch.manual_seed(0)
    ae = Autoencoder(shape[0] if len(shape) == 1 else shape, 5, hidden=(8, 16), kind=kind).eval()
    x = torch.rand(7, *shape)
    z = ae.encode(x)
    assert z.shape == (7, 5)
    assert ae.decode(z).shape == x.shape
    xr = ae.reconstruct(x)
    torch.testing.assert_close(ae(x), xr)
    err = ae.reconstruction_error(x)
    assert err.shape == (7,)
    torch.testing.assert_close(err, (xr - x).square().flatten(1).sum(1))
    torch.testing.assert_close(ae.loss(x), err.mean())
    torch.testing.assert_close(ae.loss((x, torch.zeros(7))), err.mean())


def test_activation_none_is_linear():
    torch.manual_seed(0)
    ae = Autoencoder(6, 2, hidden=(5, 4), activation=None)
    a, b = torch.randn(3, 6), torch.randn(3, 6)
    with torch.no_grad():
        z0 = ae.encode(torch.zeros(1, 6))
        torch.testing.assert_close(ae.encode(a + b) - z0, (ae.encode(a) - z0) + (ae.encode(b) - z0))
    assert ae.config["activation"] == "none"


@pytest.mark.parametrize("kind,features", [("mlp", 64), ("conv", (1, 8, 8))])
def test_checkpoint_round_trip(digits, tmp_path, kind, features, one_thread):
    x, xt = digits
    if kind == "conv":
        x, xt = x.reshape(-1, 1, 8, 8), xt.reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    ae = Autoencoder(features, 4, hidden=(16, 32), kind=kind, activation="gelu")
    fit(ae, x, steps=20, batch_size=64, progress=False, checkpoint_dir=tmp_path / "run")
    loaded, meta = load_checkpoint(tmp_path / "run")
    assert isinstance(loaded, Autoencoder) and meta["model"] == "ae" and meta["step"] == 20
    assert meta["config"] == ae.config
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.reconstruction_error(xt), ae.reconstruction_error(xt))
    save_checkpoint(tmp_path / "plain", ae)
    again, _ = load_checkpoint(tmp_path / "plain", build("ae", ae.config))
    with torch.no_grad():
        assert torch.equal(again.encode(xt), ae.encode(xt))
    assert model_name(ae) == "ae"


def test_bad_inputs():
    ae = Autoencoder(64, 8, hidden=(16,))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 64\), got \(4, 63\)"):
        ae.reconstruct(torch.zeros(4, 63))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 8\)"):
        ae.decode(torch.zeros(4, 7))
    with pytest.raises(ValueError, match="empty batch"):
        ae.loss(torch.zeros(0, 64))
    for v in (float("nan"), float("inf")):
        bad = torch.zeros(4, 64)
        bad[1, 2] = v
        with pytest.raises(ValueError, match="NaN or infinite"):
            ae.loss(bad)
    with pytest.raises(TypeError, match="floating point"):
        ae.encode(torch.zeros(4, 64, dtype=torch.int64))
    for kwargs, match in [
        (dict(features=64, latent_dim=0), "latent_dim"),
        (dict(features=0, latent_dim=2), "features"),
        (dict(features=(8, 8), latent_dim=2), "features"),
        (dict(features=64, latent_dim=2, hidden=(16, 0)), "hidden"),
        (dict(features=64, latent_dim=2, kind="rnn"), "kind"),
        (dict(features=64, latent_dim=2, activation="swish"), "activation"),
        (dict(features=64, latent_dim=2, kind="conv"), "image shape"),
        (dict(features=(1, 6, 6), latent_dim=2, hidden=(4, 8), kind="conv"), "divisible by 4"),
        (dict(features=(1, 8, 8), latent_dim=2, hidden=(), kind="conv"), "at least one"),
    ]:
        with pytest.raises(ValueError, match=match):
            Autoencoder(**kwargs)
    with pytest.raises(TypeError, match="latent_dim must be an int, got bool"):
        Autoencoder(64, True)
    with pytest.raises(TypeError, match="hidden"):
        Autoencoder(64, 2, hidden=(16, True))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    ae = Autoencoder((1, 8, 8), 4, hidden=(8, 16), kind="conv").eval()
    x = torch.rand(5, 1, 8, 8)
    want = ae.reconstruction_error(x)
    got = ae.cuda().reconstruction_error(x.cuda())
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
