"""gencore.nn.VectorQuantizer: the straight-through output, its losses and their gradients,
the EMA update against its formula, dead-code restarts (and what happens without them),
cosine codes, perplexity, state round trip and bad inputs. (Distributed: tests/runs/
test_distributed.py.)"""

import math

import pytest
import torch
import torch.nn.functional as F

from gencore.nn import VectorQuantizer


def _clusters(seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 10 + 3 * torch.randn(8, 4, generator=g)  # away from the codes' N(0, I) init

    def batch(n=512):
        k = torch.randint(0, 8, (n,), generator=g)
        return (centers[k] + 0.1 * torch.randn(n, 4, generator=g))[:, :, None]  # (B, D, 1)

    return batch


def test_output_is_the_code_with_a_straight_through_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(5, 3, ema_decay=None).double()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    out = vq(x)
    assert out.quantized.shape == x.shape and out.indices.shape == (4, 2, 2)
    flat = x.detach().movedim(1, -1).reshape(-1, 3)
    want = torch.cdist(flat, vq.codebook.detach()).argmin(1)
    assert torch.equal(out.indices.reshape(-1), want)
    torch.testing.assert_close(out.quantized.movedim(1, -1).reshape(-1, 3), vq.codebook.detach()[want])
    w = torch.randn(x.shape, dtype=torch.float64)
    (gx,) = torch.autograd.grad((out.quantized * w).sum(), x)
    torch.testing.assert_close(gx, w)  # straight through


def test_losses_and_their_gradients():
    torch.manual_seed(1)
    vq = VectorQuantizer(6, 2, beta=0.3, ema_decay=None).double()
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    out = vq(x)
    q = vq.codebook.detach()[out.indices]
    torch.testing.assert_close(out.loss, 1.3 * F.mse_loss(x.detach(), q))
    gx, gc = torch.autograd.grad(out.loss, (x, vq.codebook))
    torch.testing.assert_close(gx, 0.3 * 2 * (x.detach() - q) / x.numel())  # commitment only
    want = torch.zeros_like(gc).index_add(0, out.indices, 2 * (q - x.detach()) / x.numel())
    torch.testing.assert_close(gc, want)  # codebook loss only


def test_ema_update_follows_its_formula():
    torch.manual_seed(2)
    vq = VectorQuantizer(4, 3, ema_decay=0.9, eps=1e-3, restart_dead_codes=False).double()
    count0, sum0 = vq.ema_count.clone(), vq.ema_sum.clone()
    x = torch.randn(20, 3, dtype=torch.float64)
    out = vq(x)
    n = torch.bincount(out.indices, minlength=4).double()
    s = torch.zeros(4, 3, dtype=torch.float64).index_add(0, out.indices, x)
    count = 0.9 * count0 + 0.1 * n
    total = count.sum()
    smoothed = (count + 1e-3) / (total + 4 * 1e-3) * total
    torch.testing.assert_close(vq.codebook, (0.9 * sum0 + 0.1 * s) / smoothed[:, None])
    assert out.loss.requires_grad is False and not any(p.requires_grad for p in vq.parameters())
    vq.eval()  # no update in eval mode
    before = vq.codebook.clone()
    vq(x)
    assert torch.equal(before, vq.codebook)


@pytest.mark.parametrize("ema", [0.9, None], ids=["ema", "gradient"])
def test_dead_code_restart_uses_the_codebook(ema):
    """8 tight clusters away from the initial codes, 16 codes: with restarts every cluster
    gets its own code(s); without, the codes nearest to the data take all of it and the
    others never move (the collapse restarts exist for)."""
    result = {}
    for restart in (True, False):
        torch.manual_seed(3)
        batch = _clusters(3)
        vq = VectorQuantizer(16, 4, ema_decay=ema, restart_dead_codes=restart)
        opt = torch.optim.Adam(vq.parameters(), lr=0.05) if ema is None else None
        for _ in range(300):
            out = vq(batch())
            if opt:
                opt.zero_grad()
                out.loss.backward()
                opt.step()
        vq.eval()
        x = batch(2048)
        out = vq(x)
        result[restart] = (F.mse_loss(out.quantized, x).item(), out.perplexity.item())
    (mse_on, ppl_on), (mse_off, ppl_off) = result[True], result[False]
    assert ppl_on > 8 and ppl_on > ppl_off + 2
    assert mse_on < 0.2 * mse_off
    if ema is not None:
        assert mse_on < 0.05  # every cluster (std 0.1 per coordinate) on a code


def test_perplexity_counts_codes_in_use():
    vq = VectorQuantizer(4, 2, ema_decay=None, restart_dead_codes=False)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    vq.eval()
    x = torch.tensor([[0.1, 0.0], [9.9, 0.0], [0.0, 9.8], [10.0, 9.9]]).repeat(3, 1)
    assert vq(x).perplexity.item() == pytest.approx(4.0)
    assert vq(x[:1].repeat(5, 1)).perplexity.item() == pytest.approx(1.0)


def test_cosine_codes():
    torch.manual_seed(4)
    vq = VectorQuantizer(8, 5, cosine=True)
    x = 7 * torch.randn(30, 5)
    out = vq(x)
    torch.testing.assert_close(out.quantized.norm(dim=1), torch.ones(30))
    torch.testing.assert_close(vq.codebook.norm(dim=1), torch.ones(8))  # kept on the sphere
    want = (F.normalize(x, dim=1) @ F.normalize(vq.codebook, dim=1).T).argmax(1)
    vq.eval()
    assert torch.equal(vq(x).indices, (F.normalize(x, dim=1) @ vq.codebook.T).argmax(1))
    assert want.shape == (30,)


def test_state_dict_round_trip():
    torch.manual_seed(5)
    vq = VectorQuantizer(6, 3)
    for _ in range(3):
        vq(torch.randn(16, 3))
    copy = VectorQuantizer(6, 3)
    copy.load_state_dict(vq.state_dict())
    for name in ("codebook", "ema_count", "ema_sum", "usage"):
        assert torch.equal(getattr(copy, name), getattr(vq, name))
    vq.eval(), copy.eval()
    x = torch.randn(9, 3)
    assert torch.equal(vq(x).indices, copy(x).indices)


def test_bad_inputs():
    vq = VectorQuantizer(4, 3)
    with pytest.raises(ValueError, match=r"shape \(B, 3, \.\.\.\)"):
        vq(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"shape \(B, 3, \.\.\.\)"):
        vq(torch.randn(5))
    with pytest.raises(ValueError, match="must not be empty"):
        vq(torch.randn(0, 3))
    with pytest.raises(ValueError, match="codebook's dtype and device"):
        vq(torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        vq(torch.ones(5, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="must be a tensor"):
        vq([[1.0, 2.0, 3.0]])
    x = torch.randn(5, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="1 of the 5 input vectors have NaN or infinite"):
        vq(x)
    for kwargs, match in (({"ema_decay": 1.0}, "ema_decay"), ({"beta": -1.0}, "beta"), ({"eps": 0.0}, "eps"),
                          ({"dead_threshold": math.nan}, "dead_threshold"), ({"cosine": 1}, "cosine")):
        with pytest.raises((ValueError, TypeError), match=match):
            VectorQuantizer(4, 3, **kwargs)
    with pytest.raises(ValueError, match="num_codes"):
        VectorQuantizer(0, 3)
    with pytest.raises(TypeError, match="dim"):
        VectorQuantizer(4, 3.0)
