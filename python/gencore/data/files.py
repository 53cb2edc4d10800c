"""Your own data: ``load_dataset(PATH)`` and ``gencore train MODEL --data PATH``.

Formats (by extension; a folder is read as PNG images):

* ``.npy``: one array, the examples; no labels.
* ``.npz`` / ``.safetensors``: the examples and, optionally, labels. A single array (any
  name) is the examples; with labels, name them ``y``, ``labels`` or ``label`` and the
  examples ``x``, ``data`` or ``images``. Any other array is an error (so nothing is
  silently ignored).
* ``.csv``: one example per row, comma-separated numbers. The first row is a header when
  one of its fields is not a number; a header column named ``label`` or ``y`` (any case)
  holds the labels, every other column is a feature. Blank lines are skipped.
* a folder of ``.png`` images (grayscale or RGB, 8-bit, all of one size; an alpha channel
  is allowed only when every pixel is opaque): either the images themselves (no labels) or
  one subfolder per class holding the images (labels: the position of the subfolder's name
  in sorted order, so ``cat/`` is 0 and ``dog/`` is 1). Files that are not ``.png`` and
  names starting with ``.`` are skipped.

Shapes: ``(N, D)`` arrays are vectors; ``(N, H, W)`` and ``(N, C, H, W)`` arrays are images
(``(N, H, W)`` gets one channel), as are PNG folders. Labels are integers ``>= 0``, or class
names (strings), which are numbered in sorted order. Values: floating-point, integer and
bool arrays are used as they are (cast to floats), with one exception: 8-bit pixel levels
(PNG images and ``uint8`` arrays) are dequantized like the digits, ``(level + u) / 256``
with ``u ~ U[0, 1)``, to values in ``[0, 1)`` (``dequantized=False`` returns the levels
0..255; :func:`gencore.data.dequantize` with ``n_levels=256`` dequantizes them per batch).

Checks (errors name the file and the problem): missing path (``FileNotFoundError``);
unknown extension, unreadable file, 1-D or more than 4-D data, channels-last images, no
examples, fewer than :data:`MIN_EXAMPLES`, an empty feature dimension, NaN or inf values,
labels of the wrong length / negative / fractional, mixed image sizes or channels, more
than :data:`MAX_BYTES` as float32 (``ValueError``); non-numeric data or labels
(``TypeError``).

Splits (:func:`split_indices`): a seeded permutation (seed :data:`SPLIT_SEED`, the same for
every run) sends ``max(1, N // 5)`` examples (20%) to ``"test"`` and the rest to ``"train"``;
``"val"`` is ``max(1, len(train) // 10)`` (10%) of ``"train"`` and ``"fit"`` the rest of
``"train"`` (train = fit + val). Within a split the examples keep the file's order. The
split depends only on N, so the held-out examples never change between runs or seeds.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format

__all__ = ["FORMATS", "DATA_KEYS", "LABEL_KEYS", "CSV_LABEL_COLUMNS", "MIN_EXAMPLES", "MAX_BYTES",
           "PIXEL_LEVELS", "SPLIT_SEED", "TEST_FRACTION", "VAL_FRACTION", "SPLITS", "UserData",
           "is_data_path", "read_data", "read_once", "example_shape", "data_files", "split_indices",
           "load_user_dataset"]

FORMATS = (".npy", ".npz", ".csv", ".safetensors")
DATA_KEYS = ("x", "data", "images")
LABEL_KEYS = ("y", "labels", "label")
CSV_LABEL_COLUMNS = ("label", "y")
#: The fewest examples a file may hold: the split needs at least one per split.
MIN_EXAMPLES = 10
#: The most a dataset may take as float32 (bytes).
MAX_BYTES = 8 * 2**30
PIXEL_LEVELS = 256
SPLIT_SEED = 0
TEST_FRACTION = 0.2  # max(1, N // 5)
VAL_FRACTION = 0.1   # of the train split: max(1, len(train) // 10)
SPLITS = ("train", "val", "test", "fit")
_VAL_DEQUANT_SEED = 54321
_TEST_DEQUANT_SEED = 12345


@dataclass
class UserData:
    """A data file as read and checked: ``x`` ``(N, D)`` or ``(N, C, H, W)`` (``uint8``
    when ``levels``, else float64), ``y`` int64 ``(N,)`` or None, ``classes`` the class
    names when the labels were names (PNG subfolders, strings), ``image`` whether ``x`` holds
    images, ``levels`` whether it holds 8-bit pixel levels, ``sha256`` the fingerprint of
    the bytes it was decoded from (of each file: its name (a file's own, a folder's images'
    relative to the folder), size and contents' sha256)."""

    path: Path
    x: np.ndarray
    y: np.ndarray | None
    image: bool
    levels: bool
    classes: tuple | None = None
    sha256: str | None = None


def is_data_path(name) -> bool:
    """Whether ``load_dataset(name)`` reads a file: a ``PathLike``, or a string that has a
    path separator, ends in one of :data:`FORMATS` or names an existing file or folder."""
    if isinstance(name, os.PathLike):
        return True
    if not isinstance(name, str) or not name:
        return False
    p = Path(name).expanduser()
    return "/" in name or os.sep in name or p.suffix.lower() in FORMATS or p.exists()


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def read_data(path) -> UserData:
    """Read and check a data file or PNG folder (module docstring). Every file is read once,
    as bytes that are hashed (:attr:`UserData.sha256`) and decoded, so the fingerprint is
    that of the data returned. Inside :func:`read_once`, a path read before is not read
    again."""
    p = Path(path).expanduser()
    if not p.exists():
        import errno

        raise FileNotFoundError(errno.ENOENT, "no such data file or folder", str(p))
    d = _held_read(p)
    if d is None:
        d = _read_data(p)
        held = _HELD.get()
        if held is not None:
            held[p.absolute()] = d
    return d


def _held_read(p: Path) -> UserData | None:
    """The read of ``p`` that a :func:`read_once` block holds, or None. One spelling, one
    entry: the fingerprint names the files as given."""
    held = _HELD.get()
    return None if held is None else held.get(p.absolute())


@contextlib.contextmanager
def read_once():
    """Within the block, :func:`read_data` (and so ``load_dataset(PATH, split)`` for every
    split) reads each path once and returns that read again: the splits of one run come from
    one read of the files, and its :attr:`UserData.sha256` fingerprints those very bytes
    (``gencore train`` records it). The reads are released when the block ends; nested
    blocks share the outer one's."""
    if _HELD.get() is not None:
        yield
        return
    held = {}
    token = _HELD.set(held)
    try:
        yield
    finally:
        held.clear()  # also for a task or context copied inside the block
        _HELD.reset(token)


def example_shape(path) -> tuple[tuple[int, ...], bool]:
    """The shape of one example of ``read_data(path).x`` (``(C, H, W)`` for images, ``(D,)``
    for vectors) and whether it is an image, reading as little as it can: a PNG folder's
    first image, a ``.npy`` file's header; other files (and a path :func:`read_once` holds)
    as :func:`read_data` reads them. For the picture of a run's samples, not a check of the
    data: the other files and examples are not read."""
    p = Path(path).expanduser()
    d = _held_read(p)
    if d is not None:
        return tuple(d.x.shape[1:]), d.image
    if p.is_dir():
        files = _png_files(p)[0]
        return _png_levels(files[0], _file_bytes(files[0])[0]).shape, True
    if p.suffix.lower() == ".npy" and p.is_file():
        shape = _npy_shape(p)
        channels_last = shape is not None and len(shape) == 4 and shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4)
        if shape is not None and 2 <= len(shape) <= 4 and not channels_last:  # else read_data names the problem
            return ((1, *shape[1:]) if len(shape) == 3 else tuple(shape[1:])), len(shape) >= 3
    d = read_data(p)
    return tuple(d.x.shape[1:]), d.image


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """``(shape, fortran_order, dtype)`` from a ``.npy`` header at ``f``'s position (left
    just past it), or None for a header this reader does not know."""
    try:
        version = npy_format.read_magic(f)
        read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
        return read[version](f) if version in read else None
    except Exception:  # not a .npy header
        return None


def _npy_shape(p: Path) -> tuple[int, ...] | None:
    with open(p, "rb") as f:
        header = _npy_header(f)
    return None if header is None or any(n < 0 for n in header[0]) else tuple(header[0])


_HELD: contextvars.ContextVar[dict | None] = contextvars.ContextVar("gencore_read_once", default=None)


def _file_bytes(f: Path) -> tuple[bytes, str]:
    """A file's contents and their sha256 (hex)."""
    try:
        buf = f.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:  # permissions, a device error...
        raise ValueError(f"{f}: cannot be read ({e.strerror or e})") from None
    return buf, hashlib.sha256(buf).hexdigest()


def _fingerprint(root: Path, files: list[tuple[Path, int, str]]) -> str:
    """The sha256 of a dataset: of each file, its name relative to ``root``, its size and
    the sha256 of its contents."""
    digest = hashlib.sha256()
    for f, size, content in files:
        name = f.name if f == root else str(f.relative_to(root))
        digest.update(f"{name}\0{size}\0{content}\n".encode())
    return digest.hexdigest()


def _read_data(p: Path) -> UserData:
    if p.is_dir():
        return _read_png_folder(p)
    ext = p.suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"{p}: unsupported data format {ext or '(no extension)'!r}; gencore reads "
                         f"{', '.join(FORMATS)} files and folders of .png images")
    buf, content = _file_bytes(p)
    sha256 = _fingerprint(p, [(p, len(buf), content)])
    if ext == ".csv":
        x, y = _read_csv(p, buf)
    else:
        if ext == ".npy":  # a view of the bytes, not a copy
            arrays = {"x": _read_npy(p, buf)}
        elif ext == ".npz":
            arrays = _read_npz(p, buf)
        else:
            arrays = _read_safetensors(p, buf)
        x, y = _pick(arrays, p)
        del arrays
    # The bytes go before _finish's float64 copy (a .npy's array still holds them): the peak
    # stays the array's and its copy's, as when numpy read the file itself.
    del buf
    d = _finish(p, x, y)
    d.sha256 = sha256
    return d


def _read_npy(p: Path, buf: bytes) -> np.ndarray:
    """The array of a ``.npy`` file's bytes: a read-only view of ``buf`` (so reading a file
    takes its size once, as ``np.load`` of the path does), or ``np.load``'s copy for a header
    version the view does not know."""
    if buf[:6] != b"\x93NUMPY":
        raise ValueError(f"{p}: not a .npy file (no NumPy header)")
    f = io.BytesIO(buf)
    header = _npy_header(f)
    if header is not None and not header[2].hasobject:
        shape, fortran, dtype = header
        if any(n < 0 for n in shape):  # (a crafted header: frombuffer and reshape would take -1 as "the rest")
            raise ValueError(f"{p}: not a readable .npy file (its header announces the shape {shape}: negative "
                             "dimensions are not allowed)")
        count = math.prod(shape)
        if len(buf) - f.tell() < count * dtype.itemsize:
            raise ValueError(f"{p}: not a readable .npy file (truncated: its header announces {shape} {dtype} "
                             f"values, {count * dtype.itemsize} bytes, and {len(buf) - f.tell()} follow)")
        a = np.frombuffer(buf, dtype=dtype, count=count, offset=f.tell())
        return a.reshape(shape[::-1]).transpose() if fortran else a.reshape(shape)
    try:
        return np.load(io.BytesIO(buf), allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise TypeError(f"{p}: holds Python objects (dtype object); save a numeric array") from None
        raise ValueError(f"{p}: not a readable .npy file ({e})") from None


def _read_npz(p: Path, buf: bytes) -> dict:
    if buf[:2] != b"PK":
        raise ValueError(f"{p}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(io.BytesIO(buf), allow_pickle=False) as z:
            out = {}
            for k in z.files:
                try:
                    out[k] = z[k]
                except ValueError as e:
                    if "allow_pickle" in str(e):
                        raise TypeError(f"{p}: array {k!r} holds Python objects (dtype object); save numeric "
                                        "arrays") from None
                    raise
            return out
    except TypeError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError...
        raise ValueError(f"{p}: not a readable .npz file ({type(e).__name__}: {e})") from None


def _read_safetensors(p: Path, buf: bytes) -> dict:
    try:
        from safetensors.torch import load

        tensors = load(buf)
    except Exception as e:  # SafetensorError...
        raise ValueError(f"{p}: not a readable .safetensors file ({e})") from None
    out = {}
    for k, t in tensors.items():
        if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
            t = t.float()
        out[k] = t.numpy()
    return out


def _pick(arrays: dict, p: Path):
    """The examples and the labels among a file's named arrays."""
    keys = list(arrays)
    if not keys:
        raise ValueError(f"{p}: holds no arrays")
    labels = [k for k in keys if k in LABEL_KEYS]
    rest = [k for k in keys if k not in LABEL_KEYS]
    if len(labels) > 1:
        raise ValueError(f"{p}: several label arrays ({', '.join(labels)}); keep one")
    if not rest:
        raise ValueError(f"{p}: holds only labels ({labels[0]!r}); name the examples "
                         f"{' or '.join(repr(k) for k in DATA_KEYS)}")
    if len(rest) > 1:
        named = [k for k in rest if k in DATA_KEYS]
        extra = [k for k in rest if k not in named[:1]] if len(named) == 1 else rest
        raise ValueError(f"{p}: cannot tell which arrays to use: unexpected {', '.join(repr(k) for k in extra)}; "
                         f"store the examples as 'x' and, optionally, the labels as 'y'")
    return arrays[rest[0]], (arrays[labels[0]] if labels else None)


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _read_csv(p: Path, buf: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first cell,
        # where it would hide a "label" header or make a numeric first row a "header".
        # newline="": the csv module sees the line endings as stored (quoted newlines). Decoded
        # as it is parsed: the file's text is never held whole.
        text = io.TextIOWrapper(io.BytesIO(buf), encoding="utf-8-sig", newline="")
        rows = [(i + 1, r) for i, r in enumerate(csv.reader(text)) if any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a text CSV file") from None
    except csv.Error as e:
        raise ValueError(f"{p}: not a readable CSV file ({e})") from None
    if not rows:
        raise ValueError(f"{p}: no examples (the file is empty)")
    first = rows[0][1]
    header = None
    if any(_number(c) is None for c in first):
        header = [c.strip() for c in first]
        rows = rows[1:]
    width = len(header) if header is not None else len(first)
    label_cols = [i for i, c in enumerate(header or []) if c.lower() in CSV_LABEL_COLUMNS]
    if len(label_cols) > 1:
        raise ValueError(f"{p}: several label columns ({', '.join(header[i] for i in label_cols)}); keep one")
    lab = label_cols[0] if label_cols else None
    if not rows:
        raise ValueError(f"{p}: no examples (only a header)")
    feats = [i for i in range(width) if i != lab]
    if not feats:
        raise ValueError(f"{p}: no feature columns (only the label column {header[lab]!r})")
    x = np.empty((len(rows), len(feats)), dtype=np.float64)
    labels = []
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{p} line {line}: {len(row)} fields, expected {width}"
                             + (" (as in the header)" if header is not None else " (as in the first row)"))
        for j, i in enumerate(feats):
            v = _number(row[i])
            if v is None:
                name = f" ({header[i]!r})" if header is not None else ""
                what = "an empty field" if not row[i].strip() else f"{row[i]!r} is not a number"
                raise ValueError(f"{p} line {line}, column {i + 1}{name}: {what}")
            x[r, j] = v
        if lab is not None:
            labels.append(row[lab].strip())
    y = None
    if lab is not None:
        if any(not s for s in labels):
            line = rows[labels.index("")][0]
            raise ValueError(f"{p} line {line}: empty label")
        nums = [_number(s) for s in labels]
        y = np.array(nums, dtype=np.float64) if all(v is not None for v in nums) else np.array(labels)
    return x, y


def _png_levels(f: Path, buf: bytes) -> np.ndarray:
    """One PNG (``f``, whose contents are ``buf``) as 8-bit levels ``(C, H, W)``, C = 1
    (grayscale) or 3 (RGB)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        Image = None
    if Image is not None and not _FORCE_MATPLOTLIB:
        try:
            with Image.open(io.BytesIO(buf)) as im:
                if im.format != "PNG":
                    raise ValueError(f"{f}: not a PNG image (a {im.format} file named .png)")
                if im.mode in ("1", "L", "LA", "RGB", "RGBA", "P", "PA"):
                    if im.mode == "1":
                        im = im.convert("L")
                    elif im.mode in ("P", "PA"):
                        im = im.convert("RGBA")
                    a = np.asarray(im)
                else:
                    raise ValueError(f"{f}: PNG mode {im.mode!r} (e.g. 16-bit) is not supported; save 8-bit "
                                     "grayscale or RGB")
        except ValueError:
            raise
        except Exception as e:  # PIL.UnidentifiedImageError, truncated files...
            raise ValueError(f"{f}: not a readable PNG image ({e})") from None
    else:
        import matplotlib.image

        try:
            a = matplotlib.image.imread(io.BytesIO(buf), format="png")
        except Exception as e:
            raise ValueError(f"{f}: not a readable PNG image ({e})") from None
        if a.dtype != np.uint8:  # floats k / 255 for 8-bit PNGs (k / 65535 for 16-bit ones)
            scaled = np.asarray(a, dtype=np.float64) * 255
            if np.abs(scaled - np.round(scaled)).max() > 1e-3:
                raise ValueError(f"{f}: not an 8-bit PNG (e.g. 16-bit); save 8-bit grayscale or RGB")
            a = np.round(scaled).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] in (2, 4):
        if (a[..., -1] != 255).any():
            raise ValueError(f"{f}: has transparent pixels; save it without an alpha channel")
        a = a[..., :-1]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        return a[None]
    return np.ascontiguousarray(a.transpose(2, 0, 1))


_FORCE_MATPLOTLIB = False  # tests: read PNGs as a machine without Pillow would


def data_files(path) -> list[Path]:
    """The files :func:`read_data` reads for ``path``: the file itself, or a folder's PNG
    images (top level or class subfolders; hidden and other files are not data)."""
    p = Path(path).expanduser()
    return _png_files(p)[0] if p.is_dir() else [p]


def _png_files(p: Path) -> tuple[list[Path], list[int] | None, tuple | None]:
    """A PNG folder's images in order, their labels and class names (None without class
    subfolders), checked for a layout read_data can use."""
    def visible(folder):
        return sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=lambda e: e.name)

    def pngs(folder):
        return [e for e in visible(folder) if e.is_file() and e.suffix.lower() == ".png"]

    top = pngs(p)
    subdirs = [e for e in visible(p) if e.is_dir()]
    class_dirs = [d for d in subdirs if pngs(d)]
    if top and class_dirs:
        raise ValueError(f"{p}: holds PNG images and class subfolders of images ({class_dirs[0].name}/); use "
                         "one or the other")
    if top:
        files, labels, classes = top, None, None
    elif class_dirs:
        empty = [d for d in subdirs if d not in class_dirs]
        if empty:
            raise ValueError(f"{empty[0]}: class folder holds no PNG images")
        classes = tuple(d.name for d in class_dirs)
        files, labels = [], []
        for k, d in enumerate(class_dirs):
            found = pngs(d)
            files += found
            labels += [k] * len(found)
    else:
        raise ValueError(f"{p}: no PNG images (a folder of .png files, or of class subfolders of .png files)")
    return files, labels, classes


def _read_png_folder(p: Path) -> UserData:
    files, labels, classes = _png_files(p)
    if len(files) < MIN_EXAMPLES:
        raise ValueError(f"{p}: {len(files)} images; at least {MIN_EXAMPLES} are needed for the "
                         "train / val / test split")
    hashes = []

    def levels(f):
        buf, content = _file_bytes(f)
        hashes.append((f, len(buf), content))
        return _png_levels(f, buf)

    first = levels(files[0])
    if len(files) * first.size * 4 > MAX_BYTES:
        raise ValueError(f"{p}: {len(files)} images of {first.shape} take more than {MAX_BYTES} bytes as "
                         "float32 (gencore.data.files.MAX_BYTES)")
    x = np.empty((len(files), *first.shape), dtype=np.uint8)
    x[0] = first
    for i, f in enumerate(files[1:], 1):
        a = levels(f)
        if a.shape != first.shape:
            def desc(s):
                return f"{s[1]}x{s[2]} {'grayscale' if s[0] == 1 else 'RGB'}"
            raise ValueError(f"{f}: a {desc(a.shape)} image, but {files[0].name} is {desc(first.shape)}; all "
                             "images must have one size and the same channels (grayscale or RGB)")
        x[i] = a
    y = None if labels is None else np.asarray(labels, dtype=np.int64)
    return UserData(p, x, y, image=True, levels=True, classes=classes, sha256=_fingerprint(p, hashes))


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def _finish(p: Path, x, y) -> UserData:
    x = np.asarray(x)
    kind = x.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"{p}: the data has dtype {x.dtype}; expected numbers (float, int, uint8 or bool)")
    if x.ndim < 2 or x.ndim > 4:
        raise ValueError(f"{p}: the data has shape {x.shape}; expected (N, D) vectors, (N, H, W) or "
                         "(N, C, H, W) images" + (" (one feature: reshape to (N, 1))" if x.ndim == 1 else ""))
    if x.shape[0] == 0:
        raise ValueError(f"{p}: no examples (shape {x.shape})")
    if 0 in x.shape[1:]:
        raise ValueError(f"{p}: an empty dimension in shape {x.shape}")
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise ValueError(f"{p}: images of shape {x.shape} look channels-last (N, H, W, C); store them as "
                         "(N, C, H, W)")
    if x.shape[0] < MIN_EXAMPLES:
        raise ValueError(f"{p}: {x.shape[0]} examples; at least {MIN_EXAMPLES} are needed for the "
                         "train / val / test split")
    if x.size * 4 > MAX_BYTES:
        raise ValueError(f"{p}: {x.shape} takes more than {MAX_BYTES} bytes as float32 "
                         "(gencore.data.files.MAX_BYTES)")
    if kind == "f":
        bad = ~np.isfinite(x.reshape(len(x), -1))
        if bad.any():
            row = int(np.flatnonzero(bad.any(1))[0])
            raise ValueError(f"{p}: {int(bad.sum())} non-finite values (NaN or inf) in the data, the first in "
                             f"example {row}")
        # The models train in float32: a finite float64 beyond its range would become inf.
        big = np.abs(x.reshape(len(x), -1)) > np.finfo(np.float32).max
        if big.any():
            row = int(np.flatnonzero(big.any(1))[0])
            raise ValueError(f"{p}: {int(big.sum())} values beyond float32's range (|x| > "
                             f"{np.finfo(np.float32).max:.4g}; the models compute in float32), the first in "
                             f"example {row}")
    levels = x.dtype == np.uint8
    image = x.ndim >= 3
    if x.ndim == 3:
        x = x[:, None]
    if not levels:
        x = x.astype(np.float64)
    labels, classes = (None, None) if y is None else _labels(p, y, len(x))
    return UserData(p, x, labels, image=image, levels=levels, classes=classes)


def _labels(p: Path, y, n: int):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{p}: labels of shape {y.shape}; expected ({n},), one per example")
    if y.dtype.kind in "US":
        classes = tuple(sorted(set(y.tolist())))
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[c] for c in y.tolist()], dtype=np.int64), classes
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{p}: labels have dtype {y.dtype}; expected integers (or class names)")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            i = int(np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))[0])
            raise ValueError(f"{p}: label {y[i].item()!r} of example {i} is not an integer")
    if (y < 0).any():
        i = int(np.flatnonzero(y < 0)[0])
        raise ValueError(f"{p}: label {y[i].item()!r} of example {i} is negative; labels are 0, 1, 2, ...")
    return y.astype(np.int64), None


# ---------------------------------------------------------------------------------------------
# Splits and load_dataset
# ---------------------------------------------------------------------------------------------

def split_indices(n: int, *, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """The held-out split of ``n`` examples (module docstring): ``{"train", "val", "test",
    "fit"}`` -> sorted int64 indices; train and test are disjoint and cover ``0..n-1``,
    val and fit are disjoint and cover train."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 3:
        raise ValueError(f"split_indices: n must be an int >= 3, got {n!r}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, n // 5)
    n_val = max(1, (n - n_test) // 10)
    if n - n_test - n_val < 1:
        raise ValueError(f"split_indices: {n} examples are too few for train / val / test")
    return {"train": np.sort(perm[n_test:]), "val": np.sort(perm[n_test:n_test + n_val]),
            "test": np.sort(perm[:n_test]), "fit": np.sort(perm[n_test + n_val:])}


def load_user_dataset(path, split: str = "train", seed: int = 0, *, dtype=torch.float32, image: bool = False,
                      dequantized: bool = True):
    """``load_dataset(path, ...)`` for a data file or PNG folder: ``(x, y)`` (``y`` None
    without labels); see :func:`gencore.data.load_dataset` and the module docstring."""
    if split not in SPLITS:
        raise ValueError(f"load_dataset: split must be 'train', 'val', 'test' or 'fit', got {split!r}")
    d = read_data(path)
    if image and not d.image:
        raise ValueError(f"{d.path}: image=True needs images ((N, H, W) or (N, C, H, W) arrays, or PNGs); "
                         f"this file holds vectors of shape {d.x.shape}")
    idx = split_indices(len(d.x))[split]
    x = d.x[idx]
    if d.levels and dequantized:
        # train and fit share one draw (fit is a subset of train); val and test have fixed seeds.
        s = {"val": _VAL_DEQUANT_SEED, "test": _TEST_DEQUANT_SEED}.get(split, seed)
        u = np.random.default_rng(s).random(d.x.shape)[idx]
        t = torch.as_tensor((x + u) / PIXEL_LEVELS, dtype=dtype)
        # (255 + u) / 256 can round up to 1 in a narrower dtype: keep [0, 1).
        t = t.clamp_(max=1 - torch.finfo(dtype).eps / 2)
    else:
        t = torch.as_tensor(x.astype(np.float64), dtype=dtype)
    if d.image and not image:
        t = t.reshape(len(t), -1)
    y = None if d.y is None else torch.as_tensor(d.y[idx])
    return t, y
