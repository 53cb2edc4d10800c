"""Small building blocks for conditioners and default networks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from gencore._arguments import _plain, check_bool, check_factory, check_size, check_widths, int_in

__all__ = ["MLP", "MaskedLinear", "MADE"]


class MLP(nn.Sequential):
    """Multi-layer perceptron ``in_features -> hidden... -> out_features``.

    Args:
        in_features: input size ``D_in``; input ``(B, D_in)``.
        out_features: output size ``D_out``; output ``(B, D_out)``.
        hidden: sizes of the hidden layers.
        activation: module class placed after every hidden layer.
        zero_init: zero the last layer, so a coupling layer that uses this network
            as its conditioner starts as the identity (the usual flow initialisation).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        *,
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = False,
    ) -> None:
        in_features = check_size(in_features, "MLP: in_features")
        out_features = check_size(out_features, "MLP: out_features")
        hidden = check_widths(hidden, "MLP: hidden", allow_empty=True)  # none: one linear map
        check_factory(activation, "MLP: activation")
        check_bool(zero_init, "MLP: zero_init")
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), activation()]
        last = nn.Linear(sizes[-1], out_features)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x: (B, D_in)``; a ``context: (B, D_c)`` is concatenated to ``x`` when given."""
        if context is not None:
            x = torch.cat([x, context], dim=1)
        return super().forward(x)


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with a fixed 0/1 ``mask`` ``M`` of the weight's shape
    ``(out_features, in_features)``.

    The mask is a copy of the argument, kept as a boolean buffer that follows the module's
    device and is not part of the ``state_dict``: it is structure (the owner re-creates it
    from its own arguments), so a checkpoint neither doubles in size nor can carry a mask
    that breaks it. The masked-out weights stay parameters (their gradients are zero), so a
    parameter count includes them, as in MADE's and nflows' implementations.
    """

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (out_features, in_features):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"MaskedLinear: mask must be a tensor of shape ({out_features}, {in_features}), got {got}")
        self.register_buffer("mask", mask.detach().to(device=self.weight.device, dtype=torch.bool, copy=True),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked auto-encoder for distribution estimation (Germain et al. 2015): an MLP whose
    weight masks make output group ``j`` depend only on the inputs that come before input
    ``j`` in ``order`` (and on the context), so one pass gives every conditional's
    parameters of an autoregressive model.

    Degrees: input ``i`` has degree ``order[i]`` (a permutation of ``1..D``), the context
    (concatenated to the input) degree 0; the units of each hidden layer have degrees
    ``1, 2, ..., D - 1, 1, 2, ...`` (cyclic; with a context ``0, 1, ..., D - 1, 0, ...``, so
    that the first input in the order is conditioned on the context too). A unit sees the
    units of the layer below with degree ``<=`` its own, and output unit ``(j, r)`` (degree
    ``order[j]``) the last hidden units of degree ``<`` ``order[j]``: without a context the
    first input in the order gets its parameters from the biases alone. A hidden layer at
    least ``D - 1`` (``D``) wide has units of every degree.

    Args:
        features: ``D``, the size of ``x``.
        out_per_feature: ``P``, outputs per input (e.g. ``3K - 1`` spline parameters).
        hidden: sizes of the hidden layers (at least one).
        context_features: size of the conditioning vector (0: none).
        order: ``"forward"`` (``1..D``), ``"reverse"`` (``D..1``) or a sequence holding a
            permutation of ``1..D``: ``order[i]`` is input ``i``'s position.
        activation: module class after every hidden layer.
        zero_init: zero the output layer (a flow layer over it starts as the identity).

    Shapes:
        ``forward(x, context=None)``: ``x (B, D)``, ``context (B, C)`` -> ``(B, D * P)``,
        output ``j * P + r`` the ``r``-th parameter of input ``j``.
    """

    def __init__(self, features: int, out_per_feature: int, hidden: Sequence[int] = (64, 64), *,
                 context_features: int = 0, order="forward", activation: type[nn.Module] = nn.ReLU,
                 zero_init: bool = False) -> None:
        super().__init__()
        d = check_size(features, "MADE: features")
        p = check_size(out_per_feature, "MADE: out_per_feature")
        c = check_size(context_features, "MADE: context_features", 0)
        hidden = check_widths(hidden, "MADE: hidden")
        check_factory(activation, "MADE: activation")
        check_bool(zero_init, "MADE: zero_init")
        if isinstance(order, str):
            if order not in ("forward", "reverse"):
                raise ValueError(f"MADE: order must be 'forward', 'reverse' or a permutation of 1..{d}, got {order!r}")
            degrees = list(range(1, d + 1)) if order == "forward" else list(range(d, 0, -1))
        else:
            try:
                degrees = list(_plain(order))
            except TypeError:
                raise ValueError(f"MADE: order must be 'forward', 'reverse' or a permutation of 1..{d}, "
                                 f"got {type(order).__name__} {order!r}") from None
            ints = [int_in(v) for v in degrees]
            if None in ints or sorted(ints) != list(range(1, d + 1)):
                raise ValueError(f"MADE: order must be a permutation of 1..{d}, got {degrees!r}")
            degrees = ints
        low = 0 if c else 1  # hidden units of degree 0 see the context alone
        if min(hidden) < d - low:
            top = low + min(hidden) - 1  # the highest hidden degree that has units
            warnings.warn(f"MADE: a hidden layer of {min(hidden)} units is narrower than the {d - low} degrees "
                          f"{low}..{d - 1}: the inputs after position {top + 1} in the order see only the first "
                          f"{top} (use hidden layers of at least {d - low} units)", stacklevel=2)
        self.features, self.out_per_feature, self.context_features = d, p, c
        # Structure, not state (as MaskedLinear's masks): re-created from the arguments.
        self.register_buffer("degrees", torch.tensor(degrees, dtype=torch.long), persistent=False)
        layers: list[nn.Module] = []
        below = torch.tensor([0] * c + degrees)  # context: degree 0; masks built on the CPU
        for h in hidden:
            deg = torch.arange(h) % max(1, d - low) + low
            layers += [MaskedLinear(below.numel(), h, (deg[:, None] >= below[None, :])), activation()]
            below = deg
        out_deg = torch.tensor(degrees).repeat_interleave(p)
        last = MaskedLinear(below.numel(), d * p, (out_deg[:, None] > below[None, :]))
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def extra_repr(self) -> str:
        return f"features={self.features}, out_per_feature={self.out_per_feature}, " \
               f"context_features={self.context_features}"

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.features:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"MADE: x must be (B, {self.features}), got {got}")
        if self.context_features:
            if not isinstance(context, torch.Tensor) or context.shape != (x.shape[0], self.context_features):
                got = tuple(context.shape) if isinstance(context, torch.Tensor) else context
                raise ValueError(f"MADE: context must be (B, {self.context_features}) = "
                                 f"({x.shape[0]}, {self.context_features}), got {got}")
            x = torch.cat([context.to(x.dtype), x], dim=1)
        elif context is not None:
            raise ValueError("MADE: got a context but was built with context_features=0")
        return self.net(x)
