"""Your own data is read once per command: the splits of a run, its default steps and the
fingerprint it records all come from one read of the files (gencore.data.files.read_once)."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gencore import runs
from gencore.data import files, load_dataset


@pytest.fixture
def reads(monkeypatch):
    """The files read (one entry per file read) while the test runs."""
    seen = []
    real = files._file_bytes

    def counting(f):
        seen.append(f.name)
        return real(f)

    monkeypatch.setattr(files, "_file_bytes", counting)
    return seen


def _blobs(path, offset=2.0):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = (rng.standard_normal((60, 2)) * 0.3 + np.where(y[:, None] == 1, offset, -offset)).astype(np.float32)
    np.save(path, x)
    return path


def _pngs(folder, n=12):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for i in range(n):
        d = folder / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(4, 4), dtype=np.uint8)).save(d / f"{i:02d}.png")
    return folder


def test_read_once_reads_each_path_once_and_then_lets_go(tmp_path, reads):
    data = _blobs(tmp_path / "x.npy")
    load_dataset(data, "fit")
    load_dataset(data, "val")
    assert reads == ["x.npy", "x.npy"]  # outside a block every call reads
    reads.clear()
    with files.read_once():
        first = files.read_data(data)
        with files.read_once():  # a nested block shares the outer one's reads
            assert files.read_data(str(data)) is first
        for split in ("fit", "val", "test", "train"):
            load_dataset(data, split)
    assert reads == ["x.npy"]
    files.read_data(data)
    assert reads == ["x.npy", "x.npy"]  # released with the block


def test_each_spelling_of_a_path_has_its_own_fingerprint(tmp_path, reads):
    # The fingerprint names a file as given: a link read first must not lend its name to
    # the target's read (the run layer passes resolved paths).
    data = _blobs(tmp_path / "x.npy")
    (tmp_path / "link.npy").symlink_to(data)
    alone = {p: files.read_data(p).sha256 for p in (data, tmp_path / "link.npy")}
    assert alone[data] != alone[tmp_path / "link.npy"]
    reads.clear()
    with files.read_once():
        assert files.read_data(tmp_path / "link.npy").sha256 == alone[tmp_path / "link.npy"]
        assert files.read_data(data).sha256 == alone[data]
    assert reads == ["link.npy", "x.npy"]


def test_a_file_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    data = _blobs(tmp_path / "x.npy")
    real = Path.read_bytes

    def denied(self):
        if self.name == "x.npy":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ValueError, match=r"x\.npy: cannot be read \(Permission denied\)"):
        load_dataset(data, "fit")


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<f4", ">f8", "u1", "?", "<i2"])
def test_npy_files_read_as_numpy_reads_them(tmp_path, order, dtype):
    a = np.asarray(np.random.default_rng(0).integers(0, 2, (13, 3, 5, 2)), dtype=dtype, order=order)
    np.save(tmp_path / "a.npy", a)
    x = files.read_data(tmp_path / "a.npy").x
    want = np.load(tmp_path / "a.npy")
    assert x.shape == want.shape and np.array_equal(x, want.astype(x.dtype))


@pytest.mark.parametrize("shape", [(-1, 3), (30, -1), (-2, 3), (-1, -3)])
def test_a_crafted_npy_header_with_negative_dimensions_is_refused(tmp_path, shape):
    # A view of the bytes took -1 as "the rest": (-1, 3) read as (30, 3) instead of failing.
    from numpy.lib import format as npy_format

    with open(tmp_path / "a.npy", "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(np.zeros(90, np.float32).tobytes())
    for read in (files.read_data, files.example_shape):
        with pytest.raises(ValueError, match=r"a\.npy: not a readable \.npy file .*negative dimensions"):
            read(tmp_path / "a.npy")


def test_a_truncated_npy_file_is_named(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((20, 3), np.float32))
    raw = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match=r"a\.npy: not a readable \.npy file \(truncated"):
        files.read_data(tmp_path / "a.npy")


def test_in_one_block_the_splits_and_the_fingerprint_describe_one_content(tmp_path):
    # Before, a run read the file for each split and again to fingerprint it: a file
    # rewritten between the reads gave splits of two contents and a fingerprint of neither.
    from gencore.runs.common import data_fingerprint

    data = _blobs(tmp_path / "x.npy")
    before = data.read_bytes()
    with files.read_once():
        x_fit = load_dataset(data, "fit")[0]
        _blobs(data, offset=5.0)  # rewritten while the run loads
        x_val = load_dataset(data, "val")[0]
        fingerprint = data_fingerprint(str(data))
    assert data.read_bytes() != before
    digest = hashlib.sha256(f"x.npy\0{len(before)}\0{hashlib.sha256(before).hexdigest()}\n".encode())
    assert fingerprint == digest.hexdigest()
    old = torch.as_tensor(np.load(io.BytesIO(before)))
    idx = files.split_indices(60)
    assert torch.equal(x_fit, old[idx["fit"]]) and torch.equal(x_val, old[idx["val"]])


def test_the_fingerprint_formula_is_the_one_earlier_runs_recorded(tmp_path):
    # A run records data_sha256 and refuses to resume when it changes: the formula must stay.
    from gencore.runs.common import data_fingerprint

    folder = _pngs(tmp_path / "pngs")
    digest = hashlib.sha256()
    for f in sorted(folder.rglob("*.png"), key=lambda f: (f.parent.name, f.name)):
        content = f.read_bytes()
        digest.update(f"{f.relative_to(folder)}\0{len(content)}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    assert data_fingerprint(str(folder)) == digest.hexdigest() == files.read_data(folder).sha256
    assert data_fingerprint("digits") is None
    fixed = tmp_path / "fixed.csv"
    fixed.write_bytes(b"a,b\n" + b"".join(f"{i},{i * 2}\n".encode() for i in range(12)))
    # the digest a run recorded for these bytes at commit e428361, before this reader
    assert data_fingerprint(str(fixed)) == "f24bf63be67ac8b81978bd20f88ab5b0087932c79b3ffc41351f5ccbfe5a1843"


@pytest.mark.parametrize("model", ["realnvp", "gan", "ae", "pca"])
def test_train_eval_and_sample_read_your_data_once(tmp_path, reads, model, one_thread):
    data = _blobs(tmp_path / "x.npy")
    out = tmp_path / "run"
    steps = {} if model == "pca" else {"steps": 2, "batch_size": 16}
    runs.train(model, str(data), out, progress=False, **steps)
    assert reads == ["x.npy"]
    reads.clear()
    runs.evaluate(out)  # (the ae also reads the train split: its PCA baseline)
    assert reads == ["x.npy"]
    if model != "ae":  # 2-D samples: a scatter, drawn without reading the data
        reads.clear()
        runs.sample(out, 8, tmp_path / "s.png")
        assert reads == []


@pytest.mark.parametrize("conditional", [False, True])
def test_a_png_folder_is_decoded_once_per_run(tmp_path, reads, one_thread, conditional):
    folder = _pngs(tmp_path / "pngs")
    out = tmp_path / "run"
    runs.train("realnvp", str(folder), out, steps=1, batch_size=4, couplings=1, hidden=[4], progress=False,
               conditional=conditional)
    assert sorted(reads) == sorted(f"{i:02d}.png" for i in range(12))
    reads.clear()
    # the picture's shape comes from the folder's first image (a/01.png), its classes
    # (conditional: columns of classes 0-1) from the listing
    runs.sample(out, 4, tmp_path / "s.png")
    assert reads == ["01.png"]


@pytest.mark.parametrize("model, module", [("realnvp", "flows"), ("gan", "gan"), ("ae", "latent")])
def test_default_steps_of_your_vectors_follow_their_values(tmp_path, monkeypatch, model, module, one_thread):
    # Vectors outside [0, 1] take the toys' defaults, inside the digits': the run picks them
    # from the one read of its data (before, runs.train read the fit split for it first).
    import importlib

    family = importlib.import_module(f"gencore.runs.{module}")
    if model == "ae":
        monkeypatch.setattr(family, "STEPS", {"ae": 3, "vae": 3, "hvae": 3})
    else:
        monkeypatch.setattr(family, "STEPS", {"toy": 3, "digits": 2, "image": 4})
    wide = _blobs(tmp_path / "wide.npy")
    unit = tmp_path / "unit.npy"
    np.save(unit, np.random.default_rng(1).random((60, 2)).astype(np.float32))
    small = {"hidden": [4]} if model != "gan" else {"hidden": [4], "latent_dim": 2}
    got = {}
    for name, path in (("wide", wide), ("unit", unit)):
        res = runs.train(model, str(path), tmp_path / name, batch_size=16, progress=False, **small)
        meta = json.loads((tmp_path / name / "checkpoint.json").read_text())
        assert res["steps"] == meta["step"]
        got[name] = res["steps"]
    assert got == ({"wide": 3, "unit": 3} if model == "ae" else {"wide": 3, "unit": 2})


@pytest.mark.parametrize("name, array", [
    ("vectors.npy", np.zeros((12, 5), np.float32)), ("gray.npy", np.zeros((12, 6, 7), np.uint8)),
    ("rgb.npy", np.zeros((12, 3, 4, 5), np.uint8)), ("rgb.npz", np.zeros((12, 3, 4, 5), np.float64)),
    ("vectors.csv", None), ("pngs", None), ("channels-last.npy", np.zeros((12, 5, 5, 3), np.uint8))])
def test_example_shape_is_read_datas_without_reading_it_all(tmp_path, reads, name, array):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, array)
    elif name.endswith(".npz"):
        np.savez(path, x=array)
    elif name.endswith(".csv"):
        path.write_text("\n".join(f"{i},{i + 1},{i * 2}" for i in range(12)))
    else:
        _pngs(path)
    if name.startswith("channels-last"):  # read_data's error, not a shape
        with pytest.raises(ValueError, match="look channels-last"):
            files.example_shape(path)
        return
    shape, image = files.example_shape(path)
    assert reads == (["01.png"] if name == "pngs" else [] if name.endswith(".npy") else [name])
    d = files.read_data(path)
    assert (shape, image) == (tuple(d.x.shape[1:]), d.image)
    reads.clear()
    with files.read_once():
        files.read_data(path)
        assert files.example_shape(path) == (shape, image)
    assert len(reads) == (12 if name == "pngs" else 1)  # a held read is not read again
