"""The metrics on CUDA tensors agree with CPU (skipped without a GPU)."""

import pytest
import torch

from gencore import metrics as M

pytestmark = pytest.mark.cuda


def test_metrics_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(4, 9, generator=g, dtype=torch.float64)
    q = torch.rand(4, 9, generator=g, dtype=torch.float64)
    p, q = p / p.sum(1, keepdim=True), q / q.sum(1, keepdim=True)
    for fn in (M.total_variation, M.kl_divergence, M.cross_entropy):
        torch.testing.assert_close(fn(p.cuda(), q.cuda()).cpu(), fn(p, q))
    x, y = torch.randn(50, 3, generator=g), torch.randn(40, 3, generator=g) + 0.5
    torch.testing.assert_close(M.mmd(x.cuda(), y.cuda()).cpu(), M.mmd(x, y), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(M.wasserstein_1d(x[:, 0].cuda(), y[:, 0].cuda()).cpu(),
                               M.wasserstein_1d(x[:, 0], y[:, 0]), rtol=1e-5, atol=1e-6)
    pts = torch.rand(30, 2, generator=g)
    assert torch.equal(M.pareto_front(pts.cuda()).cpu(), M.pareto_front(pts))
    s0, s1 = torch.eye(3, dtype=torch.float64) * 2, torch.eye(3, dtype=torch.float64)
    mu = torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(M.gaussian_kl(mu.cuda(), s0.cuda(), mu.cuda(), s1.cuda()).cpu(),
                               M.gaussian_kl(mu, s0, mu, s1))
