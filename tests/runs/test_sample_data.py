"""`gencore sample RUN --out X.npy / .npz / .csv`: the samples as data, in the formats
load_dataset reads back, for vectors that have no picture and for anyone who wants numbers."""

import json

import numpy as np
import pytest
import torch

from gencore import cli, runs
from gencore.data.files import read_data
from gencore.runs.common import one_hot


def run(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def blobs3(tmp_path_factory):
    """3-D vectors (no picture) with labels 0 / 1, as .npz."""
    folder = tmp_path_factory.mktemp("blobs3")
    rng = np.random.default_rng(0)
    y = np.arange(150) % 2
    x = (rng.standard_normal((150, 3)) + np.where(y[:, None] == 1, 2.0, -2.0)).astype(np.float32)
    np.savez(folder / "b.npz", x=x, y=y)
    return folder / "b.npz"


def _drawn(out, n, seed=0, classes=10):
    """What the run's model draws for ``sample -n n --seed seed`` (conditional: class i % classes)."""
    net, meta = runs.load_run(out)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes if meta["extra"]["run"].get("conditional") else None
    with torch.no_grad():
        if meta["model"] == "gan":
            return net.sample(n, labels=labels, generator=g)
        return net.sample(n, generator=g, context=None if labels is None else one_hot(labels))


@pytest.mark.parametrize("model", ["realnvp", "gan", "vae"])
def test_conditional_samples_as_npz_csv_and_npy(blobs3, tmp_path, capsys, model, one_thread):
    out = tmp_path / "r"
    assert run("train", model, "--data", blobs3, "--conditional", "--steps", 2, "--batch-size", 16, "--hidden", 8,
               "--out", out, "--no-progress") == 0
    capsys.readouterr()
    # The data has classes 0 and 1: samples for the ten classes the model's one-hot has
    # would label eight in ten with classes it never saw.
    want = _drawn(out, 23, seed=4, classes=2).float()
    labels = np.arange(23) % 2
    for name in ("s.npz", "s.csv", "s.npy", "s.safetensors"):
        assert run("sample", out, "-n", 23, "--seed", 4, "--out", tmp_path / name) == 0
        printed = capsys.readouterr().out.split("\n")
        assert printed[:2] == [f"wrote {tmp_path / name}", ""]  # no GAN figures beside data
        d = read_data(tmp_path / name)  # gencore reads its samples back
        # exact as float32 (load_dataset's dtype), the CSV's nine significant digits too
        assert d.x.shape == (23, 3) and np.array_equal(d.x.astype(np.float32), want.numpy())
        assert np.array_equal(d.y, labels) if name != "s.npy" else d.y is None
    assert not list(tmp_path.glob("s-*.png"))


def test_png_samples_of_vectors_still_say_why_there_is_no_picture(blobs3, tmp_path, capsys, one_thread):
    out = tmp_path / "r"
    assert run("train", "realnvp", "--data", blobs3, "--steps", 1, "--hidden", 4, "--couplings", 1, "--out", out,
               "--no-progress") == 0
    capsys.readouterr()
    assert run("sample", out, "--out", tmp_path / "s.png") == 2
    assert "3-D vectors have no picture" in capsys.readouterr().err
    assert run("sample", out, "-n", 12, "--out", tmp_path / "S.CSV") == 0  # the suffix in any case
    assert read_data(tmp_path / "S.CSV").x.shape == (12, 3)


def test_image_samples_keep_their_shape_and_the_data_units(tmp_path, capsys, one_thread):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    (tmp_path / "pngs").mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)).save(tmp_path / "pngs" / f"{i}.png")
    out = tmp_path / "r"
    assert run("train", "realnvp", "--data", tmp_path / "pngs", "--image", "--steps", 1, "--batch-size", 4,
               "--couplings", 1, "--hidden", 4, "--out", out, "--no-progress") == 0
    assert run("sample", out, "-n", 10, "--out", tmp_path / "s.npy") == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (10, 3, 4, 4) and x.dtype == np.float32
    assert np.array_equal(x, _drawn(out, 10).numpy())
    assert read_data(tmp_path / "s.npy").image
    # a model that learned the PNGs as flat vectors draws vectors
    flat = tmp_path / "flat"
    assert run("train", "realnvp", "--data", tmp_path / "pngs", "--steps", 1, "--batch-size", 4, "--couplings", 1,
               "--hidden", 4, "--out", flat, "--no-progress") == 0
    assert run("sample", flat, "-n", 10, "--out", tmp_path / "new" / "folder" / "f.npy") == 0  # folders made
    assert np.load(tmp_path / "new" / "folder" / "f.npy").shape == (10, 48)


def test_pca_and_vqvae_samples(blobs3, tmp_path, capsys, one_thread):
    assert run("train", "pca", "--data", blobs3, "--out", tmp_path / "p") == 0
    assert run("sample", tmp_path / "p", "-n", 12, "--out", tmp_path / "p.npz") == 0
    assert read_data(tmp_path / "p.npz").x.shape == (12, 3)
    assert run("train", "vqvae", "--data", "digits", "--conditional", "--steps", 1, "--out", tmp_path / "v",
               "--no-progress") == 0
    assert run("sample", tmp_path / "v", "-n", 12, "--out", tmp_path / "v.npz") == 0
    d = read_data(tmp_path / "v.npz")
    assert d.x.shape == (12, 1, 8, 8) and np.array_equal(d.y, np.arange(12) % 10)  # the digits: 10 classes


def test_errors(blobs3, tmp_path, capsys, one_thread):
    out = tmp_path / "ae"
    assert run("train", "ae", "--data", blobs3, "--steps", 1, "--hidden", 4, "--out", out, "--no-progress") == 0
    capsys.readouterr()
    assert run("sample", out, "--out", tmp_path / "a.npy") == 2
    assert "auto-encoder has no generator" in capsys.readouterr().err and not (tmp_path / "a.npy").exists()
    assert run("sample", out, "-n", 20000, "--out", tmp_path / "a.png") == 2
    assert "between 1 and 10,000 (one PNG; a .npy, .npz, .csv or .safetensors file takes up to 100,000)" \
        in capsys.readouterr().err
    assert run("sample", out, "-n", 100_001, "--out", tmp_path / "a.npz") == 2
    assert "between 1 and 100,000 (one data file)" in capsys.readouterr().err
    (tmp_path / "d.npy").mkdir()
    assert run("sample", out, "--out", tmp_path / "d.npy") == 2
    assert f"is a folder; give a file name such as {tmp_path / 'd.npy' / 'samples.npy'}" in capsys.readouterr().err
    assert json.loads((out / "checkpoint.json").read_text())["model"] == "ae"


def test_samples_with_nan_are_refused_and_nothing_is_written(blobs3, tmp_path, capsys, monkeypatch, one_thread):
    from gencore.models import RealNVP

    out = tmp_path / "r"
    assert run("train", "realnvp", "--data", blobs3, "--steps", 1, "--hidden", 4, "--couplings", 1, "--out", out,
               "--no-progress") == 0
    capsys.readouterr()
    real = RealNVP.sample

    def diverged(self, n, **kw):
        xs = real(self, n, **kw)
        xs[3, 1] = float("nan")
        xs[5, 0] = float("inf")
        return xs

    monkeypatch.setattr(RealNVP, "sample", diverged)
    for name in ("s.csv", "s.npz"):
        assert run("sample", out, "-n", 12, "--out", tmp_path / name) == 2
        err = capsys.readouterr().err
        assert "2 of the 12 samples hold NaN or infinite values, the first sample 3" in err, err
        assert not list(tmp_path.glob("s.*"))  # neither the file nor its .tmp


def test_a_failed_write_leaves_neither_the_file_nor_its_tmp(blobs3, tmp_path, capsys, monkeypatch, one_thread):
    out = tmp_path / "r"
    assert run("train", "realnvp", "--data", blobs3, "--steps", 1, "--hidden", 4, "--couplings", 1, "--out", out,
               "--no-progress") == 0
    capsys.readouterr()

    def disk_full(fh, *arrays, **named):
        fh.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    assert run("sample", out, "-n", 12, "--out", tmp_path / "s.npz") == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not list(tmp_path.glob("s.*"))


def test_a_conditional_run_on_png_class_folders_draws_their_classes(tmp_path, capsys, one_thread):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for i in range(12):
        d = tmp_path / "pngs" / ("cat", "dog", "emu")[i % 3]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(4, 4), dtype=np.uint8)).save(d / f"{i}.png")
    out = tmp_path / "r"
    assert run("train", "realnvp", "--data", tmp_path / "pngs", "--image", "--conditional", "--steps", 1,
               "--batch-size", 4, "--couplings", 1, "--hidden", 4, "--out", out, "--no-progress") == 0
    assert run("sample", out, "-n", 10, "--out", tmp_path / "s.npz") == 0
    d = read_data(tmp_path / "s.npz")
    assert d.x.shape == (10, 1, 4, 4) and np.array_equal(d.y, np.arange(10) % 3)
    assert np.array_equal(d.x.astype(np.float32), _drawn(out, 10, classes=3).numpy())
