"""gencore.nn.NTXentLoss / CLIPLoss / SigLIPLoss in one process: against gencore.reference, validation, the
logit scale's initialisation and clamp, and distributed=True falling back without a process group."""

import math

import pytest
import torch

from gencore import distributed as gdist
from gencore import reference
from gencore.nn import CLIPLoss, NTXentLoss, SigLIPLoss


def pair(n=9, d=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=dtype)
    b = a + 0.8 * torch.randn(n, d, generator=g, dtype=dtype)
    return a.requires_grad_(True), b.requires_grad_(True)


def grads(loss, *ts):
    return torch.autograd.grad(loss, ts)


@pytest.mark.parametrize("distributed", [False, True])
@pytest.mark.parametrize("temperature", [0.05, 0.5, 3.0])
def test_ntxent_matches_reference(temperature, distributed):
    z1, z2 = pair()
    loss = NTXentLoss(temperature, distributed=distributed)(z1, z2)
    ref = reference.nt_xent_loss(z1, z2, temperature=temperature)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    for g, r in zip(grads(loss, z1, z2), grads(ref, z1, z2)):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-12)


def test_ntxent_learnable_temperature_gradient():
    z1, z2 = pair(seed=1)
    crit = NTXentLoss(0.2, learnable=True).double()
    assert [n for n, _ in crit.named_parameters()] == ["log_temperature"]
    torch.testing.assert_close(crit.temperature, torch.tensor(0.2, dtype=torch.float64), rtol=1e-7, atol=0)
    loss = crit(z1, z2)
    t = crit.log_temperature.detach().clone().requires_grad_(True)
    ref = reference.nt_xent_loss(z1, z2, temperature=t.exp())
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    (g,), (r,) = grads(loss, crit.log_temperature), grads(ref, t)
    assert r.abs() > 1e-3
    torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("distributed", [False, True])
def test_clip_matches_reference(distributed):
    a, b = pair(n=11, d=6, seed=2)
    crit = CLIPLoss(distributed=distributed).double()
    loss = crit(torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1))
    s = crit.log_logit_scale.detach().clone().requires_grad_(True)
    ref = reference.clip_loss(torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1),
                              s.exp())
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    for g, r in zip(grads(loss, a, b, crit.log_logit_scale), grads(ref, a, b, s)):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-12)


def test_clip_logit_scale_init_and_clamp():
    crit = CLIPLoss()
    assert crit.log_logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-7)
    assert crit.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        crit.log_logit_scale.fill_(math.log(250.0))  # training pushed it past the clamp
    assert crit.logit_scale.item() == pytest.approx(100.0, rel=1e-6)
    a, b = pair(n=5, d=4, seed=3, dtype=torch.float32)
    loss = crit(a, b)
    torch.testing.assert_close(loss, reference.clip_loss(a, b, 100.0), rtol=1e-5, atol=1e-5)
    loss.backward()
    assert crit.log_logit_scale.grad.item() == 0.0  # clamped: CLIP's convention, no gradient beyond it
    small = CLIPLoss(init_logit_scale=0.0, max_logit_scale=5.0)
    assert small.logit_scale.item() == 1.0
    with torch.no_grad():
        small.log_logit_scale.fill_(3.0)
    assert small.logit_scale.item() == 5.0


@pytest.mark.parametrize("distributed", [False, True])
def test_siglip_matches_reference(distributed):
    a, b = pair(n=11, d=6, seed=4)
    crit = SigLIPLoss(distributed=distributed).double()
    na, nb = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    loss = crit(na, nb)
    s = crit.log_logit_scale.detach().clone().requires_grad_(True)
    c = crit.logit_bias.detach().clone().requires_grad_(True)
    ref = reference.sigmoid_contrastive_loss(torch.nn.functional.normalize(a, dim=1),
                                             torch.nn.functional.normalize(b, dim=1), s.exp(), c)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    for g, r in zip(grads(loss, a, b, crit.log_logit_scale, crit.logit_bias), grads(ref, a, b, s, c)):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-12)


def test_siglip_init_is_the_papers_and_the_scale_is_clamped():
    crit = SigLIPLoss()
    assert [n for n, _ in crit.named_parameters()] == ["log_logit_scale", "logit_bias"]
    assert crit.logit_scale.item() == pytest.approx(10.0, rel=1e-6) and crit.logit_bias.item() == -10.0
    with torch.no_grad():
        crit.log_logit_scale.fill_(math.log(250.0))
    assert crit.logit_scale.item() == pytest.approx(100.0, rel=1e-6)
    a, b = pair(n=5, d=4, seed=5, dtype=torch.float32)
    crit(a, b).backward()
    assert crit.log_logit_scale.grad.item() == 0.0 and crit.logit_bias.grad.item() != 0.0
    with pytest.raises(ValueError, match="init_logit_bias must be a finite number"):
        SigLIPLoss(init_logit_bias=float("nan"))
    with pytest.raises(ValueError, match="exceeds max_logit_scale"):
        SigLIPLoss(init_logit_scale=math.log(200.0))
    assert "logit_bias=-10" in repr(SigLIPLoss(distributed=True))


class TestValidation:
    @pytest.mark.parametrize("t", [0, -0.5, float("nan"), float("inf"), "0.5", True])
    def test_bad_temperature(self, t):
        with pytest.raises(ValueError, match="temperature must be a positive finite number"):
            NTXentLoss(t)

    @pytest.mark.parametrize("v", [float("nan"), float("inf"), None])
    def test_bad_init_logit_scale(self, v):
        with pytest.raises(ValueError, match="init_logit_scale must be a finite number"):
            CLIPLoss(init_logit_scale=v)

    @pytest.mark.parametrize("v", [0.0, -1.0, float("inf")])
    def test_bad_max_logit_scale(self, v):
        with pytest.raises(ValueError, match="max_logit_scale must be a positive finite number"):
            CLIPLoss(max_logit_scale=v)

    def test_init_above_max(self):
        with pytest.raises(ValueError, match="exceeds max_logit_scale"):
            CLIPLoss(init_logit_scale=math.log(200.0))

    @pytest.mark.parametrize("crit", [NTXentLoss(), CLIPLoss(), NTXentLoss(distributed=True), SigLIPLoss()])
    def test_bad_inputs(self, crit):
        with pytest.raises(ValueError, match=r"must have shape \(N, D\)"):
            crit(torch.randn(4), torch.randn(4))
        with pytest.raises(ValueError, match="must have the same shape"):
            crit(torch.randn(4, 3), torch.randn(5, 3))
        with pytest.raises(ValueError, match="must have the same shape"):
            crit(torch.randn(4, 3), torch.randn(4, 2))
        with pytest.raises(ValueError, match="empty"):
            crit(torch.randn(0, 3), torch.randn(0, 3))
        with pytest.raises(TypeError, match="floating point"):
            crit(torch.ones(4, 3, dtype=torch.int64), torch.ones(4, 3, dtype=torch.int64))
        with pytest.raises(ValueError, match="share dtype and device"):
            crit(torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64))


def test_local_only_and_repr():
    with gdist.local_only():
        assert not gdist.is_distributed()
    assert "temperature=0.25" in repr(NTXentLoss(0.25, learnable=True))
    assert "logit_scale=14.29" in repr(CLIPLoss(distributed=True))
