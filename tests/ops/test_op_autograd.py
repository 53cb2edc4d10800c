"""Derivatives of every public op beyond the first backward: create_graph, second
derivatives (refused with gencore's message, never silently zero), and torch.func
(grad, vjp, jacrev work; forward mode and nested differentiation are refused).
The conventions are in python/gencore/ops/_autograd.py."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from gencore import ops


def _gen():
    return torch.Generator().manual_seed(11)


def _cases():
    """name -> (function of differentiable float64 tensors returning one tensor, inputs); a
    name is the op's, with ``:variant`` for a second case of one op."""
    g = torch.Generator().manual_seed(0)

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()

    positive = torch.tensor([2, 0, 1, 3], dtype=torch.int64)
    exclude = torch.tensor([0, -1, 3, 1], dtype=torch.int64)
    return {
        "affine_coupling": (lambda x, ls, t: ops.affine_coupling(x, ls, t, clamp=1.5)[0].sum(1)
                            + ops.affine_coupling(x, ls, t)[1], (r(3, 5), r(3, 5), r(3, 5))),
        "masked_affine_coupling": (lambda x, p: ops.masked_affine_coupling(x, p)[0].sum(1)
                                   + ops.masked_affine_coupling(x, p, reverse=True)[1], (r(3, 6), r(3, 6))),
        "reparameterize": (lambda mu, lv: ops.reparameterize(mu, lv, generator=_gen())[0].sum(1)
                           + ops.reparameterize(mu, lv, generator=_gen())[1], (r(3, 5), r(3, 5, scale=0.5))),
        "reparameterize:prior": (lambda mu, lv, pm, pl: ops.reparameterize(mu, lv, prior_mu=pm, prior_logvar=pl,
                                                                           generator=_gen())[0].sum(1)
                                 + ops.reparameterize(mu, lv, prior_mu=pm, prior_logvar=pl, generator=_gen())[1],
                                 (r(3, 5), r(3, 5, scale=0.5), r(3, 5), r(3, 5, scale=0.5))),
        "clip_loss": (lambda a, b, s: ops.clip_loss(a, b, s), (r(4, 3), r(4, 3), torch.tensor(1.7, dtype=torch.float64,
                                                                                              requires_grad=True))),
        "nt_xent_loss": (lambda a, b, t: ops.nt_xent_loss(a, b, temperature=t),
                         (r(4, 3), r(4, 3), torch.tensor(0.3, dtype=torch.float64, requires_grad=True))),
        "contrastive_cross_entropy": (lambda q, k, s: ops.contrastive_cross_entropy(q, k, s, positive, exclude),
                                      (r(4, 3), r(5, 3), torch.tensor(2.0, dtype=torch.float64, requires_grad=True))),
        "sigmoid_contrastive_loss": (lambda a, b, s, c: ops.sigmoid_contrastive_loss(a, b, s, c),
                                     (r(4, 3), r(4, 3), torch.tensor(1.7, dtype=torch.float64, requires_grad=True),
                                      torch.tensor(-0.5, dtype=torch.float64, requires_grad=True))),
        "nearest_code": (lambda x, c: ops.nearest_code(x, c)[1] + ops.nearest_code(x, c, cosine=True)[1],
                         (r(6, 3), r(4, 3))),
        "rq_spline": (lambda x, w, h, d: ops.rq_spline(x, w, h, d, bound=2.0)[0].sum(1)
                      + ops.rq_spline(x, w, h, d, bound=2.0, reverse=True)[1],
                      (r(3, 4), r(3, 4, 5), r(3, 4, 5), r(3, 4, 4))),
    }


CASES = list(_cases())


@pytest.mark.parametrize("name", CASES)
def test_first_derivative_is_right_and_unchanged_by_create_graph(name):
    fn, inputs = _cases()[name]
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    out = fn(*inputs)
    v = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    plain = torch.autograd.grad(out, inputs, v)
    out = fn(*inputs)
    graph = torch.autograd.grad(out, inputs, v, create_graph=True)
    for a, b in zip(plain, graph):
        assert torch.equal(a, b.detach())
        assert b.requires_grad  # attached to the graph, not silently detached


@pytest.mark.parametrize("name", CASES)
def test_second_derivative_is_refused_with_a_clear_error(name):
    fn, inputs = _cases()[name]
    with pytest.raises(RuntimeError, match=f"second derivative of gencore.ops.{name.split(':')[0]} is not implemented"):
        gradgradcheck(fn, inputs, eps=1e-6, atol=1e-6)
    # A Hessian-vector product the common way: grad with create_graph, then grad again.
    out = fn(*inputs)
    first = torch.autograd.grad(out.sum(), inputs[0], create_graph=True)[0]
    with pytest.raises(RuntimeError, match=f"second derivative of gencore.ops.{name.split(':')[0]}"):
        torch.autograd.grad(first.pow(2).sum(), inputs[0])


@pytest.mark.parametrize("name", CASES)
def test_torch_func_grad_vjp_and_jacrev(name):
    fn, inputs = _cases()[name]
    plain = [t.detach() for t in inputs]
    want = torch.autograd.functional.jacobian(fn, tuple(plain))
    got = torch.func.jacrev(fn, argnums=tuple(range(len(plain))))(*plain)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    grads = torch.func.grad(lambda *xs: fn(*xs).sum(), argnums=tuple(range(len(plain))))(*plain)
    out = fn(*inputs).sum()
    for a, b in zip(grads, torch.autograd.grad(out, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    _, vjp_fn = torch.func.vjp(fn, *plain)
    out = fn(*plain)
    for a, b in zip(vjp_fn(torch.ones_like(out)), grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_torch_func_forward_mode_and_nesting_are_refused(name):
    fn, inputs = _cases()[name]
    plain = [t.detach() for t in inputs]
    with pytest.raises(RuntimeError, match=f"gencore.ops.{name.split(':')[0]} has no forward-mode derivative"):
        torch.func.jvp(fn, tuple(plain), tuple(torch.ones_like(t) for t in plain))
    with pytest.raises(RuntimeError, match=f"gencore.ops.{name.split(':')[0]} has no forward-mode derivative"):
        torch.func.hessian(lambda x: fn(x, *plain[1:]).sum())(plain[0])
    with pytest.raises(RuntimeError, match=f"second derivative of gencore.ops.{name.split(':')[0]}"):
        torch.func.grad(lambda x: torch.func.grad(lambda y: fn(y, *plain[1:]).sum())(x).sum())(plain[0])
