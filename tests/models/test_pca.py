"""PCA: agreement with scikit-learn on digits, the linear auto-encoder view, the
probabilistic-PCA likelihood, dtypes, checkpoints, errors."""

import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from gencore.data import load_dataset
from gencore.models import PCA, build, model_name
from gencore.train import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def digits():
    """Dequantized digits (values in [0, 1)), float64: train (1347, 64), test (450, 64)."""
    x, _ = load_dataset("digits", "train", dtype=torch.float64)
    xt, _ = load_dataset("digits", "test", dtype=torch.float64)
    return x, xt


pytestmark = pytest.mark.usefixtures("one_thread")


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a / b - 1)))


# Measured on digits (float64): components 5e-13, ratios 9e-14, score_samples 1e-11 (max rel.).
@pytest.mark.parametrize("solver", ["full", "auto"])
@pytest.mark.parametrize("n_components", [2, 8, 0.9, None])
def test_matches_sklearn_on_digits(digits, n_components, solver):
    x, xt = digits
    sk = SkPCA(n_components, svd_solver=solver).fit(x.numpy())
    pca = PCA(n_components).fit(x)
    assert pca.n_components_ == sk.n_components_ and pca.n_features_in_ == 64
    assert int(pca.n_samples_) == sk.n_samples_ == 1347
    # the sign convention agrees too, so components match without flipping
    np.testing.assert_allclose(pca.components_.numpy(), sk.components_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(pca.mean_.numpy(), sk.mean_, rtol=0, atol=1e-12)
    assert rel(pca.explained_variance_ratio_, sk.explained_variance_ratio_) <= 1e-6
    assert rel(pca.explained_variance_, sk.explained_variance_) <= 1e-6
    assert rel(pca.singular_values_, sk.singular_values_) <= 1e-6
    if n_components is None:
        assert float(pca.noise_variance_) == sk.noise_variance_ == 0.0
    else:
        assert rel(float(pca.noise_variance_), sk.noise_variance_) <= 1e-6
    assert rel(pca.score_samples(xt), sk.score_samples(xt.numpy())) <= 1e-6
    assert pca.score(xt) == pytest.approx(sk.score(xt.numpy()), rel=1e-6)
    np.testing.assert_allclose(pca.transform(xt).numpy(), sk.transform(xt.numpy()), rtol=0, atol=1e-8)
    z = pca.transform(xt)
    np.testing.assert_allclose(pca.inverse_transform(z).numpy(), sk.inverse_transform(z.numpy()),
                               rtol=0, atol=1e-8)


def test_float_n_components_selects_like_sklearn(digits):
    x, _ = digits
    ratios = PCA().fit(x).explained_variance_ratio_.cumsum(0)
    for frac in (0.05, 0.5, 0.95, 0.999):
        pca = PCA(frac).fit(x)
        assert pca.n_components_ == SkPCA(frac, svd_solver="full").fit(x.numpy()).n_components_
        k = pca.n_components_
        assert ratios[k - 1] > frac and (k == 1 or ratios[k - 2] <= frac)


def test_whiten(digits):
    x, xt = digits
    sk = SkPCA(8, whiten=True, svd_solver="full").fit(x.numpy())
    pca = PCA(8, whiten=True)
    z_fit = pca.fit_transform(x)
    np.testing.assert_allclose(z_fit.numpy(), sk.fit_transform(x.numpy()), rtol=0, atol=1e-8)
    torch.testing.assert_close(z_fit.var(0), torch.ones(8, dtype=torch.float64))  # unit variance (ddof=1)
    z = pca.transform(xt)
    np.testing.assert_allclose(z.numpy(), sk.transform(xt.numpy()), rtol=0, atol=1e-8)
    np.testing.assert_allclose(pca.inverse_transform(z).numpy(), sk.inverse_transform(z.numpy()),
                               rtol=0, atol=1e-8)
    # Whitening rescales the code, not the model: reconstruction and likelihood are those of
    # the unwhitened PCA (scikit-learn's whitened score_samples differs, issue #13898).
    plain = PCA(8).fit(x)
    torch.testing.assert_close(pca.reconstruct(xt), plain.reconstruct(xt))
    torch.testing.assert_close(pca.score_samples(xt), plain.score_samples(xt), rtol=1e-12, atol=0)


def test_likelihood_is_the_gaussian_of_get_covariance(digits):
    x, xt = digits
    pca = PCA(8).fit(x)
    sk = SkPCA(8, svd_solver="full").fit(x.numpy())
    cov, prec = pca.get_covariance(), pca.get_precision()
    np.testing.assert_allclose(cov.numpy(), sk.get_covariance(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(prec.numpy(), sk.get_precision(), rtol=1e-8, atol=1e-6)
    torch.testing.assert_close(prec @ cov, torch.eye(64, dtype=torch.float64), rtol=0, atol=1e-9)
    want = torch.distributions.MultivariateNormal(pca.mean_, cov).log_prob(xt)
    torch.testing.assert_close(pca.score_samples(xt), want, rtol=1e-10, atol=0)
    torch.testing.assert_close(pca.log_prob(xt), want, rtol=1e-10, atol=0)
    assert pca.loss(xt).item() == pytest.approx(-pca.score(xt), rel=1e-12)
    assert pca.loss((xt, torch.zeros(len(xt)))).item() == pytest.approx(-pca.score(xt), rel=1e-12)


def test_pca_is_the_best_linear_autoencoder(digits):
    """Eckart-Young: the training reconstruction error is (n-1)/n times the discarded variance,
    and it falls with r; encode/decode are transform/inverse_transform."""
    x, xt = digits
    full = PCA().fit(x)
    n = x.shape[0]
    errors = []
    for r in (2, 4, 8, 16, 32):
        pca = PCA(r).fit(x)
        err = pca.reconstruction_error(x)
        assert err.shape == (n,)
        want = (n - 1) / n * full.explained_variance_[r:].sum().item()
        assert err.mean().item() == pytest.approx(want, rel=1e-10)
        torch.testing.assert_close(err, (x - pca.decode(pca.encode(x))).square().sum(1))
        torch.testing.assert_close(pca(xt), pca.transform(xt))
        errors.append(pca.reconstruction_error(xt).mean().item())
    assert all(a > b for a, b in zip(errors, errors[1:]))


def test_float32_and_numpy_inputs(digits):
    x, xt = digits
    x32, xt32 = x.float(), xt.float()
    pca = PCA(8).fit(x32)
    # the float32 values, fitted in float64, give scikit-learn's float64 answer
    sk = SkPCA(8, svd_solver="full").fit(x32.double().numpy())
    np.testing.assert_allclose(pca.components_.numpy(), sk.components_, rtol=0, atol=1e-5)
    assert rel(pca.explained_variance_ratio_, sk.explained_variance_ratio_) <= 1e-6
    for out in (pca.transform(xt32), pca.inverse_transform(pca.transform(xt32)), pca.score_samples(xt32),
                pca.reconstruction_error(xt32), pca.fit_transform(x32)):
        assert out.dtype == torch.float32
    assert rel(pca.score_samples(xt32), sk.score_samples(xt32.double().numpy())) <= 1e-6
    assert pca.components_.dtype == torch.float64
    # numpy in, numpy out (dtype kept; integer data computes and returns float64)
    z = pca.transform(xt32.numpy())
    assert isinstance(z, np.ndarray) and z.dtype == np.float32
    np.testing.assert_allclose(z, pca.transform(xt32).numpy(), rtol=0, atol=0)
    levels, _ = load_dataset("digits", "train", dtype=torch.float64, dequantized=False)
    zi = PCA(4).fit_transform(levels.numpy().astype(np.int64))
    assert zi.dtype == np.float64
    np.testing.assert_allclose(zi, SkPCA(4, svd_solver="full").fit_transform(levels.numpy()), rtol=0, atol=1e-8)


def test_checkpoint_round_trip(digits, tmp_path):
    x, xt = digits
    pca = PCA(0.8, whiten=True).fit(x.float())
    save_checkpoint(tmp_path / "pca", pca)
    loaded, meta = load_checkpoint(tmp_path / "pca")
    assert isinstance(loaded, PCA) and meta["model"] == "pca"
    assert meta["config"] == {"n_components": 0.8, "whiten": True, "svd_solver": "auto"}
    assert loaded.n_components_ == pca.n_components_
    for name in ("mean_", "components_", "explained_variance_", "explained_variance_ratio_", "singular_values_",
                 "noise_variance_", "n_samples_"):
        assert torch.equal(getattr(loaded, name), getattr(pca, name)), name
    assert torch.equal(loaded.transform(xt), pca.transform(xt))
    assert torch.equal(loaded.score_samples(xt), pca.score_samples(xt))
    # into an explicit fresh model, and into one fitted with another shape
    fresh, _ = load_checkpoint(tmp_path / "pca", PCA(**meta["config"]))
    other, _ = load_checkpoint(tmp_path / "pca", PCA(3).fit(x[:, :10]))
    assert torch.equal(fresh.transform(xt), pca.transform(xt)) and other.n_features_in_ == 64
    # an unfitted PCA round-trips as unfitted
    save_checkpoint(tmp_path / "unfitted", PCA(5))
    empty, _ = load_checkpoint(tmp_path / "unfitted")
    assert not empty.fitted and empty.n_components == 5
    assert isinstance(build("pca", {"n_components": 3}), PCA) and model_name(pca) == "pca"


def test_bad_inputs(digits):
    x, xt = digits
    with pytest.raises(ValueError, match="not fitted"):
        PCA(2).transform(xt)
    with pytest.raises(ValueError, match="not fitted"):
        PCA(2).score_samples(xt)
    # the constructor only stores its arguments (scikit-learn convention); fit validates them
    for bad in (0, -1, 1.0, 1.5, 0.0, True, "mle", "two", float("nan"), [2]):
        unfitted = PCA(bad)
        assert unfitted.n_components is bad
        with pytest.raises(ValueError, match="PCA: .*n_components"):
            unfitted.fit(x)
    with pytest.raises(ValueError, match="n_components=65 must be <= min"):
        PCA(65).fit(x)
    with pytest.raises(ValueError, match="n_components=5 must be <= min"):
        PCA(5).fit(x[:4])
    with pytest.raises(TypeError, match="whiten must be a bool, got 1"):
        PCA(2, whiten=1).fit(x)
    pca = PCA(8).fit(x)
    with pytest.raises(ValueError, match="X has 63 features, but PCA is expecting 64 features as input"):
        pca.transform(xt[:, :63])
    with pytest.raises(ValueError, match=r"X has 7 features, but PCA is expecting 8 features as input \(the latent"):
        pca.inverse_transform(torch.zeros(2, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        pca.transform(xt[:0])
    with pytest.raises(ValueError, match="empty"):
        PCA(2).fit(x[:0])
    with pytest.raises(ValueError, match="at least 2 samples"):
        PCA(1).fit(x[:1])
    for v in (float("nan"), float("inf")):
        bad = xt.clone()
        bad[3, 5] = v
        with pytest.raises(ValueError, match="NaN or infinite"):
            pca.score_samples(bad)
        with pytest.raises(ValueError, match="NaN or infinite"):
            PCA(2).fit(bad)
    with pytest.raises(ValueError, match="2-D.*flatten"):
        pca.transform(xt.reshape(-1, 1, 8, 8))
    # array-likes other than tensors go through np.asarray and come back as numpy
    np.testing.assert_array_equal(pca.transform(xt[:3].tolist()), pca.transform(xt[:3]).numpy())
    with pytest.raises(TypeError, match="X must hold real numbers: float.. argument must be"):
        pca.transform(np.array([[{}] * 64], dtype=object))
    with pytest.raises(ValueError, match=r"X must be 2-D \(n_samples, n_features\), got shape \(\)"):
        pca.transform(None)
    with pytest.raises(ValueError, match="X must hold real numbers, got dtype <U"):
        pca.transform([["a"] * 64])
    with pytest.raises(ValueError, match="singular"):  # r = D: sigma^2 = 0, and a zero-variance axis
        PCA().fit(torch.cat([x[:, :5], torch.zeros(len(x), 1, dtype=x.dtype)], 1)).score_samples(xt[:, :6])


@pytest.mark.cuda
def test_cuda_matches_cpu(digits):
    x, xt = digits
    cpu = PCA(8).fit(x)
    gpu = PCA(8).fit(x.cuda())
    assert gpu.components_.is_cuda
    torch.testing.assert_close(gpu.components_.cpu(), cpu.components_, rtol=0, atol=1e-10)
    z = gpu.transform(xt.float().cuda())
    assert z.is_cuda and z.dtype == torch.float32
    torch.testing.assert_close(z.cpu(), cpu.transform(xt.float()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gpu.score_samples(xt.cuda()).cpu(), cpu.score_samples(xt), rtol=1e-10, atol=0)
    assert math.isclose(cpu.score(xt.cuda()), cpu.score(xt), rel_tol=1e-12)  # CPU-fitted model, CUDA data
