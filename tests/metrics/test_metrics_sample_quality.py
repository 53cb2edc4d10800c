"""gencore.metrics sample quality: inception score, train-on-synthetic accuracy, memorization."""

import math

import pytest
import torch

from gencore import metrics as M
from gencore.data import load_dataset


def test_inception_score_extremes_and_formula():
    k = 10
    confident_even = torch.eye(k).repeat(20, 1)  # every class, certain
    mean, std = M.inception_score(confident_even, splits=4)
    assert mean.item() == pytest.approx(k) and std.item() == pytest.approx(0, abs=1e-12)
    collapsed = torch.zeros(200, k)
    collapsed[:, 3] = 1
    assert M.inception_score(collapsed, splits=4)[0].item() == pytest.approx(1.0)
    uniform = torch.full((200, k), 1.0 / k)
    assert M.inception_score(uniform, splits=4)[0].item() == pytest.approx(1.0)
    # Direct formula on one split, from logits.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 5, generator=g, dtype=torch.float64) * 2
    p = logits.softmax(1)
    py = p.mean(0)
    want = math.exp((p * (p.log() - py.log())).sum(1).mean().item())
    assert M.inception_score(logits, splits=1)[0].item() == pytest.approx(want, rel=1e-10)
    assert M.inception_score(p, splits=1, from_logits=False)[0].item() == pytest.approx(want, rel=1e-10)


def test_digits_classifier_accuracy_and_scores_on_real_data():
    x_te, y_te = load_dataset("digits", "test")
    clf = M.digits_classifier()
    acc = (clf(x_te).argmax(1) == y_te).float().mean().item()
    assert acc >= 0.95
    is_real, _ = M.digits_inception_score(x_te)
    noise = torch.rand(450, 64, generator=torch.Generator().manual_seed(1))
    is_noise, _ = M.digits_inception_score(noise)
    assert is_real.item() > 7.0 and is_noise.item() < is_real.item() - 3


def test_classification_accuracy_score_real_vs_shuffled_labels():
    x_tr, y_tr = load_dataset("digits", "train")
    x_te, y_te = load_dataset("digits", "test")
    real = M.classification_accuracy_score(x_tr, y_tr, x_te, y_te)
    shuffled = y_tr[torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(2))]
    junk = M.classification_accuracy_score(x_tr, shuffled, x_te, y_te)
    assert real >= 0.95 and junk < 0.3


def test_memorization_report_separates_copies_from_new_data():
    x_tr, _ = load_dataset("digits", "train")
    x_te, _ = load_dataset("digits", "test")
    copies = x_tr[:200] + 0.001
    rep_copy = M.memorization_report(copies, x_tr, x_te)
    assert rep_copy["near_copy_fraction"] > 0.95 and rep_copy["nn_ratio"] < 0.1
    fresh = load_dataset("digits", "test", seed=0)[0][:200]  # held-out digits: not copies
    rep_new = M.memorization_report(fresh, x_tr, x_te[200:])
    assert rep_new["near_copy_fraction"] < 0.1 and 0.7 < rep_new["nn_ratio"] < 1.3


class TestBadInputs:
    def test_inception_bad(self):
        with pytest.raises(ValueError, match="splits must be"):
            M.inception_score(torch.randn(5, 3), splits=6)
        with pytest.raises(ValueError, match=r"\(N, K\)"):
            M.inception_score(torch.randn(5))
        with pytest.raises(ValueError, match="NaN"):
            M.inception_score(torch.tensor([[float("nan"), 0.0]]), splits=1)
        with pytest.raises(ValueError, match="probabilities must be"):
            M.inception_score(torch.tensor([[0.2, 0.2]]), splits=1, from_logits=False)

    def test_memorization_bad(self):
        with pytest.raises(ValueError, match="same dimension"):
            M.memorization_report(torch.randn(4, 3), torch.randn(5, 2), torch.randn(5, 2))
        with pytest.raises(ValueError, match="copy_quantile"):
            M.memorization_report(torch.randn(4, 2), torch.randn(5, 2), torch.randn(5, 2), copy_quantile=1.5)
        with pytest.raises(ValueError, match="samples needs at least 1"):
            M.memorization_report(torch.empty(0, 2), torch.randn(5, 2), torch.randn(5, 2))

    def test_digits_score_bad_dimension(self):
        with pytest.raises(ValueError, match="64 features"):
            M.digits_inception_score(torch.rand(20, 10))


def _softmax_example():
    logits = torch.randn(500, 10, generator=torch.Generator().manual_seed(0)) * 3
    return logits, logits.softmax(1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_inception_score_reads_low_precision_probabilities(dtype):
    """float16 probabilities sum to 1 only within the dtype's rounding: they used to be read
    as logits (issue #15: 1.05 instead of 5.82)."""
    logits, p = _softmax_example()
    want = M.inception_score(p, splits=1)[0].item()
    assert want == pytest.approx(M.inception_score(logits, splits=1)[0].item(), rel=1e-6)
    got = M.inception_score(p.to(dtype), splits=1)[0].item()
    assert got == pytest.approx(want, rel=1e-2)


def test_inception_score_rounded_probabilities_are_not_read_as_logits():
    logits, p = _softmax_example()
    rounded = p.round(decimals=2)  # rows sum to 1 within a few hundredths
    with pytest.raises(ValueError, match="ambiguous.*from_logits=False"):
        M.inception_score(rounded, splits=1)
    want = M.inception_score(p, splits=1)[0].item()
    got = M.inception_score(rounded, splits=1, from_logits=False)[0].item()
    assert got == pytest.approx(want, rel=0.05)
    assert M.inception_score(rounded, splits=1, from_logits=True)[0].item() < 1.2  # as asked: logits
    with pytest.raises(TypeError, match="from_logits"):
        M.inception_score(p, splits=1, from_logits="no")


def test_classification_accuracy_score_label_errors():
    x = torch.rand(6, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"test_y has a negative label \(-1\)"):
        M.classification_accuracy_score(x, y, x, torch.tensor([0, 1, 2, 0, 1, -1]))
    with pytest.raises(ValueError, match=r"train_y has a negative label"):
        M.classification_accuracy_score(x, -y, x, y)
    with pytest.raises(ValueError, match="train_x needs at least 1 sample"):
        M.classification_accuracy_score(torch.empty(0, 3), torch.empty(0, dtype=torch.long), x, y)
    with pytest.raises(ValueError, match=r"train_y must be integer labels of shape \(6,\)"):
        M.classification_accuracy_score(x, torch.empty(0, dtype=torch.long), x, y)
    with pytest.raises(ValueError, match="test_x has 2 features, train_x has 3"):
        M.classification_accuracy_score(x, y, torch.rand(6, 2), y)


def test_bools_are_not_numbers():
    logits, _ = _softmax_example()
    with pytest.raises(TypeError, match="splits must be an int"):
        M.inception_score(logits, splits=True)
    x, y = torch.rand(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(TypeError, match="steps must be an int"):
        M.classification_accuracy_score(x, y, x, y, steps=True)
    with pytest.raises(TypeError, match="lr must be a real number"):
        M.train_classifier(x, y, lr=True)
    with pytest.raises(TypeError, match="n_classes must be an int"):
        M.train_classifier(x, y, n_classes=True)
    with pytest.raises(TypeError, match="copy_quantile"):
        M.memorization_report(x, x, x, copy_quantile=True)
