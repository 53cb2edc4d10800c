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


def _drawn(out, n, seed=0):
    """What the run's model draws for ``sample -n n --seed seed`` (conditional: class i % 10)."""
    net, meta = runs.load_run(out)
    g = torch.Generator().manual_seed(seed)
    conditional = bool(meta["extra"]["run"].get("conditional"))
    with torch.no_grad():
        if meta["model"] == "gan":
            return net.sample(n, labels=torch.arange(n) % 10 if conditional else None, generator=g)
        return net.sample(n, generator=g, context=one_hot(torch.arange(n) % 10) if conditional else None)


@pytest.mark.parametrize("model", ["realnvp", "gan", "vae"])
def test_conditional_samples_as_npz_csv_and_npy(blobs3, tmp_path, capsys, model, one_thread):
    out = tmp_path / "r"
    assert run("train", model, "--data", blobs3, "--conditional", "--steps", 2, "--batch-size", 16, "--hidden", 8,
               "--out", out, "--no-progress") == 0
    capsys.readouterr()
    want = _drawn(out, 23, seed=4).float()
    labels = np.arange(23) % 10
    for name in ("s.npz", "s.csv", "s.npy"):
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


def test_pca_and_vqvae_samples(blobs3, tmp_path, capsys, one_thread):
    assert run("train", "pca", "--data", blobs3, "--out", tmp_path / "p") == 0
    assert run("sample", tmp_path / "p", "-n", 12, "--out", tmp_path / "p.npz") == 0
    assert read_data(tmp_path / "p.npz").x.shape == (12, 3)
    assert run("train", "vqvae", "--data", "digits", "--conditional", "--steps", 1, "--out", tmp_path / "v",
               "--no-progress") == 0
    assert run("sample", tmp_path / "v", "-n", 12, "--out", tmp_path / "v.npz") == 0
    d = read_data(tmp_path / "v.npz")
    assert d.x.shape[0] == 12 and d.x[0].size == 64 and np.array_equal(d.y, np.arange(12) % 10)
    assert 0 <= d.x.min() and d.x.max() < 1  # the digits' units: dequantized, in [0, 1)


def test_errors(blobs3, tmp_path, capsys, one_thread):
    out = tmp_path / "ae"
    assert run("train", "ae", "--data", blobs3, "--steps", 1, "--hidden", 4, "--out", out, "--no-progress") == 0
    capsys.readouterr()
    assert run("sample", out, "--out", tmp_path / "a.npy") == 2
    assert "auto-encoder has no generator" in capsys.readouterr().err and not (tmp_path / "a.npy").exists()
    assert run("sample", out, "-n", 20000, "--out", tmp_path / "a.png") == 2
    assert "between 1 and 10,000 (one PNG)" in capsys.readouterr().err
    assert run("sample", out, "-n", 100_001, "--out", tmp_path / "a.npz") == 2
    assert "between 1 and 100,000 (one data file)" in capsys.readouterr().err
    (tmp_path / "d.npy").mkdir()
    assert run("sample", out, "--out", tmp_path / "d.npy") == 2
    assert "is a folder" in capsys.readouterr().err
    assert json.loads((out / "checkpoint.json").read_text())["model"] == "ae"
