"""Small building blocks for conditioners and default networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP"]


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
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool):
                raise TypeError(f"MLP: {name} must be an int, got bool {v!r}")
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MLP: {name} must be a positive int, got {v!r}")
        if isinstance(hidden, int):
            hidden = [hidden]  # one hidden layer
        hidden = list(hidden)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in hidden):
            raise TypeError(f"MLP: hidden sizes must be ints, got {hidden!r}")
        if any(v < 1 for v in hidden):
            raise ValueError(f"MLP: hidden sizes must be positive, got {hidden!r}")
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
