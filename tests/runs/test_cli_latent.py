"""`gencore train / eval / sample` for pca, ae and vae on digits."""

import json

import pytest

from gencore import cli


def run(*argv):
    return cli.main([str(a) for a in argv])


def test_pca_ae_vae_train_eval_sample(tmp_path, capsys):
    for model, steps in (("pca", None), ("ae", 500), ("vae", 150)):
        out = tmp_path / model
        assert run("train", model, "--data", "digits", *(["--steps", steps] if steps else []), "--out", out,
                   "--latent-dim", 8, "--no-progress") == 0
        assert run("eval", out) == 0
        res = json.loads((out / "eval.json").read_text())
        assert run("sample", out, "-n", 20, "--out", tmp_path / f"{model}.png") == 0
        assert (tmp_path / f"{model}.png").read_bytes()[:4] == b"\x89PNG"
        if model == "pca":
            pca = res
            assert res["n_components"] == 8 and res["bits_per_dim"] < 3.8  # measured 3.70; uniform 4.09
        elif model == "ae":
            assert res["reconstruction_error"] < 1.3 * res["pca_reconstruction_error"]
            assert res["pca_reconstruction_error"] == pytest.approx(pca["reconstruction_error"], rel=0.05)
        else:
            assert res["test_nll_nats"] <= -res["elbo_nats"] + 1.0  # IW bound at least the ELBO (up to noise)
            assert res["bits_per_dim"] < 4.0 and res["rate_nats"] > 0


def test_conditional_vae_and_errors(tmp_path):
    out = tmp_path / "cvae"
    assert run("train", "vae", "--data", "digits", "--steps", 50, "--out", out, "--conditional", "--no-progress") == 0
    assert run("sample", out, "-n", 20, "--out", tmp_path / "c.png") == 0
    assert run("train", "vae", "--data", "digits", "--steps", 5, "--out", tmp_path / "x", "--gp-weight", 1) == 2
    assert run("train", "pca", "--data", "8gaussians", "--out", tmp_path / "y") == 2
    assert run("train", "pca", "--data", "digits", "--steps", 1, "--out", tmp_path / "z") == 2  # closed form
    assert not (tmp_path / "z").exists()


def test_hvae_train_eval_sample_and_option_errors(tmp_path):
    out = tmp_path / "hvae"
    assert run("train", "hvae", "--data", "digits", "--steps", 150, "--out", out, "--latent-dims", "12,6,3",
               "--no-progress") == 0
    assert run("eval", out) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["latent_dims"] == [12, 6, 3] and len(res["kl_per_layer_nats"]) == 3 and len(res["active_units"]) == 3
    assert all(0 <= a <= d for a, d in zip(res["active_units"], (12, 6, 3)))
    assert res["rate_nats"] == pytest.approx(sum(res["kl_per_layer_nats"]), rel=0.5)  # two draws of the same KL
    assert res["test_nll_nats"] <= -res["elbo_nats"] + 1.0 and res["bits_per_dim"] < 4.0
    assert run("sample", out, "-n", 16, "--out", tmp_path / "h.png") == 0
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    # options that do not apply, bad sizes, data it does not take: exit code 2, nothing written
    assert run("train", "hvae", "--data", "digits", "--steps", 5, "--out", tmp_path / "a", "--conditional") == 2
    assert run("train", "vae", "--data", "digits", "--steps", 5, "--out", tmp_path / "b", "--latent-dims", "4,2") == 2
    assert run("train", "hvae", "--data", "digits", "--steps", 5, "--out", tmp_path / "c", "--latent-dims", "4,0") == 2
    assert run("train", "hvae", "--data", "8gaussians", "--steps", 5, "--out", tmp_path / "d") == 2
    assert not any((tmp_path / n).exists() for n in "abcd")
