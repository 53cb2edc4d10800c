"""The metrics (and the data and representation helpers they sit beside) name a bad argument instead of failing
inside torch: a meta tensor ("Tensor.item() cannot be called on meta tensors" before), labels
or samples that are not array-like ("Could not infer dtype"), a generator that is not one
(an AttributeError), a negative count, a tensor where an int goes, a device name that is not
one."""

from __future__ import annotations

import pytest
import torch

import gencore.data as gdata
import gencore.metrics as M
import gencore.representation as R
from gencore.ops.reparam import draw_rng_state

META = torch.empty(8, 3, device="meta")


def x():
    return torch.rand(8, 3) * 0.5 + 0.25


def p():
    return torch.softmax(torch.randn(8, 3), -1)


# (function, the argument given a meta tensor, a call with it in that place)
META_CASES = [
    (M.total_variation, "p", lambda m: M.total_variation(m, p())),
    (M.kl_divergence, "p", lambda m: M.kl_divergence(m, p())),
    (M.f_divergence, "p", lambda m: M.f_divergence(m, p(), "kl")),
    (M.gaussian_kl, "mu0", lambda m: M.gaussian_kl(m[0], torch.eye(3), torch.zeros(3), torch.eye(3))),
    (M.gaussian_kl, "cov1", lambda m: M.gaussian_kl(torch.zeros(3), torch.eye(3), torch.zeros(3), m[:3])),
    (M.mmd, "x", lambda m: M.mmd(m, x())),
    (M.mmd, "y", lambda m: M.mmd(x(), m)),
    (M.median_bandwidth, "x", lambda m: M.median_bandwidth(m, x())),
    (M.median_bandwidth, "y", lambda m: M.median_bandwidth(x(), m)),
    (M.sliced_wasserstein, "x", lambda m: M.sliced_wasserstein(m, x())),
    (M.cross_entropy, "p", lambda m: M.cross_entropy(m, p())),
    (M.negative_log_likelihood, "log_probs", lambda m: M.negative_log_likelihood(m[:, 0])),
    (M.perplexity, "log_probs", lambda m: M.perplexity(m[:, 0])),
    (M.pareto_front, "points", lambda m: M.pareto_front(m)),
    (M.inception_score, "logits_or_probs", lambda m: M.inception_score(m, 2)),
    (M.memorization_report, "samples", lambda m: M.memorization_report(m, x(), x())),
    (M.memorization_report, "heldout", lambda m: M.memorization_report(x(), x(), m)),
    (M.train_classifier, "x", lambda m: M.train_classifier(m, torch.zeros(8, dtype=torch.long), steps=1)),
    (M.eight_gaussians_modes, "samples", lambda m: M.eight_gaussians_modes(m[:, :2])),
    (gdata.dequantize, "levels", lambda m: gdata.dequantize(m)),
    (gdata.decode_caption, "tokens", lambda m: gdata.decode_caption(m.long())),
]


@pytest.mark.parametrize("fn, name, call", META_CASES,
                         ids=[f"{f.__name__}-{n}" for f, n, _ in META_CASES])
def test_a_meta_tensor_is_named(fn, name, call):
    with pytest.raises(ValueError, match=rf"{name} is on the meta device"):
        call(META)


@pytest.mark.parametrize("bad", [None, object()])
def test_labels_and_samples_that_are_not_arrays(bad):
    with pytest.raises(TypeError, match="train_y must be integer labels"):
        M.classification_accuracy_score(x(), bad, x(), torch.zeros(8, dtype=torch.long), steps=1)
    with pytest.raises(TypeError, match="y must be integer labels"):
        M.train_classifier(x(), bad, steps=1)
    for fn in (M.eight_gaussians_modes, M.digits_sample_report):
        with pytest.raises(TypeError, match="samples must be a tensor or array-like"):
            fn(bad)
    with pytest.raises(TypeError, match="samples must be a tensor or array-like"):
        M.toy_sample_report(bad, "8gaussians")
    with pytest.raises(TypeError, match="decode_caption: tokens must be"):
        gdata.decode_caption(bad)


def test_counts_generators_splits_and_devices():
    for fn in (M.collapsed_8gaussians, M.ring_8gaussians):
        with pytest.raises(ValueError, match="n must be an int >= 1, got -1"):
            fn(-1)
        with pytest.raises(TypeError, match="n must be an int, got list"):
            fn([])
        with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
            fn(4, 0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got str"):
        M.sliced_wasserstein(x(), x(), generator="x")
    with pytest.raises(TypeError, match="splits must be an int, got Tensor"):
        M.digits_inception_score(torch.rand(20, 64), splits=torch.ones(3))
    with pytest.raises(ValueError, match=r"x must be \(N, D\) samples, got shape \(\)"):
        M.median_bandwidth(torch.tensor(1.0), x())
    with pytest.raises(ValueError, match="device 'x' is not a device"):
        M.digits_classifier("x")
    with pytest.raises(TypeError, match="device must be a torch.device or a device name"):
        M.digits_classifier(2.5)
    with pytest.raises(ValueError, match="gencore: device 'x' is not a device"):
        draw_rng_state("x")
    with pytest.raises(TypeError, match="dequantize: generator must be a torch.Generator"):
        gdata.dequantize(torch.zeros(3), 7)
    with pytest.raises(TypeError, match="labels must be integer labels of shape"):
        M.digits_sample_report(torch.rand(20, 64), labels=[object()] * 20)
    with pytest.raises(ValueError, match="samples is empty"):
        M.digits_sample_report(torch.empty(0, 64))


def test_median_bandwidth_takes_what_it_took():
    """Same numbers as the pooled median before the checks; 1-D values are N samples of 1-D."""
    a, b = torch.randn(30, 2, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    z = torch.cat([a, b])
    d = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")
    expected = d[~torch.eye(50, dtype=torch.bool)].median()
    assert torch.equal(M.median_bandwidth(a, b), expected)
    assert torch.equal(M.median_bandwidth(a[:, 0], b[:, 0]), M.median_bandwidth(a[:, :1], b[:, :1]))


def test_dequantize_draws_where_the_generator_lives():
    """The noise comes from the generator's device and follows the levels (before, levels on
    CUDA were added to noise drawn on the CPU, which torch refuses)."""
    levels = torch.arange(12.0).reshape(3, 4)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    u = torch.rand(levels.shape, generator=g2)
    assert torch.equal(gdata.dequantize(levels, g1), (levels + u) / 17)
    if torch.cuda.is_available():
        out = gdata.dequantize(levels.cuda(), torch.Generator().manual_seed(3))
        assert out.is_cuda and torch.equal(out.cpu(), (levels + u) / 17)


def test_representation_helpers_name_their_arguments():
    feats, y = torch.randn(10, 4), torch.arange(10) % 2
    for bad in (None, object()):
        with pytest.raises(TypeError, match="knn_accuracy: train_feats must be a tensor or array-like"):
            R.knn_accuracy(bad, y, feats, y)
        with pytest.raises(TypeError, match="linear_probe: train_y must be a tensor or array-like"):
            R.linear_probe(feats, bad, feats, y)
        with pytest.raises(TypeError, match="nearest: candidates must be a tensor or array-like"):
            R.nearest(feats, bad)
        with pytest.raises(TypeError, match="retrieval_recall: key_feats must be a tensor or array-like"):
            R.retrieval_recall(feats, bad)
    with pytest.raises(ValueError, match="knn_accuracy: train_feats is on the meta device"):
        R.knn_accuracy(torch.empty(10, 4, device="meta"), y, feats, y)
    # retrieval_chance: an IndexError, a ZeroDivisionError or a broadcast error before
    for bad in (3, torch.empty(0, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), [0.5, 1.5]):
        with pytest.raises(ValueError, match="retrieval_chance: query_ids must be a non-empty 1-D tensor of integer"):
            R.retrieval_chance(bad, [0, 1, 2])
    assert R.retrieval_chance([0, 1], [0, 1, 1, 2], k=1) == {"recall@1": pytest.approx((1 / 4 + 2 / 4) / 2)}
    with pytest.raises(TypeError, match="caption_arithmetic: model must have encode_image and encode_text"):
        R.caption_arithmetic(torch.nn.Linear(2, 2), torch.rand(4, 1, 8, 8), torch.zeros(4, 3, dtype=torch.long))
