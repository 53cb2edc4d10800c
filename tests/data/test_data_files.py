"""gencore.data.files: your own data (.npy / .npz / .csv / .safetensors / PNG folders) and the
train / val / test / fit splits, of user data and of the embedded datasets."""

import numpy as np
import pytest
import torch

from gencore.data import dequantize, files, load_dataset, split_indices


def whole(path, **kw):
    """All examples of a data file, put back in file order from its train and test splits."""
    x, y = load_dataset(path, "train", **kw)
    xt, yt = load_dataset(path, "test", **kw)
    s = split_indices(len(x) + len(xt))
    out = torch.empty((len(x) + len(xt), *x.shape[1:]), dtype=x.dtype)
    out[s["train"]], out[s["test"]] = x, xt
    if y is None:
        assert yt is None
        return out, None
    lab = torch.empty(len(out), dtype=y.dtype)
    lab[s["train"]], lab[s["test"]] = y, yt
    return out, lab


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- formats -------------------------------------------------------------------------------

def test_npy_round_trip(tmp_path):
    a = rand(40, 3)
    np.save(tmp_path / "a.npy", a)
    x, y = whole(tmp_path / "a.npy")
    assert y is None and x.dtype == torch.float32 and x.shape == (40, 3)
    assert torch.equal(x, torch.from_numpy(a))
    x64, _ = load_dataset(str(tmp_path / "a.npy"), "test", dtype=torch.float64)  # a str path too
    assert x64.dtype == torch.float64 and x64.shape == (8, 3)


def test_npz_with_labels_and_single_array(tmp_path):
    a, lab = rand(30, 5), np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x=a, y=lab)
    x, y = whole(tmp_path / "d.npz")
    assert torch.equal(x, torch.from_numpy(a)) and y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(lab))
    np.savez(tmp_path / "one.npz", a)  # stored as "arr_0": the examples, no labels
    x, y = whole(tmp_path / "one.npz")
    assert y is None and torch.equal(x, torch.from_numpy(a))
    np.savez(tmp_path / "names.npz", images=a, labels=np.array(["b", "a", "c"] * 10))
    _, y = whole(tmp_path / "names.npz")
    assert torch.equal(y, torch.tensor([1, 0, 2] * 10))  # class names numbered in sorted order


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    a = torch.randn(25, 4, dtype=torch.float64)
    lab = torch.arange(25) % 4
    save_file({"x": a, "labels": lab}, str(tmp_path / "d.safetensors"))
    x, y = whole(tmp_path / "d.safetensors", dtype=torch.float64)
    assert torch.equal(x, a) and torch.equal(y, lab)
    save_file({"data": a.to(torch.bfloat16)}, str(tmp_path / "b.safetensors"))
    x, y = whole(tmp_path / "b.safetensors")
    assert y is None and torch.equal(x, a.to(torch.bfloat16).float())


def test_csv_header_label_column_and_plain(tmp_path):
    a = np.round(rand(20, 3), 4).astype(np.float64)
    lab = np.arange(20) % 2
    lines = ["f1,Label,f2,f3"] + [f"{r[0]},{k},{r[1]},{r[2]}" for r, k in zip(a, lab)]
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n\n")  # a trailing blank line is skipped
    x, y = whole(tmp_path / "h.csv", dtype=torch.float64)
    assert torch.equal(x, torch.from_numpy(a)) and torch.equal(y, torch.from_numpy(lab))
    (tmp_path / "p.csv").write_text("\n".join(",".join(str(v) for v in r) for r in a))
    x, y = whole(tmp_path / "p.csv", dtype=torch.float64)
    assert y is None and torch.equal(x, torch.from_numpy(a))
    lines = ["x0,y"] + [f"{v},{'cat' if k else 'dog'}" for v, k in zip(a[:, 0], lab)]
    (tmp_path / "s.csv").write_text("\n".join(lines))
    _, y = whole(tmp_path / "s.csv")
    assert torch.equal(y, torch.from_numpy(1 - lab))  # cat = 0, dog = 1


def _png(path, levels):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = levels[0] if levels.shape[0] == 1 else levels.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)


def test_png_folder_grayscale_levels_and_dequantization(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(12, 1, 5, 7), dtype=np.uint8)
    imgs[0, 0, 0, 0] = 255
    for i, im in enumerate(imgs):
        _png(tmp_path / "g" / f"{i:02d}.png", im)
    (tmp_path / "g" / "notes.txt").write_text("skipped")
    levels, y = whole(tmp_path / "g", image=True, dequantized=False)
    assert y is None and levels.shape == (12, 1, 5, 7) and torch.equal(levels, torch.from_numpy(imgs).float())
    x, _ = whole(tmp_path / "g", image=True)
    assert x.min() >= 0 and x.max() < 1 and torch.equal(torch.floor(x.double() * 256), levels.double())
    v, _ = load_dataset(tmp_path / "g", "train")  # vectors by default, like the digits
    assert v.shape == (len(split_indices(12)["train"]), 35)
    # Pillow and the matplotlib fallback read the same levels.
    import matplotlib.image

    calls = []
    imread = matplotlib.image.imread
    monkeypatch.setattr(matplotlib.image, "imread", lambda *a, **k: (calls.append(a), imread(*a, **k))[1])
    monkeypatch.setattr(files, "_FORCE_MATPLOTLIB", True)
    again, _ = whole(tmp_path / "g", image=True, dequantized=False)
    assert torch.equal(again, levels) and len(calls) == 2 * 12  # train and test each read the folder


def test_png_class_folders_rgb(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(15, 3, 4, 4), dtype=np.uint8)
    for i, im in enumerate(imgs):
        _png(tmp_path / "c" / ["zebra", "ant", "cat"][i % 3] / f"{i:02d}.png", im)
    levels, y = whole(tmp_path / "c", image=True, dequantized=False)
    assert levels.shape == (15, 3, 4, 4)
    # Files in order: class folders sorted (ant, cat, zebra), then file names.
    order = [i for k in (1, 2, 0) for i in range(15) if i % 3 == k]
    assert torch.equal(levels, torch.from_numpy(imgs[order]).float())
    assert torch.equal(y, torch.tensor([0] * 5 + [1] * 5 + [2] * 5))
    d = files.read_data(tmp_path / "c")
    assert d.classes == ("ant", "cat", "zebra") and d.image and d.levels


def test_uint8_arrays_are_pixel_levels(tmp_path):
    a = np.random.default_rng(2).integers(0, 256, size=(20, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "u.npy", a)
    x, _ = whole(tmp_path / "u.npy", image=True)
    assert x.shape == (20, 1, 6, 6) and x.min() >= 0 and x.max() < 1
    assert torch.equal(torch.floor(x.double() * 256)[:, 0], torch.from_numpy(a).double())
    lv, _ = whole(tmp_path / "u.npy", dequantized=False)
    assert lv.shape == (20, 36) and torch.equal(lv, torch.from_numpy(a).reshape(20, 36).float())
    ints = np.arange(60, dtype=np.int64).reshape(20, 3) * 1000  # other integers: values as stored
    np.save(tmp_path / "i.npy", ints)
    assert torch.equal(whole(tmp_path / "i.npy", dtype=torch.float64)[0], torch.from_numpy(ints).double())


def test_dequantize_levels():
    lv = torch.tensor([[0.0, 255.0]], dtype=torch.float64).repeat(500, 1)
    x = dequantize(lv, torch.Generator().manual_seed(0), n_levels=256)
    assert torch.equal(torch.floor(x * 256), lv) and x.max() < 1
    d17 = dequantize(lv[:, :1] / 16, torch.Generator().manual_seed(0))  # the digits' 17 levels by default
    assert torch.equal(d17, dequantize(lv[:, :1] / 16, torch.Generator().manual_seed(0), n_levels=17))
    assert not torch.equal(d17, dequantize(lv[:, :1] / 16, torch.Generator().manual_seed(0), n_levels=18))


# ---- splits --------------------------------------------------------------------------------

def test_user_split_disjoint_covering_reproducible(tmp_path):
    for n, (n_test, n_val) in {10: (2, 1), 11: (2, 1), 50: (10, 4), 1003: (200, 80)}.items():
        s = split_indices(n)
        assert (len(s["test"]), len(s["val"]), len(s["fit"])) == (n_test, n_val, n - n_test - n_val)
        assert np.array_equal(np.sort(np.concatenate([s["train"], s["test"]])), np.arange(n))
        assert np.array_equal(np.sort(np.concatenate([s["fit"], s["val"]])), s["train"])
        assert not set(s["val"]) & set(s["fit"]) and not set(s["train"]) & set(s["test"])
        again = split_indices(n)
        assert all(np.array_equal(s[k], again[k]) for k in s)
    assert not np.array_equal(split_indices(50)["test"], split_indices(50, seed=1)["test"])
    assert not np.array_equal(split_indices(50)["test"], np.arange(10))  # shuffled, not the first rows
    a = np.arange(50 * 2, dtype=np.float64).reshape(50, 2)
    np.save(tmp_path / "a.npy", a)
    s = split_indices(50)
    for split in ("train", "val", "test", "fit"):
        x, _ = load_dataset(tmp_path / "a.npy", split, dtype=torch.float64)
        assert torch.equal(x, torch.from_numpy(a[s[split]]))


def test_user_level_data_seeds(tmp_path):
    a = np.random.default_rng(3).integers(0, 256, size=(40, 8), dtype=np.uint8)
    np.save(tmp_path / "u.npy", a)
    p = tmp_path / "u.npy"
    tr1, tr2 = load_dataset(p, "train", seed=1)[0], load_dataset(p, "train", seed=2)[0]
    assert not torch.equal(tr1, tr2) and torch.equal(tr1, load_dataset(p, "train", seed=1)[0])
    for split in ("val", "test"):
        assert torch.equal(load_dataset(p, split, seed=1)[0], load_dataset(p, split, seed=2)[0])
    # fit is train's rows, the same values
    s = split_indices(40)
    pos = np.searchsorted(s["train"], s["fit"])
    assert torch.equal(load_dataset(p, "fit", seed=1)[0], tr1[pos])


def test_digits_val_and_fit():
    x, y = load_dataset("digits", "train", seed=3)
    xv, yv = load_dataset("digits", "val", seed=3)
    xf, yf = load_dataset("digits", "fit", seed=3)
    assert (len(xv), len(xf)) == (135, 1212) and x.shape == (1347, 64)
    # val + fit are train: fit keeps train's values, val its levels (fixed dequantization seed)
    lv = torch.floor(x.double() * 17)
    rows = {tuple(r) for r in lv.tolist()}
    assert all(tuple(r) in rows for r in torch.floor(xv.double() * 17).tolist())
    assert torch.equal(torch.bincount(torch.cat([yv, yf]), minlength=10), torch.bincount(y, minlength=10))
    train_rows = {tuple(r) for r in x.tolist()}
    assert all(tuple(r) in train_rows for r in xf.tolist())
    assert torch.bincount(yv, minlength=10).min() >= 12  # stratified: 13 or 14 per class
    assert torch.equal(xv, load_dataset("digits", "val", seed=4)[0])  # fixed, whatever the seed
    assert not torch.equal(xf, load_dataset("digits", "fit", seed=4)[0])
    xi, _ = load_dataset("digits", "val", image=True)
    assert xi.shape == (135, 1, 8, 8)
    x3, tok, y3 = load_dataset("digits-captions", "val")
    assert x3.shape == (135, 64) and tok.shape == (135, 3) and torch.equal(y3, yv)


def test_toy_val_is_a_fixed_independent_draw():
    v1, _ = load_dataset("moons", "val", seed=1)
    v2, _ = load_dataset("moons", "val", seed=2)
    t, _ = load_dataset("moons", "test")
    assert v1.shape == (5000, 2) and torch.equal(v1, v2) and not torch.equal(v1, t)
    assert torch.equal(load_dataset("moons", "fit", seed=5)[0], load_dataset("moons", "train", seed=5)[0])


# ---- bad inputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values(tmp_path, value):
    a = rand(20, 3)
    a[7, 1] = value
    np.save(tmp_path / "bad.npy", a)
    with pytest.raises(ValueError, match=r"bad\.npy: 1 non-finite values \(NaN or inf\) in the data, the first in "
                                         r"example 7"):
        load_dataset(tmp_path / "bad.npy")
    (tmp_path / "bad.csv").write_text("a,b\n" + "1,2\n" * 12 + "nan,3\n")
    with pytest.raises(ValueError, match=r"bad\.csv: 1 non-finite"):
        load_dataset(tmp_path / "bad.csv")


@pytest.mark.parametrize("shape, match", [((30,), r"shape \(30,\); expected \(N, D\).*reshape to \(N, 1\)"),
                                          ((12, 2, 2, 2, 2), r"shape \(12, 2, 2, 2, 2\)"),
                                          ((0, 3), r"no examples"),
                                          ((12, 0), r"an empty dimension"),
                                          ((5, 3), r"5 examples; at least 10"),
                                          ((12, 8, 8, 3), r"channels-last")])
def test_bad_shapes(tmp_path, shape, match):
    np.save(tmp_path / "s.npy", np.zeros(shape, dtype=np.float32))
    with pytest.raises(ValueError, match=r"s\.npy: .*" + match):
        load_dataset(tmp_path / "s.npy")


def test_bad_dtypes_and_files(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((12, 2), dtype=np.complex64))
    with pytest.raises(TypeError, match=r"c\.npy: the data has dtype complex64"):
        load_dataset(tmp_path / "c.npy")
    np.save(tmp_path / "o.npy", np.array([[object()]] * 12, dtype=object), allow_pickle=True)
    with pytest.raises(TypeError, match=r"o\.npy: holds Python objects"):
        load_dataset(tmp_path / "o.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"junk\.npy: not a \.npy file"):
        load_dataset(tmp_path / "junk.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: not a readable \.npz file"):
        load_dataset(tmp_path / "junk.npz")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match=r"junk\.safetensors: not a readable \.safetensors file"):
        load_dataset(tmp_path / "junk.safetensors")
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"data\.txt: unsupported data format '\.txt'"):
        load_dataset(tmp_path / "data.txt")
    with pytest.raises(FileNotFoundError, match="no such data file or folder") as e:
        load_dataset(tmp_path / "missing.npy")
    assert e.value.filename == str(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*or the path of a data file"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split must be 'train', 'val', 'test' or 'fit'"):
        load_dataset(tmp_path / "missing.npy", "valid")


def test_bad_labels_and_keys(tmp_path):
    a = rand(20, 2)
    cases = {"short": ({"x": a, "y": np.arange(19)}, r"labels of shape \(19,\); expected \(20,\)"),
             "neg": ({"x": a, "y": np.arange(20) - 1}, r"label -1 of example 0 is negative"),
             "frac": ({"x": a, "y": np.full(20, 0.5)}, r"label 0.5 of example 0 is not an integer"),
             "extra": ({"x": a, "w": a}, r"unexpected 'w'"),
             "twolab": ({"x": a, "y": np.zeros(20), "labels": np.zeros(20)}, r"several label arrays"),
             "onlylab": ({"y": np.zeros(20)}, r"holds only labels")}
    for name, (arrays, match) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(ValueError, match=rf"{name}\.npz: .*{match}"):
            load_dataset(tmp_path / f"{name}.npz")


def test_bad_csv(tmp_path):
    (tmp_path / "r.csv").write_text("a,b\n" + "1,2\n" * 11 + "1,2,3\n")
    with pytest.raises(ValueError, match=r"r\.csv line 13: 3 fields, expected 2"):
        load_dataset(tmp_path / "r.csv")
    (tmp_path / "t.csv").write_text("a,b\n" + "1,2\n" * 11 + "1,x\n")
    with pytest.raises(ValueError, match=r"t\.csv line 13, column 2 \('b'\): 'x' is not a number"):
        load_dataset(tmp_path / "t.csv")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ValueError, match=r"e\.csv: no examples"):
        load_dataset(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"h\.csv: no examples \(only a header\)"):
        load_dataset(tmp_path / "h.csv")


def test_bad_png_folders(tmp_path):
    pytest.importorskip("PIL")
    for i in range(11):
        _png(tmp_path / "mixed" / f"{i:02d}.png", np.zeros((1, 4, 4 if i != 6 else 5), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"06\.png: a 4x5 grayscale image, but 00\.png is 4x4 grayscale"):
        load_dataset(tmp_path / "mixed")
    for i in range(11):
        _png(tmp_path / "chan" / f"{i:02d}.png", np.zeros((3 if i == 3 else 1, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"03\.png: a 4x4 RGB image, but 00\.png is 4x4 grayscale"):
        load_dataset(tmp_path / "chan")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no PNG images"):
        load_dataset(tmp_path / "empty")
    for i in range(3):
        _png(tmp_path / "few" / f"{i}.png", np.zeros((1, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"few: 3 images; at least 10"):
        load_dataset(tmp_path / "few")
    _png(tmp_path / "few" / "cls" / "a.png", np.zeros((1, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"few: holds PNG images and class subfolders"):
        load_dataset(tmp_path / "few")
    rgba = np.full((4, 3, 3), 255, dtype=np.uint8)
    rgba[3, 0, 0] = 10
    for i in range(10):
        _png(tmp_path / "alpha" / f"{i}.png", rgba)
    with pytest.raises(ValueError, match=r"0\.png: has transparent pixels"):
        load_dataset(tmp_path / "alpha")
    from PIL import Image

    (tmp_path / "deep").mkdir()
    for i in range(10):
        Image.fromarray(np.full((3, 3), 40000, dtype=np.uint16)).save(tmp_path / "deep" / f"{i}.png")
    with pytest.raises(ValueError, match=r"0\.png: PNG mode 'I;16' \(e\.g\. 16-bit\) is not supported"):
        load_dataset(tmp_path / "deep")
    files._FORCE_MATPLOTLIB = True
    try:
        with pytest.raises(ValueError, match=r"0\.png: not an 8-bit PNG"):
            load_dataset(tmp_path / "deep")
    finally:
        files._FORCE_MATPLOTLIB = False
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "a.png").write_text("not an image")
    for i in range(10):
        _png(tmp_path / "fake" / f"b{i}.png", np.zeros((1, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"a\.png: not a readable PNG image"):
        load_dataset(tmp_path / "fake")


def test_size_limit_and_image_option(tmp_path, monkeypatch):
    np.save(tmp_path / "v.npy", rand(20, 4))
    with pytest.raises(ValueError, match=r"v\.npy: image=True needs images"):
        load_dataset(tmp_path / "v.npy", image=True)
    with pytest.raises(ValueError, match="n applies to the 2-D toys"):
        load_dataset(tmp_path / "v.npy", n=5)
    monkeypatch.setattr(files, "MAX_BYTES", 100)
    with pytest.raises(ValueError, match=r"v\.npy: \(20, 4\) takes more than 100 bytes"):
        load_dataset(tmp_path / "v.npy")


def test_is_data_path(tmp_path):
    assert files.is_data_path(tmp_path) and files.is_data_path("x.npy") and files.is_data_path("a/b")
    assert not files.is_data_path("mnist") and not files.is_data_path("")


def test_docs_read_once_example(tmp_path, monkeypatch, doc_block):
    # docs/data.md, after the first example (which writes points.npy and imports load_dataset).
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(doc_block("docs/data.md", "points.npy"), scope)  # noqa: S102 - our own documentation
    exec(doc_block("docs/data.md", "with read_once():"), scope)  # noqa: S102
    assert scope["x"].shape == (720, 2) and scope["xv"].shape == (80, 2)
    assert scope["digest"] == files.read_data("points.npy").sha256 and len(scope["digest"]) == 64


def test_docs_data_example(tmp_path, monkeypatch, doc_block):
    # docs/data.md, "Your own data".
    block = doc_block("docs/data.md", "points.npy")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(block, scope)  # noqa: S102 - our own documentation
    assert scope["x"].shape == (800, 2) and scope["y"] is None
    assert scope["xv"].shape == (80, 2) and scope["xt"].shape == (200, 2)
