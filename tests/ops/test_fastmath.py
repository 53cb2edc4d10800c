"""Accuracy of the vectorizable exp / tanh in csrc/common/fastmath.h, probed through the op.

With x = 1, shift = 0 and clamp = 0 the op returns y = exp(log_scale); with clamp = 1 the
logdet of a one-element row is tanh(log_scale). Errors are measured in units in the last
place (ulp) of the exact float64/mpmath-free reference rounded to the test dtype.
"""

import pytest
import torch

from gencore import ops


def ulp_error(got: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    dtype = got.dtype
    ref = exact.to(dtype)
    spacing = torch.nextafter(ref.abs(), torch.tensor(float("inf"), dtype=dtype)) - ref.abs()
    return ((got.double() - exact).abs() / spacing.double())


@pytest.mark.parametrize("dtype,lo,hi,max_ulp", [
    (torch.float32, -86.0, 88.7, 2.0),
    (torch.float64, -700.0, 709.0, 2.0),
])
def test_exp_ulp(dtype, lo, hi, max_ulp):
    v = torch.cat([torch.linspace(lo, hi, 200001, dtype=torch.float64),
                   torch.linspace(-1, 1, 100001, dtype=torch.float64)]).to(dtype)
    one = torch.ones_like(v)[:, None]
    y, _ = ops.affine_coupling(one, v[:, None], torch.zeros_like(one), clamp=0.0)
    err = ulp_error(y[:, 0], torch.exp(v.double()))
    assert err.max().item() <= max_ulp


@pytest.mark.parametrize("dtype,max_ulp", [(torch.float32, 3.0), (torch.float64, 3.0)])
def test_tanh_ulp(dtype, max_ulp):
    v = torch.cat([torch.linspace(-25, 25, 200001, dtype=torch.float64),
                   torch.logspace(-30, 0, 10001, dtype=torch.float64)]).to(dtype)
    col = v[:, None]
    _, ld = ops.affine_coupling(torch.zeros_like(col), col, torch.zeros_like(col), clamp=1.0)
    exact = torch.tanh(v.double())
    err = ulp_error(ld, exact)
    assert err.max().item() <= max_ulp


def test_exp_special_values():
    v = torch.tensor([float("inf"), -float("inf"), float("nan"), 89.0, -1000.0, 0.0])[:, None]
    one = torch.ones_like(v)
    y, _ = ops.affine_coupling(one, v, torch.zeros_like(v), clamp=0.0)
    y = y[:, 0]
    assert y[0] == float("inf") and y[1] == 0 and torch.isnan(y[2])
    assert y[3] == float("inf") and y[4] == 0 and y[5] == 1


def test_tanh_special_values():
    v = torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0, -0.0, 1e-30])[:, None]
    _, ld = ops.affine_coupling(torch.zeros_like(v), v, torch.zeros_like(v), clamp=1.0)
    assert ld[0] == 1 and ld[1] == -1 and torch.isnan(ld[2]) and ld[3] == 0
    assert ld[5].item() == pytest.approx(1e-30, rel=1e-6)
