"""2-D toy datasets and their exact densities."""

import math

import pytest
import torch

from gencore.data import TOYS, load_dataset, toy_entropy, toy_log_prob


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_exact_density_integrates_to_one(name):
    g = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="ij")
    p = toy_log_prob(name, torch.stack([gx.flatten(), gy.flatten()], 1)).exp()
    assert (p.sum() * (g[1] - g[0]) ** 2).item() == pytest.approx(1.0, abs=5e-3)


def test_samples_lie_on_the_density_and_entropy_matches():
    for name in ("8gaussians", "checkerboard"):
        x, y = load_dataset(name, "test")
        assert y is None and x.shape == (5000, 2)
        lp = toy_log_prob(name, x.double())
        assert torch.isfinite(lp).all()
        # Monte-Carlo entropy of the test split agrees with the quadrature/closed form.
        assert -lp.mean().item() == pytest.approx(toy_entropy(name), abs=0.03)
    assert toy_entropy("checkerboard") == pytest.approx(math.log(32))


def test_toys_are_seeded():
    for name in TOYS:
        a, _ = load_dataset(name, "train", seed=1, n=100)
        b, _ = load_dataset(name, "train", seed=1, n=100)
        c, _ = load_dataset(name, "train", seed=2, n=100)
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert torch.isfinite(a).all()


def test_digits_as_images():
    x, _ = load_dataset("digits", "test", image=True)
    v, _ = load_dataset("digits", "test")
    assert x.shape == (450, 1, 8, 8) and torch.equal(x.reshape(450, 64), v)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no exact density"):
        toy_log_prob("moons", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        toy_log_prob("8gaussians", torch.zeros(3))
    with pytest.raises(ValueError, match="image=True applies to digits"):
        load_dataset("moons", image=True)
    with pytest.raises(ValueError, match="n applies to the 2-D toys"):
        load_dataset("digits", n=10)
