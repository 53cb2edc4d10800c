"""Helpers for data-parallel training with ``torch.distributed``.

The contrastive losses need every rank's features as negatives: :func:`all_gather_with_grad`
gathers them with a backward that sums the incoming gradient over ranks, which together with
the local-rows losses of :mod:`gencore.nn.contrastive` makes the training step exact (see there).

Everything here degrades to one process: without an initialized default process group (or
inside :func:`local_only`) :func:`world_size` is 1 and :func:`rank` is 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

import torch
import torch.distributed as dist

__all__ = ["all_gather_with_grad", "gather_sizes", "world_size", "rank", "is_distributed", "local_only",
           "init_from_env"]

_LOCAL_ONLY = contextvars.ContextVar("gencore_local_only", default=False)


def is_distributed(group=None) -> bool:
    """True when a process group is initialized, it has more than one rank, and no
    :func:`local_only` block is active."""
    if _LOCAL_ONLY.get() or not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(group) > 1


def world_size(group=None) -> int:
    """Number of ranks in ``group`` (the default group if None); 1 without distribution."""
    return dist.get_world_size(group) if is_distributed(group) else 1


def rank(group=None) -> int:
    """This process's rank in ``group``; 0 without distribution."""
    return dist.get_rank(group) if is_distributed(group) else 0


@contextlib.contextmanager
def local_only():
    """Within this block distributed losses behave as in a single process (world size 1).

    Used for evaluation, where each rank scores the whole held-out set by itself: no
    collective runs, so ranks need not call the loss the same number of times.
    """
    token = _LOCAL_ONLY.set(True)
    try:
        yield
    finally:
        _LOCAL_ONLY.reset(token)


def init_from_env(device: torch.device | str = "cpu") -> bool:
    """Initialize the default process group from ``torchrun``'s environment variables.

    Does nothing (returns False) when a group is already initialized or the environment does
    not describe a multi-process run (``WORLD_SIZE`` unset or 1). Backend: ``nccl`` for a CUDA
    ``device``, else ``gloo``. Returns True when this call initialized the group.
    """
    if not dist.is_available() or dist.is_initialized():
        return False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {missing} are not set: launch with "
                           "torchrun, or call torch.distributed.init_process_group yourself")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def gather_sizes(n: int, device: torch.device, group=None) -> list[int]:
    """Every rank's ``n`` (e.g. its local batch size), in rank order: one small all-gather."""
    w = dist.get_world_size(group)
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(w)]
    dist.all_gather(out, mine, group=group)
    return [int(t.item()) for t in out]


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], group):
        r, m = dist.get_rank(group), max(sizes)
        # all_gather needs equal shapes on every rank (gloo): pad to the largest batch, then trim.
        xp = x.contiguous()
        if x.shape[0] < m:
            xp = torch.cat([xp, xp.new_zeros((m - x.shape[0],) + tuple(x.shape[1:]))])
        parts = [torch.empty_like(xp) for _ in sizes]
        dist.all_gather(parts, xp, group=group)
        ctx.group, ctx.start, ctx.n = group, sum(sizes[:r]), sizes[r]
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every rank's loss depends on this rank's rows: their gradient is the sum over ranks.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.start:ctx.start + ctx.n], None, None


def all_gather_with_grad(x: torch.Tensor, *, group=None, sizes: list[int] | None = None,
                         return_sizes: bool = False):
    """Concatenate ``x: (n_r, ...)`` of every rank in rank order -> ``(sum_r n_r, ...)``, differentiably.

    The backward all-reduces (sums) the incoming gradient over ranks and returns this rank's
    slice: the gradient of ``x`` is the derivative of the *sum* of all ranks' losses. Ranks may
    hold different batch sizes ``n_r`` (rows are padded for the transfer and trimmed); the
    trailing dimensions, dtype and device must agree. Every rank of ``group`` must call it.

    Args:
        x: this rank's rows, ``(n_r, ...)``.
        group: the process group (default: the default group).
        sizes: every rank's ``n_r`` when already known (saves one small all-gather).
        return_sizes: also return the list of ``n_r``.

    Without distribution (see :func:`is_distributed`) it returns ``x`` itself (and ``[n]``).

    Raises:
        ValueError: ``x`` is 0-d, or ``sizes`` does not match the group or ``x``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise ValueError("all_gather_with_grad: x must be a tensor with a batch dimension")
    if not is_distributed(group):
        return (x, [x.shape[0]]) if return_sizes else x
    if sizes is None:
        sizes = gather_sizes(x.shape[0], x.device, group)
    if len(sizes) != dist.get_world_size(group) or sizes[dist.get_rank(group)] != x.shape[0]:
        raise ValueError(f"all_gather_with_grad: sizes {sizes} do not match the group's "
                         f"{dist.get_world_size(group)} ranks and this rank's {x.shape[0]} rows")
    out = _AllGather.apply(x, list(sizes), group)
    return (out, list(sizes)) if return_sizes else out
