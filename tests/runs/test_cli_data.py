"""`gencore train MODEL --data PATH`: your own data on the command line, and the VAE's model
selection on the val split."""

import json
import math
import sys

import numpy as np
import pytest
import torch

from gencore import cli


def run(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture
def blobs(tmp_path):
    """Two Gaussian blobs in 2-D, labelled 0 / 1, as .npy (no labels) and .npz (labels)."""
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    x = (rng.standard_normal((200, 2)) * 0.3 + np.where(y[:, None] == 1, 2.0, -2.0)).astype(np.float32)
    np.save(tmp_path / "blobs.npy", x)
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    return tmp_path


def test_train_eval_sample_realnvp_on_a_npy_file(blobs, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert run("train", "realnvp", "--data", blobs / "blobs.npy", "--steps", 4, "--batch-size", 32,
               "--couplings", 2, "--hidden", "8", "--out", out, "--no-progress") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["steps"] == 4 and res["data"] == str((blobs / "blobs.npy").resolve())
    assert math.isfinite(res["best_val_nll_nats"])
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["config"]["features"] == 2 and meta["extra"]["run"]["data"] == str((blobs / "blobs.npy").resolve())
    assert run("eval", out) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["step"] == 4 and math.isfinite(ev["test_nll_nats"])
    assert run("sample", out, "-n", 50, "--out", tmp_path / "s.png") == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_conditional_gan_on_a_labelled_npz(blobs, tmp_path, capsys, one_thread):
    out = tmp_path / "gan"
    assert run("train", "gan", "--data", blobs / "blobs.npz", "--steps", 2, "--batch-size", 32, "--hidden", "8",
               "--conditional", "--out", out, "--no-progress") == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    assert run("eval", out) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["n"] == 40 and math.isfinite(ev["mmd2_vs_heldout"])  # 20% of 200 held out


def test_data_errors(blobs, tmp_path, capsys):
    assert run("train", "realnvp", "--data", tmp_path / "nope.npy", "--steps", 1, "--out", tmp_path / "a") == 2
    assert "--data" in capsys.readouterr().err and not (tmp_path / "a").exists()
    with pytest.raises(SystemExit) as e:
        run("train", "realnvp", "--data", "mnist", "--steps", 1, "--out", tmp_path / "b")
    assert e.value.code == 2 and "unknown dataset 'mnist'" in capsys.readouterr().err
    bad = np.ones((30, 2), dtype=np.float32)
    bad[3, 0] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    assert run("train", "realnvp", "--data", tmp_path / "bad.npy", "--steps", 1, "--out", tmp_path / "c",
               "--no-progress") == 2
    assert "bad.npy: 1 non-finite values" in capsys.readouterr().err
    assert run("train", "realnvp", "--data", blobs / "blobs.npy", "--steps", 1, "--out", tmp_path / "d",
               "--conditional", "--no-progress") == 2
    assert "labelled dataset" in capsys.readouterr().err
    np.savez(tmp_path / "many.npz", x=np.zeros((30, 2), dtype=np.float32), y=np.arange(30))
    assert run("train", "realnvp", "--data", tmp_path / "many.npz", "--steps", 1, "--out", tmp_path / "e",
               "--conditional", "--no-progress") == 2
    assert "labels 0..9" in capsys.readouterr().err
    assert run("train", "simclr", "--data", blobs / "blobs.npy", "--steps", 1, "--out", tmp_path / "f") == 2
    assert "simclr trains on digits; got --data" in capsys.readouterr().err
    assert run("train", "realnvp", "--data", blobs / "blobs.npy", "--image", "--steps", 1,
               "--out", tmp_path / "g", "--no-progress") == 2
    assert "image=True needs images" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["pca", "ae", "vae"])
def test_pca_ae_vae_on_your_own_data(blobs, tmp_path, capsys, model, one_thread):
    """The auto-encoder line on a .npy of 2-D points: trained (fit / val), scored on the file's
    own test split, sampled as a scatter; the VAE with a Gaussian decoder (continuous data)."""
    out = tmp_path / model
    steps = [] if model == "pca" else ["--steps", 30, "--batch-size", 32]
    assert run("train", model, "--data", blobs / "blobs.npy", *steps, "--out", out, "--no-progress",
               *(["--latent-dim", 1] if model != "vae" else [])) == 0
    assert run("eval", out) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["data"] == str((blobs / "blobs.npy").resolve()) and "bits_per_dim" not in res
    if model == "vae":
        meta = json.loads((out / "checkpoint.json").read_text())
        assert meta["config"]["likelihood"] == "gaussian_learned" and math.isfinite(res["test_nll_nats"])
    else:
        assert res["reconstruction_error"] > 0 and math.isfinite(res["reconstruction_error"])
    assert run("sample", out, "-n", 16, "--out", tmp_path / f"{model}.png") == 0
    assert (tmp_path / f"{model}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("model,data", [("realnvp", "digits"), ("realnvp", "checkerboard"), ("glow", "moons"),
                                        ("gan", "digits"), ("gan", "8gaussians"), ("ae", "digits"),
                                        ("vae", "digits"), ("vqvae", "digits"), ("simclr", "digits"),
                                        ("clip", "digits-captions")])
def test_every_run_fits_on_fit_and_selects_on_val(tmp_path, monkeypatch, model, data):
    """Every family trains on the "fit" split and evaluates (keep_best, the GAN's IPM estimate,
    the contrastive loss) on "val", both carved from train: the test split stays unseen until eval."""
    from gencore import runs
    from gencore.data import load_dataset

    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(net, data, *, eval_data, keep_best=False, **kw):
        seen.update(train=data, eval=eval_data, keep_best=keep_best)
        raise Stop

    module = sys.modules[runs.get(model).train.__module__]
    monkeypatch.setattr(module, "fit", fake_fit)
    with pytest.raises(Stop):
        runs.train(model, data, tmp_path / "r", steps=1, progress=False)
    first = lambda v: (v[0] if isinstance(v, tuple) else v).flatten(1)  # noqa: E731  (vqvae: images)
    levels = data in ("digits", "digits-captions")
    assert torch.equal(first(seen["eval"]), load_dataset(data, "val")[0])
    assert torch.equal(first(seen["train"]), load_dataset(data, "fit", **({"dequantized": False} if levels else {}))[0])
    assert seen["keep_best"] == (runs.get(model).family in ("flow", "latent"))


def test_pca_chooses_its_size_on_val(tmp_path):
    from gencore import runs

    res = runs.train("pca", "digits", tmp_path / "p")
    assert res["chosen_on"] == "val"
    meta = json.loads((tmp_path / "p" / "checkpoint.json").read_text())
    scores = {int(k): v for k, v in meta["extra"]["run"]["val_log_likelihood_nats"].items()}
    assert res["n_components"] == max(scores, key=scores.get) and len(scores) >= 10
    assert runs.train("pca", "digits", tmp_path / "q", latent_dim=5)["n_components"] == 5


def test_png_folder_with_class_subfolders_as_images(tmp_path, capsys, one_thread):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for i in range(12):
        d = tmp_path / "pngs" / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(8, 8), dtype=np.uint8)).save(d / f"{i}.png")
    out = tmp_path / "run"
    assert run("train", "realnvp", "--data", tmp_path / "pngs", "--image", "--conditional", "--steps", 2,
               "--batch-size", 8, "--couplings", 1, "--hidden", "4", "--out", out, "--no-progress") == 0
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["config"]["features"] == [1, 8, 8] and meta["config"]["context_features"] == 10
    assert run("eval", out) == 0 and math.isfinite(json.loads((out / "eval.json").read_text())["test_nll_nats"])
    assert run("sample", out, "-n", 10, "--out", tmp_path / "s.png") == 0


def test_a_csv_with_a_byte_order_mark_reads_its_header(tmp_path):
    # Excel's "CSV UTF-8" starts with a BOM: it hid the "label" header (the labels became a
    # feature) and made a numeric first row a "header" (one example dropped).
    from gencore.data.files import read_data

    rows = [f"{i % 2},{0.5 * i},{-0.25 * i}" for i in range(20)]
    (tmp_path / "labelled.csv").write_text("\ufefflabel,a,b\n" + "\n".join(rows) + "\n", encoding="utf-8")
    got = read_data(tmp_path / "labelled.csv")
    assert got.x.shape == (20, 2) and got.y is not None and got.y.tolist() == [i % 2 for i in range(20)]
    (tmp_path / "numbers.csv").write_text("\ufeff" + "\n".join(r.partition(",")[2] for r in rows) + "\n",
                                          encoding="utf-8")
    assert read_data(tmp_path / "numbers.csv").x.shape == (20, 2)


def test_float64_values_beyond_float32_are_refused_naming_the_file(blobs, tmp_path, capsys):
    x = np.load(blobs / "blobs.npy").astype(np.float64)
    x[3, 1] = 1e300  # finite in float64, inf in the models' float32
    np.save(tmp_path / "big.npy", x)
    assert run("train", "realnvp", "--data", tmp_path / "big.npy", "--steps", 1, "--out", tmp_path / "r",
               "--no-progress") == 2
    err = capsys.readouterr().err
    assert "big.npy: 1 values beyond float32's range" in err and "example 3" in err, err


def test_steps_may_grow_but_not_shrink(blobs, tmp_path, capsys, one_thread):
    args = ("--data", blobs / "blobs.npy", "--couplings", 1, "--hidden", 4, "--batch-size", 32, "--out",
            tmp_path / "r", "--no-progress")
    assert run("train", "realnvp", "--steps", 4, *args) == 0
    capsys.readouterr()
    assert run("train", "realnvp", "--steps", 2, *args) == 2
    assert "holds a checkpoint at step 4, past steps=2" in capsys.readouterr().err
    assert run("train", "realnvp", "--steps", 6, *args) == 0


def test_resuming_on_changed_data_under_the_same_path_is_refused(blobs, tmp_path, capsys, one_thread):
    data = tmp_path / "data.npy"
    np.save(data, np.load(blobs / "blobs.npy"))
    args = ("--data", data, "--couplings", 1, "--hidden", 4, "--batch-size", 32, "--out", tmp_path / "r",
            "--no-progress")
    assert run("train", "realnvp", "--steps", 2, *args) == 0
    np.save(data, 5 + 3 * np.load(blobs / "blobs.npy"))
    capsys.readouterr()
    assert run("train", "realnvp", "--steps", 4, *args) == 2
    err = capsys.readouterr().err
    assert "trained differently" in err and "data_sha256" in err, err
    assert run("train", "realnvp", "--steps", 4, "--allow-changes", *args) == 0


def test_a_run_from_before_fingerprints_resumes_and_a_png_folder_ignores_other_files(tmp_path, capsys, one_thread):
    data = _pngs(tmp_path / "pngs", 1)
    out = tmp_path / "r"
    args = ("--data", data, "--couplings", 1, "--hidden", 4, "--batch-size", 8, "--out", out, "--no-progress")
    assert run("train", "realnvp", "--steps", 1, *args) == 0
    meta = json.loads((out / "checkpoint.json").read_text())
    assert len(meta["extra"]["run"]["data_sha256"]) == 64
    (data / ".DS_Store").write_bytes(b"rewritten by a file browser")  # not data: the loader skips it
    (data / "README.txt").write_text("notes")
    assert run("train", "realnvp", "--steps", 2, *args) == 0
    del meta["extra"]["run"]["data_sha256"]  # a checkpoint written before runs recorded one
    meta["step"] = 2
    meta = {**meta, "files": json.loads((out / "checkpoint.json").read_text())["files"]}
    (out / "checkpoint.json").write_text(json.dumps(meta))
    assert run("train", "realnvp", "--steps", 3, *args) == 0, capsys.readouterr().err
    assert "data_sha256" not in json.loads((out / "checkpoint.json").read_text())["extra"]["run"]


def test_eval_on_a_dataset_the_model_does_not_take(blobs, tmp_path, capsys, one_thread):
    out = tmp_path / "r"
    assert run("train", "realnvp", "--data", "8gaussians", "--steps", 1, "--couplings", 1, "--hidden", 4,
               "--out", out, "--no-progress") == 0
    capsys.readouterr()
    assert run("eval", out, "--data", "digits-captions") == 2
    assert "realnvp runs evaluate on" in capsys.readouterr().err


def _pngs(folder, channels: int, n: int = 12):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        shape = (8, 8) if channels == 1 else (8, 8, channels)
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("model, image", [("realnvp", True), ("ae", True), ("vae", False), ("realnvp", False)])
def test_samples_of_png_folders_are_image_grids(tmp_path, capsys, one_thread, model, image):
    # RGB folders trained but could not be drawn (the grid took one channel; the ae crashed),
    # and a model without --image on a PNG folder said "train image data with --image".
    Image = pytest.importorskip("PIL.Image")
    data = _pngs(tmp_path / "rgb", 3)
    out = tmp_path / "run"
    args = ["train", model, "--data", data, "--steps", 1, "--batch-size", 8, "--out", out, "--no-progress"]
    if image:
        args.append("--image")
    assert run(*args) == 0
    assert run("sample", out, "-n", 4, "--out", tmp_path / "s.png") == 0, capsys.readouterr().err
    with Image.open(tmp_path / "s.png") as im:
        pixels = np.asarray(im.convert("RGB")).astype(int)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    spread = pixels.max(2) - pixels.min(2)  # 0 everywhere on a gray picture
    assert (spread > 30).mean() > 0.05  # drawn in colour, not as one gray channel
