"""gencore.data: the embedded digits dataset."""

import pytest
import torch

from gencore.data import DIGITS_LEVELS, load_dataset


def test_digits_split_sizes_and_range():
    x_tr, y_tr = load_dataset("digits", "train")
    x_te, y_te = load_dataset("digits", "test")
    assert x_tr.shape == (1347, 64) and x_te.shape == (450, 64)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    for x in (x_tr, x_te):
        assert x.min() >= 0 and x.max() < 1
    # Stratified: every class has the same share (within one example) in both splits.
    share_tr = torch.bincount(y_tr, minlength=10) / len(y_tr)
    share_te = torch.bincount(y_te, minlength=10) / len(y_te)
    assert (share_tr - share_te).abs().max() < 1 / 450 + 1e-6


def test_dequantization_keeps_the_levels():
    x, _ = load_dataset("digits", "train")
    levels = torch.floor(x.double() * DIGITS_LEVELS)
    assert levels.min() >= 0 and levels.max() <= 16
    frac = x.double() * DIGITS_LEVELS - levels
    assert 0.45 < frac.mean() < 0.55  # u ~ U[0, 1)


def test_test_split_is_repeatable_and_train_follows_seed():
    a, _ = load_dataset("digits", "test", seed=1)
    b, _ = load_dataset("digits", "test", seed=2)
    assert torch.equal(a, b)
    c, _ = load_dataset("digits", "train", seed=1)
    d, _ = load_dataset("digits", "train", seed=2)
    e, _ = load_dataset("digits", "train", seed=1)
    assert not torch.equal(c, d) and torch.equal(c, e)
    assert torch.equal(torch.floor(c * 17), torch.floor(d * 17))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split must be 'train', 'val', 'test' or 'fit'"):
        load_dataset("digits", "valid")


def test_levels_and_fresh_dequantization():
    from gencore.data import dequantize

    levels, _ = load_dataset("digits", "train", dequantized=False)
    x, _ = load_dataset("digits", "train")
    assert torch.equal(levels, torch.floor(x * 17))
    a = dequantize(levels, torch.Generator().manual_seed(0))
    b = dequantize(levels, torch.Generator().manual_seed(1))
    assert torch.equal(torch.floor(a * 17), levels) and not torch.equal(a, b)


def test_integer_arguments_refuse_bools_and_fractions():
    from gencore.data import dequantize, load_dataset, sample_toy

    for bad in (True, 1.5):
        with pytest.raises(TypeError, match="seed must be an int"):
            load_dataset("digits", "train", seed=bad)
        with pytest.raises(TypeError, match="n_levels must be an int"):
            dequantize(torch.zeros(3), n_levels=bad)
        with pytest.raises(TypeError, match="sample_toy: n must be an int"):
            sample_toy("moons", bad)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        load_dataset("digits", "train", seed=-1)
    with pytest.raises(TypeError, match="floating tensor"):
        dequantize(torch.zeros(3, dtype=torch.int64))
