"""One small training loop for every gencore model with a ``loss(batch)`` method.

Progress (tqdm), periodic evaluation, checkpoints (safetensors for tensors, JSON for the
config and the loop state: loading never unpickles) and exact resumption: a run stopped
at step k and resumed reaches the same parameters as one that never stopped.

Two-player (or any multi-optimizer) models such as :class:`gencore.models.GAN` define
``configure_optimizers(lr, weight_decay) -> {name: optimizer}`` and
``train_step(batch, optimizers, step) -> {name: float}``; ``fit`` then calls ``train_step``
in place of loss / backward / step, records the running mean of every returned number as
``train_<name>``, and checkpoints every optimizer.

Data-parallel training: under ``torchrun`` (or in any process with an initialized
``torch.distributed`` group of several ranks) ``fit`` wraps the model in
``DistributedDataParallel``; every rank draws the same global batches as one process with the
same ``batch_size`` and trains on its contiguous shard of each, so a run on ``W`` ranks follows
the single-process run for a loss that is a mean over the batch or a
:mod:`gencore.nn.contrastive` loss with ``distributed=True`` (gradients equal up to the order
of floating-point sums; Adam's normalisation can amplify those last-bit differences for
parameters whose gradient is near zero, so float32 runs drift apart slowly, float64 runs agree
to ~1e-10).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gencore import distributed as gdist

__all__ = ["fit", "FitResult", "save_checkpoint", "load_checkpoint", "record_run_extra", "CheckpointError"]

FORMAT = "gencore-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupted or does not match the model."""


@dataclass
class FitResult:
    model: nn.Module
    step: int
    history: list[dict] = field(default_factory=list)


def _as_tuple(data) -> tuple[torch.Tensor, ...]:
    t = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    t = tuple(v for v in t if v is not None)
    if not t or not all(isinstance(v, torch.Tensor) for v in t):
        raise TypeError("data must be a tensor or a tuple of tensors")
    n = t[0].shape[0]
    if n == 0:
        raise ValueError("data is empty")
    if any(v.shape[0] != n for v in t):
        raise ValueError(f"all tensors of data must share the first dimension: {[tuple(v.shape) for v in t]}")
    if t[0].dtype.is_floating_point and not torch.isfinite(t[0]).all():
        raise ValueError("data contains NaN or infinite values")
    return t


def _batch(t: tuple[torch.Tensor, ...], idx: torch.Tensor):
    out = tuple(v[idx] for v in t)
    return out[0] if len(out) == 1 else out


class _Batches:
    """Shuffled minibatches without replacement, a new permutation every epoch (last partial
    batch dropped). The batch of step s depends only on (seed, s): resuming needs no state."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.bs, self.seed = n, min(batch_size, n), seed
        self.per_epoch = max(1, n // self.bs)
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm[k * self.bs:(k + 1) * self.bs]


def _make_optimizer(model: nn.Module, lr: float, weight_decay: float):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    try:  # PyTorch's fused Adam: one kernel for the whole update.
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _loss_step(model: nn.Module, optimizer, batch, step: int) -> dict[str, float]:
    """One step of minimising ``model.loss(batch)``: ``{"loss": value before the update}``."""
    loss = model.loss(batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower lr or check the data")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item()}


class _LossModule(nn.Module):
    """``forward(batch) = model.loss(batch)``: DistributedDataParallel runs its hooks around
    ``forward``, so the loss must be reached through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" \
        else torch.device("cpu")


def _ddp_loss_step(ddp: nn.Module, optimizer, batch, step: int, world: int) -> dict[str, float]:
    """:func:`_loss_step` on this rank's shard; the recorded loss is the mean over ranks (the
    global batch's loss), checked before backward so that every rank stops together."""
    loss = ddp(batch)
    value = loss.detach().to(_collective_device(), torch.float64).reshape(1).clone()
    torch.distributed.all_reduce(value)
    value = value.item() / world
    if not math.isfinite(value):
        raise FloatingPointError(f"loss became {value} at step {step}; lower lr or check the data")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": value}


def _broadcast_float(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    torch.distributed.broadcast(t, 0)
    return t.item()


def _shard(batch, r: int, world: int):
    """Rows ``[r m, (r + 1) m)`` of every tensor of ``batch`` (``m`` = rows / world)."""
    def part(v):
        m = v.shape[0] // world
        return v[r * m:(r + 1) * m]
    return tuple(part(v) for v in batch) if isinstance(batch, tuple) else part(batch)


def _check_data_parallel(model: nn.Module, two_player: bool, batch_size: int, world: int) -> None:
    if two_player:
        raise ValueError(f"fit: {type(model).__name__} trains by its own train_step, which fit cannot run "
                         "data-parallel; train it in one process (torch.distributed is initialized with "
                         f"{world} ranks)")
    if any(getattr(m, "memory_efficient", False) for m in model.modules()):
        raise ValueError(f"fit: {type(model).__name__} has memory_efficient=True, whose backward accumulates "
                         "parameter gradients in place, so DistributedDataParallel never averages them; "
                         "use memory_efficient=False for data-parallel training")
    if batch_size % world:
        raise ValueError(f"fit: batch_size {batch_size} (the global batch) must be divisible by the "
                         f"{world} ranks of the process group")


def _rank_seed(seed: int, r: int, step: int) -> int:
    """Model-side RNG of ranks r > 0 at a step: its own stream, a function of (seed, rank, step)
    so that a resumed run draws the same numbers (rank 0 keeps the checkpointed RNG state)."""
    return (seed * 1_000_003 + 7_368_787 * r + 104_729 * step) % (2 ** 63)


def _initialize_data_dependent(model: nn.Module, batch) -> None:
    """Run ActNorm's data-dependent initialisation on the first *global* batch on every rank,
    as one process would, before DDP takes over (each rank's shard would give other values)."""
    from gencore.nn.flow_layers import ActNorm

    if not any(isinstance(m, ActNorm) and not bool(m.initialized) for m in model.modules()):
        return
    with torch.no_grad(), torch.random.fork_rng(), gdist.local_only():
        model.loss(batch)


@torch.no_grad()
@torch.random.fork_rng()  # a loss that samples (a GAN's) must not shift the training RNG stream
def _evaluate(model: nn.Module, data: tuple[torch.Tensor, ...], batch: int = 2048) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    n = data[0].shape[0]
    for i in range(0, n, batch):
        idx = torch.arange(i, min(n, i + batch))
        b = len(idx)
        total += model.loss(_batch(data, idx)).item() * b
        count += b
    model.train(was_training)
    return total / count


def _optimizer_tensors(opt) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{k}"] = v.detach().contiguous().clone()
                meta["state"][str(pid)][k] = "tensor"
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def _optimizer_state_dict(tensors: dict, meta: dict) -> dict:
    state = {}
    for pid, entries in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"state.{pid}.{k}"] if v == "tensor" else v) for k, v in entries.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path, model: nn.Module, *, optimizer=None, step: int = 0, extra: dict | None = None) -> Path:
    """Write ``model.safetensors``, ``optimizer.safetensors`` (when given) and ``checkpoint.json``.

    ``optimizer`` is one optimizer or a dict ``{name: optimizer}`` (each saved under its name).

    The JSON holds the model's registered name and ``config`` (so :func:`load_checkpoint`
    rebuilds it without code), the step, the RNG state's owner and ``extra``.
    """
    from safetensors.torch import save_file

    from gencore.models import model_name

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    meta = {"format": FORMAT, "version": VERSION, "model": model_name(model),
            "config": getattr(model, "config", {}), "step": step, "extra": extra or {}}
    if isinstance(optimizer, dict):
        tensors, meta["optimizers"] = {}, {}
        for name, opt in optimizer.items():
            t, meta["optimizers"][name] = _optimizer_tensors(opt)
            tensors.update({f"{name}/{k}": v for k, v in t.items()})
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(path / "optimizer.safetensors"))
    elif optimizer is not None:
        tensors, opt_meta = _optimizer_tensors(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(path / "optimizer.safetensors"))
        meta["optimizer"] = opt_meta
    tmp = path / "checkpoint.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path / "checkpoint.json")  # the JSON is written last: its presence marks completion
    return path


def _read_meta(path: Path) -> dict:
    f = path / "checkpoint.json"
    if not f.exists():
        raise CheckpointError(f"no checkpoint in {path}: checkpoint.json is missing")
    try:
        meta = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupted checkpoint {f}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not a gencore checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{f}: unsupported checkpoint version {meta.get('version')!r}")
    return meta


def _load_tensors(f: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not f.exists():
        raise CheckpointError(f"corrupted checkpoint: {f.name} is missing in {f.parent}")
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own error types for bad headers/truncation
        raise CheckpointError(f"corrupted checkpoint file {f}: {e}") from e


def record_run_extra(path, extra: dict) -> None:
    """Adds ``extra`` (JSON-serialisable) to the ``extra`` record of the checkpoint in folder
    ``path``, e.g. the dataset a run was trained on, for ``gencore eval`` / ``sample``. Under
    ``torch.distributed`` only rank 0 writes, as only rank 0 writes checkpoints."""
    if gdist.rank() != 0:
        return
    meta_path = Path(path) / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["extra"].update(extra)
    meta_path.write_text(json.dumps(meta, indent=1))


def load_checkpoint(path, model: nn.Module | None = None, *, optimizer=None) -> tuple[nn.Module, dict]:
    """Load a checkpoint folder written by :func:`save_checkpoint` or :func:`fit`.

    Args:
        path: the folder.
        model: load into this model (its shapes must match); None rebuilds it from the JSON.
        optimizer: if given, its state (and the torch RNG state) is restored too; a dict
            ``{name: optimizer}`` restores each one saved under that name.

    Returns:
        ``(model, meta)`` with ``meta`` the checkpoint's JSON (step, config, history...).

    Raises:
        CheckpointError (a ValueError): missing, corrupted or mismatched checkpoint.
    """
    from gencore.models import build

    path = Path(path)
    meta = _read_meta(path)
    if model is None:
        model = build(meta["model"], meta["config"])
    state = _load_tensors(path / "model.safetensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not match the model: {e}") from e
    if isinstance(optimizer, dict):
        saved = meta.get("optimizers", {})
        if set(saved) != set(optimizer):
            raise CheckpointError(f"checkpoint {path} holds optimizers {sorted(saved)}, the model has "
                                  f"{sorted(optimizer)}")
        tensors = _load_tensors(path / "optimizer.safetensors")
        try:
            for name, opt in optimizer.items():
                pre = f"{name}/"
                own = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
                opt.load_state_dict(_optimizer_state_dict(own, saved[name]))
            torch.set_rng_state(tensors["rng.torch"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {path}: optimizer state does not match: {e}") from e
    elif optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"checkpoint {path} has no optimizer state to resume from")
        tensors = _load_tensors(path / "optimizer.safetensors")
        try:
            optimizer.load_state_dict(_optimizer_state_dict(tensors, meta["optimizer"]))
            torch.set_rng_state(tensors["rng.torch"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {path}: optimizer state does not match: {e}") from e
    return model, meta


def fit(model: nn.Module, data, *, steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
        eval_data=None, eval_every: int | None = None, checkpoint_dir=None,
        checkpoint_every: int | None = None, progress: bool = True, weight_decay: float = 0.0,
        schedule: str = "constant", batch_transform=None, keep_best: bool = False,
        resume: bool = True, callback=None) -> FitResult:
    """Train ``model`` by minimising ``model.loss(batch)`` with AdamW.

    A model with ``configure_optimizers(lr, weight_decay)`` and ``train_step(batch,
    optimizers, step)`` (a GAN) is trained by its own step instead, with its own optimizers
    (``lr`` and ``weight_decay`` are passed to it; ``schedule`` scales each optimizer's
    learning rates); ``loss(batch)`` is then only the evaluation loss.

    Args:
        model: any module with ``loss(batch) -> scalar``; ``batch`` is a tensor, or a tuple
            when ``data`` is a tuple (e.g. ``(x, context)``).
        data: ``(N, ...)`` tensor or tuple of tensors sharing the first dimension.
        steps: total number of optimizer steps (a resumed run continues up to it).
        batch_size, lr, weight_decay: minibatch size and AdamW settings.
        seed: seeds the batch order and torch's global RNG (model-side randomness).
        eval_data: held-out data of the same structure; its mean loss is recorded every
            ``eval_every`` steps (default: 10 evaluations per run) and at the end.
        checkpoint_dir: folder for checkpoints (written every ``checkpoint_every`` steps,
            default at each evaluation, and at the end). With ``resume=True`` an existing
            checkpoint there is loaded first and training continues from its step.
        progress: show a tqdm progress bar.
        schedule: ``"constant"`` learning rate, or ``"cosine"``: ``lr * (1 + cos(pi t / steps)) / 2``
            at step t (a function of the step alone, so resuming keeps it exact).
        keep_best: end with the parameters of the evaluation with the lowest ``eval_data``
            loss (early stopping without stopping); the best state is checkpointed too.
        batch_transform: ``f(batch, generator) -> batch`` applied to each training batch
            (e.g. a fresh dequantization), with a generator seeded by (seed, step).
        callback: ``callback(model, record)`` after each evaluation (e.g. sample snapshots);
            it may add entries to ``record`` and runs with the RNG state forked, so it does
            not change the training run.

    Data-parallel (an initialized process group of ``W > 1`` ranks; ``fit`` initializes it
    itself from ``torchrun``'s environment, gloo for a CPU model, nccl for a CUDA one):

    - the model is wrapped in ``DistributedDataParallel`` (starting from rank 0's
      parameters); ``batch_size`` is the global batch, divisible by ``W``; every rank forms
      the same global batch as one process (``batch_transform`` applied to the whole batch
      with the same generator) and trains on its contiguous ``batch_size / W`` rows;
    - ``train_loss`` is the mean over ranks (the global batch's loss for a mean loss);
    - evaluation runs on rank 0 alone, with distributed losses acting locally
      (:func:`gencore.distributed.local_only`), and its result is broadcast; ``callback``,
      the progress bar and checkpoints are rank 0's alone; every rank loads the checkpoint
      to resume (a shared folder) and returns once the last one is written;
    - model-side randomness: rank 0 keeps the single-process stream, rank ``r > 0`` draws
      from a stream reseeded from ``(seed, r, step)`` at each step (resumable);
    - ActNorm's data-dependent initialisation sees the first global batch, as in one process;
    - not supported (``ValueError``): two-player models (``train_step``) and
      ``memory_efficient=True`` flows, whose in-place gradient accumulation bypasses DDP.

    Returns:
        :class:`FitResult` with the model (in eval mode), the final step and the history:
        a list of ``{"step", "train_loss", "eval_loss", "seconds"}`` (two-player models:
        ``train_<name>`` for each number their ``train_step`` returns, in place of
        ``train_loss``).
    """
    if not hasattr(model, "loss"):
        raise TypeError(f"{type(model).__name__} has no loss(batch) method")
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if keep_best and eval_data is None:
        raise ValueError("keep_best needs eval_data")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    train_t = _as_tuple(data)
    eval_t = _as_tuple(eval_data) if eval_data is not None else None
    eval_every = eval_every or max(1, steps // 10)
    checkpoint_every = checkpoint_every or eval_every
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None

    two_player = callable(getattr(model, "train_step", None)) and callable(getattr(model, "configure_optimizers", None))
    first = next(model.parameters(), None)
    gdist.init_from_env(first.device if first is not None else "cpu")
    world, rank = gdist.world_size(), gdist.rank()
    if world > 1:
        _check_data_parallel(model, two_player, min(batch_size, train_t[0].shape[0]), world)

    torch.manual_seed(seed)
    model.train()
    if two_player:
        optimizer = model.configure_optimizers(lr, weight_decay)
        if not isinstance(optimizer, dict) or not optimizer:
            raise TypeError(f"{type(model).__name__}.configure_optimizers must return a non-empty dict of optimizers")
        base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizer.items()}
    else:
        optimizer = _make_optimizer(model, lr, weight_decay)
    start, history = 0, []
    best_loss, best_state = math.inf, None
    if ckpt is not None and resume and (ckpt / "checkpoint.json").exists():
        _, meta = load_checkpoint(ckpt, model, optimizer=optimizer)
        start = int(meta["step"])
        history = list(meta.get("extra", {}).get("history", []))
        if keep_best and (ckpt / "best.safetensors").exists():
            best_state = _load_tensors(ckpt / "best.safetensors")
            best_loss = float(meta["extra"].get("best_eval_loss", math.inf))
    batches = _Batches(train_t[0].shape[0], batch_size, seed)

    def global_batch(step: int):
        batch = _batch(train_t, batches.indices(step - 1))
        if batch_transform is not None:
            batch = batch_transform(batch, torch.Generator().manual_seed(seed * 1_000_003 + 7919 * step))
        return batch

    ddp = None
    if world > 1:
        if start < steps:
            _initialize_data_dependent(model, global_batch(start + 1))
        on_cuda = first is not None and first.device.type == "cuda"
        # static_graph: tolerates parameters that the loss never uses.
        ddp = torch.nn.parallel.DistributedDataParallel(
            _LossModule(model), device_ids=[first.device.index] if on_cuda else None, static_graph=True)

    bar = None
    if progress and start < steps and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=type(model).__name__, leave=False)
    t0, count, sums = time.perf_counter(), 0, {}
    step = start
    for step in range(start + 1, steps + 1):
        if schedule == "cosine":
            factor = 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
            if two_player:
                for name, opt in optimizer.items():
                    for group, base in zip(opt.param_groups, base_lrs[name]):
                        group["lr"] = base * factor
            else:
                for group in optimizer.param_groups:
                    group["lr"] = lr * factor
        if ddp is not None:
            if rank > 0:
                torch.manual_seed(_rank_seed(seed, rank, step))
            stats = _ddp_loss_step(ddp, optimizer, _shard(global_batch(step), rank, world), step, world)
        elif two_player:
            stats = model.train_step(global_batch(step), optimizer, step)
        else:
            stats = _loss_step(model, optimizer, global_batch(step), step)
        for k, v in stats.items():
            if not math.isfinite(v):
                raise FloatingPointError(f"{k} became {v} at step {step}; lower lr or check the data")
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(stats.items())[:3]})
        if step % eval_every == 0 or step == steps:
            rec = {"step": step, **{f"train_{k}": v / count for k, v in sums.items()},
                   "seconds": time.perf_counter() - t0}
            if eval_t is not None:
                if ddp is None:
                    rec["eval_loss"] = _evaluate(model, eval_t)
                else:  # ranks hold equal parameters: one evaluation serves all
                    with gdist.local_only():
                        value = _evaluate(model, eval_t) if rank == 0 else math.nan
                    rec["eval_loss"] = _broadcast_float(value)
                if keep_best and rec["eval_loss"] < best_loss:
                    best_loss = rec["eval_loss"]
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if ckpt is not None and rank == 0:
                        from safetensors.torch import save_file

                        ckpt.mkdir(parents=True, exist_ok=True)
                        save_file({k: v.contiguous() for k, v in best_state.items()}, str(ckpt / "best.safetensors"))
            if callback is not None and rank == 0:
                with torch.random.fork_rng():
                    callback(model, rec)
            history.append(rec)
            count, sums = 0, {}
        if ckpt is not None and rank == 0 and (step % checkpoint_every == 0 or step == steps):
            save_checkpoint(ckpt, model, optimizer=optimizer, step=step,
                            extra={"history": history, "seed": seed, "batch_size": batch_size, "lr": lr,
                                   "best_eval_loss": best_loss if keep_best else None})
    if bar is not None:
        bar.close()
    if world > 1:
        torch.distributed.barrier()  # the last checkpoint is complete when fit returns on any rank
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(model=model, step=max(step, start), history=history)
