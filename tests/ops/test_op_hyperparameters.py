"""The ops' scalar hyper-parameters and arguments at the edges: values that are finite as
Python floats but not in the dtype the kernels compute in (1e39 is inf in float32),
integers beyond any float or int64, tensors where ``None`` or a float was passed, and
torch.compile with a float hyper-parameter that changes between calls. Each gets an error
that names the argument and the problem, or (a compiled call) the eager result."""

import math

import pytest
import torch

from gencore import ops, reference

F32_MAX = torch.finfo(torch.float32).max


def _pair(dtype=torch.float32, n=5, d=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)


def _spline_params(shape, k=4, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, k, generator=g, dtype=dtype), torch.randn(*shape, k, generator=g, dtype=dtype),
            torch.randn(*shape, k - 1, generator=g, dtype=dtype))


def _float_calls(value):
    """(argument name, call) of every op with a float hyper-parameter set to ``value``,
    on float32 inputs."""
    a, b = _pair()
    w, h, d = _spline_params(a.shape)
    return [
        ("clamp", lambda: ops.affine_coupling(a, a, b, clamp=value)),
        ("clamp", lambda: ops.masked_affine_coupling(a, b[:, :2], clamp=value)),
        ("logit_scale", lambda: ops.clip_loss(a, b, value)),
        ("temperature", lambda: ops.nt_xent_loss(a, b, temperature=value)),
        ("scale", lambda: ops.contrastive_cross_entropy(a, b, value, torch.arange(5))),
        ("logit_scale", lambda: ops.sigmoid_contrastive_loss(a, b, value, 0.0)),
        ("logit_bias", lambda: ops.sigmoid_contrastive_loss(a, b, 1.0, value)),
        ("2 \\* bound", lambda: ops.rq_spline(a, w, h, d, bound=value)),
    ]


@pytest.mark.parametrize("index", range(8))
def test_a_float_beyond_float32_is_refused_for_float32_inputs(index):
    # Before: inf in the kernels' float32, so NaN / inf results (or "got inf" for a value
    # the caller never wrote).
    name, call = _float_calls(1e39)[index]
    with pytest.raises(ValueError, match=f"{name} = .* is not finite in float32"):
        call()


def test_a_negative_bias_beyond_float32_is_refused():
    a, b = _pair()
    with pytest.raises(ValueError, match="logit_bias = -1e\\+39 is not finite in float32"):
        ops.sigmoid_contrastive_loss(a, b, 1.0, -1e39)


@pytest.mark.parametrize("index", range(8))
def test_an_int_beyond_any_float_is_refused(index):
    name, call = _float_calls(10**400)[index]
    name = name.replace("2 \\* ", "")
    with pytest.raises(ValueError, match=f"{name} must be .*an int of 1329 bits"):
        call()


def test_float64_inputs_take_the_float64_range():
    a, b = _pair(torch.float64)
    loss = ops.clip_loss(a, b, 1e300)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, reference.clip_loss(a, b, 1e300))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_float64_tensor_scale_or_bias_beyond_the_kernels_dtype_is_refused(dtype):
    a, b = _pair(dtype)
    huge = torch.tensor(1e300, dtype=torch.float64)
    if dtype == torch.float64:  # representable: accepted
        assert torch.isfinite(ops.sigmoid_contrastive_loss(a, b, torch.tensor(1.0, dtype=torch.float64), -huge))
        return
    with pytest.raises(ValueError, match="logit_scale = 1e\\+300 is not finite in Float"):
        ops.clip_loss(a, b, huge)
    with pytest.raises(ValueError, match="logit_bias = -1e\\+300 is not finite in Float"):
        ops.sigmoid_contrastive_loss(a, b, torch.tensor(1.0), -huge)


@pytest.mark.parametrize("bound", [1e19, 1e30, 1.7e38])
def test_spline_inverse_holds_for_a_wide_bound_in_float32(bound):
    # The inverse's quadratic had coefficients in units of the bin height: its b^2 passed
    # float32's range from 2 * bound ~ 2e19 and the inverse was off by 37% of the bound
    # (NaN from 1e38) with no error. Now in units of the bin, as at bound 3.
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(64, 3, generator=g) * 2 - 1) * bound
    w, h, d = _spline_params(x.shape)
    y, logdet = ops.rq_spline(x, w, h, d, bound=bound)
    x2, logdet2 = ops.rq_spline(y, w, h, d, bound=bound, reverse=True)
    assert torch.isfinite(y).all() and torch.isfinite(x2).all()
    assert ((x2 - x).abs().max() / bound).item() < 1e-4
    assert (logdet + logdet2).abs().max().item() < 1e-3
    unit_y, unit_logdet = ops.rq_spline(x / bound, w, h, d, bound=1.0)  # the same spline, rescaled
    torch.testing.assert_close(y / bound, unit_y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logdet, unit_logdet, rtol=1e-4, atol=1e-4)


def test_none_or_a_float_where_a_tensor_goes_is_named():
    a, b = _pair()
    w, h, d = _spline_params(a.shape)
    calls = [
        ("log_scale", lambda: ops.affine_coupling(a, None, b)),
        ("shift", lambda: ops.affine_coupling(a, b, 1.0)),
        ("params", lambda: ops.masked_affine_coupling(a, None)),
        ("x", lambda: ops.masked_affine_coupling(a.numpy(), b)),
        ("text_features", lambda: ops.clip_loss(a, None, 1.0)),
        ("z2", lambda: ops.nt_xent_loss(a, None)),
        ("positive", lambda: ops.contrastive_cross_entropy(a, b, 1.0, None)),
        ("text_features", lambda: ops.sigmoid_contrastive_loss(a, 2.0, 1.0, 0.0)),
        ("derivatives", lambda: ops.rq_spline(a, w, h, None)),
        ("codebook", lambda: ops.nearest_code(a, None)),
    ]
    for name, call in calls:
        with pytest.raises(TypeError, match=f"gencore: {name} must be a tensor, got"):
            call()


def test_reparameterize_names_the_prior_that_does_not_match():
    mu, logvar = _pair()
    wrong = torch.randn(5, 4)
    with pytest.raises(ValueError, match="prior_logvar must have the shape of mu"):
        ops.reparameterize(mu, logvar, prior_logvar=wrong)
    with pytest.raises(ValueError, match="prior_mu must have the shape of mu"):
        ops.reparameterize(mu, logvar, prior_mu=wrong)
    with pytest.raises(TypeError, match="mu and prior_logvar must have the same dtype"):
        ops.reparameterize(mu, logvar, prior_logvar=logvar.double())


@pytest.mark.parametrize("n", [0, 2**32, 2**70])
def test_reparameterize_states_the_sample_count_range(n):
    mu, logvar = _pair()
    with pytest.raises(ValueError, match=r"n_samples must be in \[1, 2\^32 - 1\]"):
        ops.reparameterize(mu, logvar, n_samples=n)


@pytest.mark.parametrize("offset", [2**63, -(2**63) - 1, 2**80])
def test_a_positive_offset_beyond_int64_is_refused(offset):
    a, b = _pair()
    with pytest.raises(ValueError, match="positive_offset must be in \\[-n, m\\]"):
        ops.sigmoid_contrastive_pairs(a, b, 1.0, 0.0, positive_offset=offset)


@pytest.mark.parametrize("index", range(8))
def test_numpy_scalars_are_taken_as_the_numbers_they_hold(index):
    # np.float32(2.0) is a numbers.Real but not a Python float: refused as "must be a float,
    # got float32" before, although the modules and models take it.
    import numpy as np

    _, python_call = _float_calls(1.5)[index]
    expected = python_call()
    for value in (np.float32(1.5), np.float64(1.5)):
        _, call = _float_calls(value)[index]
        for got, want in zip(torch.utils._pytree.tree_leaves(call()), torch.utils._pytree.tree_leaves(expected)):
            assert torch.equal(got, want), (index, type(value).__name__)
    _, call = _float_calls(np.int64(2))[index]
    _, python_call = _float_calls(2)[index]
    for got, want in zip(torch.utils._pytree.tree_leaves(call()), torch.utils._pytree.tree_leaves(python_call())):
        assert torch.equal(got, want), (index, "int64")


@pytest.mark.parametrize("index", range(8))
def test_a_bool_is_not_a_float_hyper_parameter(index):
    import numpy as np

    for value in (True, np.bool_(True)):
        name, call = _float_calls(value)[index]
        name = name.replace("2 \\* ", "")
        with pytest.raises(TypeError, match=f"{name} must be a float"):
            call()


def test_numpy_integer_counts_and_offsets_are_taken():
    import numpy as np

    a, b = _pair()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    z1, _ = ops.reparameterize(a, b, n_samples=np.int64(2), generator=g1)
    z2, _ = ops.reparameterize(a, b, n_samples=2, generator=g2)
    assert torch.equal(z1, z2)
    assert torch.equal(ops.sigmoid_contrastive_pairs(a, b, 1.0, 0.0, positive_offset=np.int32(-2)),
                       ops.sigmoid_contrastive_pairs(a, b, 1.0, 0.0, positive_offset=-2))
    with pytest.raises(TypeError, match="positive_offset must be an int"):
        ops.sigmoid_contrastive_pairs(a, b, 1.0, 0.0, positive_offset=np.float32(1))


CONTRASTIVE = {
    "clip_loss": lambda a, b, v: ops.clip_loss(a, b, v),
    "nt_xent_loss": lambda a, b, v: ops.nt_xent_loss(a, b, temperature=v),
    "contrastive_cross_entropy": lambda a, b, v: ops.contrastive_cross_entropy(a, b, v, torch.arange(a.shape[0])).sum(),
    "sigmoid_contrastive_loss": lambda a, b, v: ops.sigmoid_contrastive_loss(a, b, v, -v),
}


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_compiled_contrastive_losses_take_a_changing_float(name):
    # A float hyper-parameter that changes between calls becomes symbolic in the second
    # compilation, where math.isfinite raised: a temperature schedule broke fullgraph.
    fn = CONTRASTIVE[name]
    a, b = (t.requires_grad_() for t in _pair(torch.float64))
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for v in (0.5, 0.7, 1.3):
        got = compiled(a, b, v)
        want = fn(a, b, v)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        for x, y in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(want, (a, b))):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_compiled_contrastive_loss_refuses_a_bad_symbolic_float():
    a, b = _pair(torch.float64)
    compiled = torch.compile(CONTRASTIVE["clip_loss"], fullgraph=True, dynamic=True, backend="aot_eager")
    compiled(a, b, 0.5)
    with pytest.raises(Exception, match="logit_scale must be finite and > 0"):
        compiled(a, b, -1.0)
    assert math.isfinite(compiled(a, b, 2.0).item())
