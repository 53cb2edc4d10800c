"""Derivatives of every public op beyond the first backward: create_graph, second
derivatives (refused with gencore's message, never silently zero), and torch.func
(grad, vjp, jacrev and vmap(grad) work; forward mode, including torch.autograd.forward_ad,
nested differentiation and second derivatives across torch.func and torch.autograd are
refused).
The conventions are in python/gencore/ops/_autograd.py."""

import pytest
import torch
from torch.autograd import forward_ad as fwAD
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


@pytest.mark.parametrize("name", CASES)
def test_forward_ad_dual_tensors_are_refused(name):
    # torch.autograd.forward_ad: a dual tensor does not require grad, so a custom op's
    # autograd would be skipped and its tangent silently dropped (the output no dual).
    fn, inputs = _cases()[name]
    plain = [t.detach() for t in inputs]
    with fwAD.dual_level():
        dual = fwAD.make_dual(plain[0], torch.ones_like(plain[0]))
        with pytest.raises(RuntimeError, match=f"gencore.ops.{name.split(':')[0]} has no forward-mode derivative"):
            fn(dual, *plain[1:])
        fn(*plain)  # plain tensors inside a dual level still work


@pytest.mark.parametrize("name", CASES)
def test_torch_func_inside_autograd_refuses_the_second_derivative(name):
    # torch.func.grad of an input that requires grad records an ordinary graph around the
    # transform; differentiating the result again needs the op's second derivative.
    fn, inputs = _cases()[name]
    op = name.split(":")[0]
    x = inputs[0]
    rest = [t.detach() for t in inputs[1:]]
    g = torch.func.grad(lambda y: fn(y, *rest).sum())(x)
    want = torch.autograd.grad(fn(x, *rest).sum(), x)[0]
    torch.testing.assert_close(g.detach(), want, rtol=1e-12, atol=1e-12)  # the first derivative is right
    with pytest.raises(RuntimeError, match=f"second derivative of gencore.ops.{op}"):
        torch.autograd.grad(g.pow(2).sum(), x)


@pytest.mark.parametrize("name", CASES)
def test_autograd_inside_torch_func_refuses_the_second_derivative(name):
    fn, inputs = _cases()[name]
    op = name.split(":")[0]
    plain = [t.detach() for t in inputs]

    def penalty(y):
        return torch.autograd.grad(fn(y, *plain[1:]).sum(), y, create_graph=True)[0].pow(2).sum()

    with pytest.raises(RuntimeError, match=f"second derivative of gencore.ops.{op}"):
        torch.func.grad(penalty)(plain[0])


@pytest.mark.parametrize("name", CASES)
def test_vmap_of_grad_gives_per_example_gradients(name):
    # Two stacked copies of the inputs with different values: vmap(grad) against a loop.
    fn, inputs = _cases()[name]
    plain = [t.detach() for t in inputs]
    other = [t + 0.25 * torch.randn(t.shape, dtype=t.dtype, generator=torch.Generator().manual_seed(5))
             for t in plain]
    stacked = [torch.stack(pair) for pair in zip(plain, other)]
    argnums = tuple(range(len(plain)))
    got = torch.func.vmap(torch.func.grad(lambda *xs: fn(*xs).sum(), argnums=argnums), randomness="same")(*stacked)
    for copy, values in enumerate((plain, other)):
        want = torch.autograd.grad(fn(*[v.requires_grad_() for v in values]).sum(), values)
        for a, b in zip(got, want):
            torch.testing.assert_close(a[copy], b, rtol=1e-10, atol=1e-10)
