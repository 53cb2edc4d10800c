"""One small training loop for every gencore model with a ``loss(batch)`` method.

Progress (tqdm), periodic evaluation, checkpoints (safetensors for tensors, JSON for the
config and the loop state: loading never unpickles) and exact resumption: a run stopped
at step k and resumed reaches the same parameters as one that never stopped.

Checkpoints are crash-safe: every file is written to a temporary name, fsynced and renamed;
tensor files carry the step and a random token in their names, and a manifest
(``checkpoint.json``, with the sha256 of each file) written last, atomically, commits a
checkpoint. A process killed at any moment leaves the previous complete checkpoint or the new
one; loading verifies the checksums and validates optimizer state against the parameters.
See :func:`save_checkpoint` for the layout.

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

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gencore import distributed as gdist
from gencore._arguments import plain_config
from gencore.metrics._checks import check_int, check_real

__all__ = ["fit", "FitResult", "save_checkpoint", "load_checkpoint", "record_run_extra", "CheckpointError",
           "RunFolderBusy", "run_lock"]

FORMAT = "gencore-checkpoint"
VERSION = 2  # 1: fixed file names, no manifest checksums (still loaded)


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupted or does not match the model."""


@dataclass
class FitResult:
    model: nn.Module
    step: int
    history: list[dict] = field(default_factory=list)


def _as_tuple(data, name: str = "data") -> tuple[torch.Tensor, ...]:
    t = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    t = tuple(v for v in t if v is not None)
    if not t or not all(isinstance(v, torch.Tensor) for v in t):
        raise TypeError(f"{name} must be a tensor or a tuple of tensors")
    if any(v.dim() == 0 for v in t):
        raise ValueError(f"{name} must have a batch dimension (examples first), got shapes {[tuple(v.shape) for v in t]}")
    if any(v.device.type == "meta" for v in t):
        raise ValueError(f"{name} is on the meta device (shapes without values): fit needs real data")
    n = t[0].shape[0]
    if n == 0:
        raise ValueError(f"{name} is empty")
    if any(v.shape[0] != n for v in t):
        raise ValueError(f"all tensors of {name} must share the first dimension: {[tuple(v.shape) for v in t]}")
    if t[0].dtype.is_floating_point and not torch.isfinite(t[0]).all():
        raise ValueError(f"{name} contains NaN or infinite values")
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
            g = torch.Generator().manual_seed(_seed64(self.seed * 1_000_003 + epoch))
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


def _seed64(v: int) -> int:
    """A generator seed from any int: ``v`` modulo 2^64, the value torch itself takes for a
    negative seed (so every seed that worked keeps its stream; larger ones no longer overflow)."""
    return v % (1 << 64)


def _rank_seed(seed: int, r: int, step: int) -> int:
    """Model-side RNG of ranks r > 0 at a step: its own stream, a function of (seed, rank, step)
    so that a resumed run draws the same numbers (rank 0 keeps the checkpointed RNG state)."""
    return (seed * 1_000_003 + 7_368_787 * r + 104_729 * step) % (2 ** 63)


def _initialize_data_dependent(model: nn.Module, batch) -> None:
    """Data-dependent initialisation (a module whose ``needs_data_init`` is true, such as an
    uninitialised :class:`gencore.nn.ActNorm`, initialises itself on its first training
    forward) on the first *global* batch on every rank, as one process would, before DDP
    takes over (each rank's shard would give other values)."""
    if not any(getattr(m, "needs_data_init", False) for m in model.modules()):
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


# Per-parameter optimizer state that must have the parameter's shape and dtype (and, once
# loaded, its device): the moment / momentum buffers of torch's element-wise optimizers.
# A smaller one makes fused kernels (fused AdamW) read and write out of bounds.
_ELEMENTWISE_STATE = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg",
                                "grad_avg", "acc_delta", "sum", "ax", "prev", "step_size"})


def _param_label(p, names: dict[int, str], g: int, i: int) -> str:
    name = names.get(id(p))
    return f"parameter {name!r}" if name else f"parameter {i} of param group {g}"


def _check_step_value(v, where: str) -> None:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise CheckpointError(f"{where}: 'step' must be a scalar, got shape {tuple(v.shape)}")
        if v.dtype.is_complex or v.dtype == torch.bool:
            raise CheckpointError(f"{where}: 'step' has dtype {v.dtype}")
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
            or v != int(v) or v > 2 ** 53:
        raise CheckpointError(f"{where}: 'step' must be a finite integer >= 0, got {v!r}")


def _validate_optimizer_state(opt, sd: dict, names: dict[int, str], what: str) -> None:
    """Check a state dict about to be loaded into ``opt`` against its parameters: the group
    structure, that every state entry belongs to a parameter, that the element-wise state
    tensors have the parameter's shape and dtype, and that step counts are sane. Raises
    :class:`CheckpointError` naming the parameter (before anything is loaded)."""
    groups, saved_groups = opt.param_groups, sd.get("param_groups")
    if not isinstance(saved_groups, list) or len(saved_groups) != len(groups):
        n = len(saved_groups) if isinstance(saved_groups, list) else saved_groups
        raise CheckpointError(f"{what}: the checkpoint has {n} param groups, the optimizer {len(groups)}")
    id_map, where = {}, {}
    for g, (group, saved) in enumerate(zip(groups, saved_groups)):
        ids = saved.get("params") if isinstance(saved, dict) else None
        if not isinstance(ids, list) or len(ids) != len(group["params"]):
            raise CheckpointError(f"{what}: param group {g} holds {len(ids) if isinstance(ids, list) else ids} "
                                  f"parameters in the checkpoint, {len(group['params'])} in the optimizer")
        for i, (pid, p) in enumerate(zip(ids, group["params"])):
            if isinstance(pid, bool) or not isinstance(pid, int) or pid in id_map:
                raise CheckpointError(f"{what}: param group {g} has an invalid or repeated parameter index {pid!r}")
            id_map[pid], where[pid] = p, (g, i)
    for pid, st in sd["state"].items():
        if pid not in id_map:
            raise CheckpointError(f"{what}: state for parameter index {pid}, which no param group holds")
        p = id_map[pid]
        label = f"{what}: optimizer state of {_param_label(p, names, *where[pid])}"
        if not isinstance(st, dict):
            raise CheckpointError(f"{label} is not a mapping")
        for k, v in st.items():
            if k == "step":
                _check_step_value(v, label)
            elif k in _ELEMENTWISE_STATE:
                if not isinstance(v, torch.Tensor):
                    raise CheckpointError(f"{label}: {k!r} is {type(v).__name__}, not a tensor")
                if v.shape != p.shape or v.dtype != p.dtype:
                    raise CheckpointError(f"{label}: {k!r} has shape {tuple(v.shape)} and dtype {v.dtype}, "
                                          f"the parameter {tuple(p.shape)} and {p.dtype}")
        if isinstance(opt, torch.optim.Adam | torch.optim.AdamW) and st:
            group = groups[where[pid][0]]
            need = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group.get("amsgrad") else set())
            if not need <= set(st):
                raise CheckpointError(f"{label}: missing {sorted(need - set(st))}")


def _check_loaded_optimizer(opt, names: dict[int, str], what: str) -> None:
    """After ``load_state_dict``: every element-wise state tensor lives on its parameter's
    device with its shape and dtype (torch casts and moves them; this catches what it does not)."""
    for g, group in enumerate(opt.param_groups):
        for i, p in enumerate(group["params"]):
            for k, v in opt.state.get(p, {}).items():
                if k in _ELEMENTWISE_STATE and isinstance(v, torch.Tensor) and \
                        (v.shape != p.shape or v.dtype != p.dtype or v.device != p.device):
                    raise CheckpointError(
                        f"{what}: optimizer state of {_param_label(p, names, g, i)}: {k!r} is "
                        f"{tuple(v.shape)} {v.dtype} on {v.device}, the parameter {tuple(p.shape)} {p.dtype} "
                        f"on {p.device}")


def _load_optimizer(opt, sd: dict, names: dict[int, str], what: str) -> None:
    _validate_optimizer_state(opt, sd, names, what)
    try:
        opt.load_state_dict(sd)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{what}: optimizer state does not match: {e}") from e
    _check_loaded_optimizer(opt, names, what)


# --- on-disk layout ---------------------------------------------------------------------
MANIFEST = "checkpoint.json"
# Versioned tensor files: "<kind>.<step, 8+ digits>.<8 hex digits>.safetensors".
_VERSIONED = re.compile(r"^(model|optimizer|best)\.\d{8,}\.[0-9a-f]{8}\.safetensors$")
# What an interrupted save can leave behind (deleted by the next save).
_LEFTOVER = re.compile(r"^((model|optimizer|best)\.\d{8,}\.[0-9a-f]{8}\.safetensors|checkpoint\.json|best\.safetensors)"
                       r"\.tmp$")
# Fixed names of version 1, and the unversioned best state of early version-2 runs.
_LEGACY = ("model.safetensors", "optimizer.safetensors", "best.safetensors")


def _fsync_dir(path: Path) -> None:
    """Make the renames in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(f: Path, data, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``f`` so that ``f`` is at every moment either its old content (or
    absent) or the whole new content: write ``f.tmp``, fsync it, rename it over ``f``.
    ``data``: bytes, or a function that writes the content into the binary file it is given
    (streamed, never held whole); a failed write removes ``f.tmp``."""
    f = Path(f)
    tmp = f.with_name(f.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, f)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        _fsync_dir(f.parent)


def _write_tensors(folder: Path, kind: str, step: int, tensors: dict[str, torch.Tensor]) -> dict:
    """Write a new versioned tensor file; return its manifest entry."""
    from safetensors.torch import save

    data = save(tensors)
    name = f"{kind}.{step:08d}.{secrets.token_hex(4)}.safetensors"
    _atomic_write(folder / name, data, sync_dir=False)  # save_checkpoint syncs the folder once
    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_manifest(folder: Path, meta: dict) -> None:
    _atomic_write(folder / MANIFEST, json.dumps(meta, indent=1).encode())


def _remove_unreferenced(folder: Path, meta: dict) -> None:
    """Delete the tensor files of earlier checkpoints and what interrupted saves left, once
    ``meta`` (already in place) no longer refers to them. Only gencore's own names are touched."""
    keep = {e["name"] for e in meta.get("files", {}).values()}
    for f in folder.iterdir():
        n = f.name
        if n not in keep and (_VERSIONED.match(n) or _LEFTOVER.match(n) or n in _LEGACY):
            try:
                f.unlink()
            except OSError:
                pass


def save_checkpoint(path, model: nn.Module, *, optimizer=None, step: int = 0, extra: dict | None = None,
                    _keep: dict | None = None) -> Path:
    """Write a checkpoint into folder ``path``, crash-safely.

    ``optimizer`` is one optimizer or a dict ``{name: optimizer}`` (each saved under its name);
    its tensors go with the torch RNG state into the optimizer file.

    On-disk layout (format version 2)::

        path/checkpoint.json                          the manifest, see below
        path/model.<step>.<token>.safetensors         model.state_dict()
        path/optimizer.<step>.<token>.safetensors     optimizer state tensors + "rng.torch"
        path/best.<step>.<token>.safetensors          fit(keep_best=True): the best evaluation's
                                                      model.state_dict(), written when it is found

    ``<step>`` is the step in 8+ digits and ``<token>`` 8 random hex digits, so a new save never
    touches the files the current manifest names. The manifest is JSON: ``format``,
    ``version`` (2), ``model`` (registered name), ``config`` (so :func:`load_checkpoint`
    rebuilds the model without code), ``step``, ``extra``, the optimizers' non-tensor state
    (``optimizer`` or ``optimizers``), and ``files``: ``{"model": {"name", "bytes", "sha256"},
    "optimizer": {...}, "best": {...}}`` (``best`` when ``fit`` keeps a best state: the file it
    wrote, passed on by ``fit`` so that the manifest names it; load it with
    ``load_checkpoint(path, best=True)``).

    Write order: each tensor file is written to ``<name>.tmp``, fsynced and renamed; the folder
    is fsynced; then the manifest is written the same way (``checkpoint.json.tmp``, fsync,
    rename, folder fsync) -- the rename of the manifest is the commit point; only then are the
    previous checkpoint's tensor files (and leftovers of interrupted saves, and the fixed-name
    files of a version-1 checkpoint) deleted. A process killed at any moment therefore leaves
    either the previous complete checkpoint or the new one, never a mix: before the commit the
    old manifest still names the old, untouched files; after it the new files are durable.
    """
    from gencore.models import model_name

    step = check_int(step, "step")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "model": model_name(model),
            "config": getattr(model, "config", {}), "step": step, "extra": plain_config(extra or {})}
    opt_tensors = None
    if isinstance(optimizer, dict):
        opt_tensors, meta["optimizers"] = {}, {}
        for name, opt in optimizer.items():
            t, meta["optimizers"][name] = _optimizer_tensors(opt)
            opt_tensors.update({f"{name}/{k}": v for k, v in t.items()})
    elif optimizer is not None:
        opt_tensors, meta["optimizer"] = _optimizer_tensors(optimizer)
    json.dumps(meta)  # not serialisable: fail before writing anything
    files = {"model": _write_tensors(path, "model", step, state)}
    if opt_tensors is not None:
        opt_tensors["rng.torch"] = torch.get_rng_state()
        files["optimizer"] = _write_tensors(path, "optimizer", step, opt_tensors)
    for kind, entry in (_keep or {}).items():  # files already written (fit's best state)
        files[kind] = entry
    meta["files"] = files
    _fsync_dir(path)  # the tensor files' renames are durable before the manifest names them
    _write_manifest(path, meta)  # the commit point
    _remove_unreferenced(path, meta)
    return path


def _read_meta(path: Path) -> dict:
    f = path / MANIFEST
    if not f.exists():
        raise CheckpointError(f"no checkpoint in {path}: checkpoint.json is missing")
    try:
        meta = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupted checkpoint {f}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not a gencore checkpoint")
    if meta.get("version") not in (1, VERSION):
        raise CheckpointError(f"{f}: unsupported checkpoint version {meta.get('version')!r}")
    if meta["version"] >= 2:
        files = meta.get("files")
        if not isinstance(files, dict) or "model" not in files or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and _VERSIONED.match(e["name"])
                and isinstance(e.get("sha256"), str) and isinstance(e.get("bytes"), int) for e in files.values()):
            raise CheckpointError(f"corrupted checkpoint {f}: its 'files' entry is missing or malformed")
        if ("optimizer" in files) != ("optimizer" in meta or "optimizers" in meta):
            raise CheckpointError(f"corrupted checkpoint {f}: optimizer state and optimizer file disagree")
    if not isinstance(meta.get("model"), str):
        raise CheckpointError(f"corrupted checkpoint {f}: 'model' is missing or not a model name")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"corrupted checkpoint {f}: 'config' is missing or not a mapping")
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"corrupted checkpoint {f}: step {step!r} is not an int >= 0")
    for kind in ("model", "optimizer"):  # their names carry the step they were saved at
        entry = meta.get("files", {}).get(kind)
        if entry is not None and int(entry["name"].split(".")[1]) != step:
            raise CheckpointError(f"corrupted checkpoint {f}: step {step} but its {kind} file {entry['name']} was "
                                  f"saved at step {int(entry['name'].split('.')[1])}")
    if not isinstance(meta.get("extra", {}), dict):
        raise CheckpointError(f"corrupted checkpoint {f}: 'extra' is not a mapping")
    return meta


class _SupersededFile(CheckpointError):
    """A file named by the manifest is missing: outside damage, or a newer checkpoint saved
    after the manifest was read (load_checkpoint reads the manifest again to tell)."""


def _load_tensors(f: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not f.exists():
        raise CheckpointError(f"corrupted checkpoint: {f.name} is missing in {f.parent}")
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own error types for bad headers/truncation
        raise CheckpointError(f"corrupted checkpoint file {f}: {e}") from e


def _load_verified(path: Path, meta: dict, kind: str) -> dict[str, torch.Tensor]:
    """The tensors of the manifest's ``kind`` file ("model" / "optimizer"), after checking
    its size and sha256 against the manifest (version 1: the fixed-name file, unverified)."""
    from safetensors.torch import load

    if meta["version"] == 1:
        return _load_tensors(path / f"{kind}.safetensors")
    entry = meta["files"][kind]
    f = path / entry["name"]
    try:
        data = f.read_bytes()
    except FileNotFoundError:
        raise _SupersededFile(f"corrupted checkpoint: {f.name}, named by {MANIFEST}, is missing in {path}") from None
    if len(data) != entry["bytes"]:
        raise CheckpointError(f"corrupted checkpoint file {f}: {len(data)} bytes, {MANIFEST} records "
                              f"{entry['bytes']} (truncated or overwritten)")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise CheckpointError(f"corrupted checkpoint file {f}: sha256 checksum mismatch ({digest}, "
                              f"{MANIFEST} records {entry['sha256']})")
    try:
        return load(data)
    except Exception as e:  # a file that matches its checksum but is not safetensors
        raise CheckpointError(f"corrupted checkpoint file {f}: {e}") from e


def _check_model_state(path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Refuse what ``load_state_dict`` would take silently: a tensor of another kind than
    the model's (``copy_`` would cast int32 into float32 weights, or floats into an integer
    counter; float32 into a float64 model is a change of precision and is allowed) and NaN
    or infinite values in a tensor the model has (every prediction would be NaN; PCA checks
    its fitted state itself). Keys and shapes are load_state_dict's to check."""
    own = model.state_dict()
    checks_itself = hasattr(model, "_state_problem")  # PCA: its variance ratios may be NaN (constant data)
    for key, t in state.items():
        mine = own.get(key)
        if mine is None:
            continue
        if t.is_floating_point() != mine.is_floating_point() or (not t.is_floating_point() and t.dtype != mine.dtype):
            raise CheckpointError(f"checkpoint {path} does not match the model: {key} is {t.dtype}, the model's "
                                  f"{key} is {mine.dtype}")
        if t.is_floating_point() and not checks_itself and not torch.isfinite(t).all():
            raise CheckpointError(f"corrupted checkpoint {path}: {key} holds NaN or infinite values")


def record_run_extra(path, extra: dict) -> None:
    """Adds ``extra`` (JSON-serialisable) to the ``extra`` record of the checkpoint in folder
    ``path``, e.g. the dataset a run was trained on, for ``gencore eval`` / ``sample``. Under
    ``torch.distributed`` only rank 0 writes, as only rank 0 writes checkpoints.

    The manifest is replaced atomically (temporary file, fsync, rename): a process killed
    meanwhile leaves the previous manifest, never a truncated one."""
    if gdist.rank() != 0:
        return
    path = Path(path)
    meta = _read_meta(path)
    meta.setdefault("extra", {}).update(extra)
    _write_manifest(path, meta)


def load_checkpoint(path, model: nn.Module | None = None, *, optimizer=None,
                    best: bool = False) -> tuple[nn.Module, dict]:
    """Load a checkpoint folder written by :func:`save_checkpoint` or :func:`fit`.

    The tensor files named by the manifest (``checkpoint.json``) are checked against its
    recorded size and sha256 before use; optimizer state is validated against the
    optimizer's parameters before it is loaded (see below). A checkpoint written before
    format version 2 (``model.safetensors`` / ``optimizer.safetensors`` next to a
    ``checkpoint.json`` without ``files``) still loads, without checksums; the next
    :func:`save_checkpoint` into the folder converts it. There is no automatic fallback to
    an older checkpoint: :func:`save_checkpoint` never leaves a torn one behind, so a
    mismatch means outside damage and is reported.

    Args:
        path: the folder.
        model: load into this model (its shapes must match); None rebuilds it from the JSON.
        optimizer: if given, its state (and the torch RNG state) is restored too; a dict
            ``{name: optimizer}`` restores each one saved under that name.
        best: load the parameters of the best evaluation that ``fit(keep_best=True)`` kept
            (checksummed like the others) instead of the last step's; a checkpoint without
            one raises :class:`CheckpointError`.

    Returns:
        ``(model, meta)`` with ``meta`` the checkpoint's JSON (step, config, history...).

    Raises:
        CheckpointError (a ValueError): missing, truncated, corrupted (checksum mismatch) or
        mismatched checkpoint, naming the file; optimizer state that does not fit the
        parameters (a moment buffer whose shape or dtype differs from its parameter's, state
        for a parameter the optimizer does not have, a step count that is not a finite
        integer >= 0), naming the parameter -- checked before the optimizer is touched, as a
        fused AdamW step would otherwise read and write out of bounds.
    """
    path = Path(path)
    meta, retries = _read_meta(path), 2
    while True:
        try:
            return _load_from(path, meta, model, optimizer, best)
        except _SupersededFile:
            # A run saving into the folder meanwhile replaced the checkpoint the manifest
            # named (a reader's race, not damage): read the new one, unless nothing changed.
            newer = _read_meta(path)
            if not retries or newer == meta:
                raise
            meta, retries = newer, retries - 1


def _load_from(path: Path, meta: dict, model: nn.Module | None, optimizer, best: bool) -> tuple[nn.Module, dict]:
    """load_checkpoint's work on the manifest ``meta`` read from ``path``."""
    from gencore.models import build

    if model is None:
        model = build(meta["model"], meta["config"])
    if best and "best" not in meta.get("files", {}):
        raise CheckpointError(f"checkpoint {path} holds no best state (it was not trained with keep_best)")
    state = _load_verified(path, meta, "best" if best else "model")
    _check_model_state(path, model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not match the model: {e}") from e
    if optimizer is None:
        return model, meta
    names = {id(p): n for n, p in model.named_parameters()}
    if isinstance(optimizer, dict):
        saved = meta.get("optimizers", {})
        if set(saved) != set(optimizer):
            raise CheckpointError(f"checkpoint {path} holds optimizers {sorted(saved)}, the model has "
                                  f"{sorted(optimizer)}")
        tensors = _load_verified(path, meta, "optimizer")
        try:
            sds = {}
            for name in optimizer:
                pre = f"{name}/"
                own = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
                sds[name] = _optimizer_state_dict(own, saved[name])
            rng = tensors["rng.torch"]
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {path}: optimizer state does not match: {e!r}") from e
        for name, opt in optimizer.items():  # validate all before loading any
            _validate_optimizer_state(opt, sds[name], names, f"checkpoint {path}, optimizer {name!r}")
        for name, opt in optimizer.items():
            _load_optimizer(opt, sds[name], names, f"checkpoint {path}, optimizer {name!r}")
    else:
        if "optimizer" not in meta:
            raise CheckpointError(f"checkpoint {path} has no optimizer state to resume from")
        tensors = _load_verified(path, meta, "optimizer")
        try:
            sd = _optimizer_state_dict(tensors, meta["optimizer"])
            rng = tensors["rng.torch"]
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {path}: optimizer state does not match: {e!r}") from e
        _load_optimizer(optimizer, sd, names, f"checkpoint {path}")
    try:
        torch.set_rng_state(rng)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: invalid RNG state: {e}") from e
    return model, meta


# --- the pieces of fit ----------------------------------------------------------------------

LOCK = ".lock"


class RunFolderBusy(CheckpointError):
    """Another process is training into the same checkpoint folder."""


@contextlib.contextmanager
def run_lock(folder):
    """Hold an exclusive lock on run folder ``folder`` (created if needed) for the ``with``
    block: a second process (another ``gencore train``, or ``fit``) on the same folder raises
    :class:`RunFolderBusy` naming the holder's pid instead of both writing checkpoints. The
    lock is an ``flock`` on ``folder/.lock``: the kernel releases it when the holder exits,
    however it exits (a SIGKILLed run leaves no stale lock). Where ``fcntl`` does not exist
    the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderBusy(f"run folder {folder} is in use by another training process (pid {holder}); "
                                "wait for it to finish or train into another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _jsonable(v):
    """``v`` as JSON reads it back (numpy scalars and arrays as the Python values they hold)."""
    return json.loads(json.dumps(plain_config(v)))


def _changes(saved: dict, now: dict) -> list[str]:
    """``key: saved -> now`` for every entry that differs (both JSON-normalised)."""
    saved, now = _jsonable(saved), _jsonable(now)
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)]


def _saved_history(path: Path, meta: dict, start: int) -> list[dict]:
    """The evaluation records of a checkpoint at step ``start``, checked: a list of mappings
    whose ``step`` values are ints increasing within ``[1, start]`` and whose ``eval_loss``
    and ``train_*`` values are numbers (a callback may add entries of any JSON kind); and
    ``best_eval_loss`` a number or null (a crafted manifest must not fail later, inside a
    summary)."""
    extra = meta.get("extra", {})
    history = extra.get("history", [])
    where = f"corrupted checkpoint {path / MANIFEST}"
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"{where}: extra.history is not a list of records")
    last = 0
    for r in history:
        step = r.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or not last < step <= start:
            raise CheckpointError(f"{where}: extra.history has a record at step {step!r}; steps must increase "
                                  f"within [1, {start}]")
        last = step
        numbers = {k: v for k, v in r.items() if k == "eval_loss" or k.startswith("train_")}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
            raise CheckpointError(f"{where}: extra.history's record at step {step} holds a loss that is not a number")
    loss = extra.get("best_eval_loss")
    if loss is not None and (isinstance(loss, bool) or not isinstance(loss, (int, float))):
        raise CheckpointError(f"{where}: extra.best_eval_loss is {loss!r}, not a number")
    return list(history)


def _check_resume(path: Path, meta: dict, model: nn.Module, settings: dict, allow_changes: bool) -> None:
    """Refuse to resume a checkpoint trained with another model, config, data or training
    settings, unless ``allow_changes``."""
    from gencore.models import model_name

    extra = meta.get("extra", {})
    saved = {"model": meta.get("model"), "config": meta.get("config")}
    now = {"model": model_name(model), "config": getattr(model, "config", {})}
    for k, v in settings.items():  # a setting the checkpoint did not record is not compared
        if extra.get(k) is not None:
            saved[k], now[k] = extra[k], v
    diff = _changes(saved, now)
    if diff and not allow_changes:
        raise CheckpointError(
            f"run folder {path} holds a checkpoint (step {meta['step']}) trained differently; resuming it "
            f"would continue under other settings: {'; '.join(diff)}. Train into a new folder, or allow "
            "the changes explicitly (fit(allow_changes=True), gencore train --allow-changes)")


class _BestKeeper:
    """The parameters of the best evaluation so far (``fit(keep_best=True)``), and the file
    that holds them: a versioned ``best.<step>.<token>.safetensors`` written when a new best
    is found (atomically) and named by the next checkpoint's manifest, so a resumed run
    restores exactly the best state it had at its checkpoint (a newer, unnamed best file is
    removed and found again by the replayed steps)."""

    def __init__(self, enabled: bool, folder: Path | None, write: bool) -> None:
        self.enabled, self.folder, self.write = enabled, folder, write
        self.loss, self.state, self.entry = math.inf, None, None

    def restore(self, path: Path, meta: dict) -> None:
        if self.enabled and "best" in meta.get("files", {}):
            self.state = _load_verified(path, meta, "best")
            self.loss = float(meta["extra"].get("best_eval_loss", math.inf))
            self.entry = meta["files"]["best"]

    def offer(self, model: nn.Module, loss: float, step: int) -> None:
        if not self.enabled or not loss < self.loss:
            return
        self.loss = loss
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.folder is not None and self.write:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.entry = _write_tensors(self.folder, "best", step, {k: v.contiguous() for k, v in self.state.items()})
            _fsync_dir(self.folder)

    def files(self) -> dict:
        return {"best": self.entry} if self.entry is not None else {}


def _check_fit_args(model, steps, batch_size, lr, seed, weight_decay, eval_every, checkpoint_every, keep_best,
                    eval_data, schedule, batch_transform, callback, checkpoint_dir) -> dict:
    """The numeric arguments checked, as plain Python numbers (numpy scalars such as
    ``np.int64(100)`` steps are taken: they reach the checkpoint's JSON and the seed)."""
    if not hasattr(model, "loss"):
        raise TypeError(f"{type(model).__name__} has no loss(batch) method")
    plain = {}
    for name, v, optional in (("steps", steps, False), ("batch_size", batch_size, False),
                              ("eval_every", eval_every, True), ("checkpoint_every", checkpoint_every, True)):
        if optional and v is None:
            plain[name] = None
            continue
        plain[name] = check_int(v, name)  # TypeError for a bool or a non-integer
        if v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    plain["seed"] = check_int(seed, "seed")
    plain["lr"] = check_real(lr, "lr")  # TypeError for a bool (True is not a learning rate) or a non-number
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    plain["weight_decay"] = check_real(weight_decay, "weight_decay")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if keep_best and eval_data is None:
        raise ValueError("keep_best needs eval_data")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    for name, fn in (("batch_transform", batch_transform), ("callback", callback)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a function or None, got {type(fn).__name__} {fn!r}")
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a folder path (str or PathLike) or None, got "
                        f"{type(checkpoint_dir).__name__} {checkpoint_dir!r}")
    return plain


def _optimizers(model: nn.Module, two_player: bool, lr: float, weight_decay: float) -> dict:
    """Every model's optimizers as ``{name: optimizer}``: a two-player model's own, else one
    AdamW named ``"model"`` (saved in the single-optimizer checkpoint form)."""
    if not two_player:
        return {"model": _make_optimizer(model, lr, weight_decay)}
    opts = model.configure_optimizers(lr, weight_decay)
    if not isinstance(opts, dict) or not opts:
        raise TypeError(f"{type(model).__name__}.configure_optimizers must return a non-empty dict of optimizers")
    return opts


def _saved_form(optimizers: dict, two_player: bool):
    return optimizers if two_player else optimizers["model"]


def _step_function(model, optimizers: dict, two_player: bool, ddp, seed: int, rank: int, world: int):
    """The training step, chosen once: ``step_fn(batch, step) -> {name: float}``."""
    if ddp is not None:
        opt = optimizers["model"]

        def step_fn(batch, step):
            if rank > 0:
                torch.manual_seed(_rank_seed(seed, rank, step))
            return _ddp_loss_step(ddp, opt, _shard(batch, rank, world), step, world)
        return step_fn
    if two_player:
        return lambda batch, step: model.train_step(batch, optimizers, step)
    opt = optimizers["model"]
    return lambda batch, step: _loss_step(model, opt, batch, step)


def _schedule(optimizers: dict, schedule: str, steps: int):
    """``set_lr(step)``: the learning rates of ``schedule`` at ``step`` (a function of the step
    alone, so resuming keeps it exact)."""
    base = {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()}

    def set_lr(step: int) -> None:
        if schedule != "cosine":
            return
        factor = 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        for name, opt in optimizers.items():
            for group, lr in zip(opt.param_groups, base[name]):
                group["lr"] = lr * factor
    return set_lr


def fit(model: nn.Module, data, *, steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
        eval_data=None, eval_every: int | None = None, checkpoint_dir=None,
        checkpoint_every: int | None = None, progress: bool = True, weight_decay: float = 0.0,
        schedule: str = "constant", batch_transform=None, keep_best: bool = False,
        resume: bool = True, callback=None, metadata: dict | None = None,
        allow_changes: bool = False) -> FitResult:
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
        eval_data: held-out data of the same structure (a validation split: with
            ``keep_best`` it selects the parameters); its mean loss is recorded every
            ``eval_every`` steps (default: 10 evaluations per run) and at the end.
        checkpoint_dir: folder for checkpoints (written every ``checkpoint_every`` steps,
            default at each evaluation, and at the end; crash-safe, see
            :func:`save_checkpoint`). The folder is locked while ``fit`` runs
            (:func:`run_lock`): a second process training into it gets an error. With
            ``resume=True`` an existing checkpoint there is loaded first and training
            continues from its step: a run killed at any moment and resumed ends with the
            same parameters and optimizer state as one never killed.
        progress: show a tqdm progress bar.
        schedule: ``"constant"`` learning rate, or ``"cosine"``: ``lr * (1 + cos(pi t / steps)) / 2``
            at step t (a function of the step alone, so resuming keeps it exact).
        keep_best: end with the parameters of the evaluation with the lowest ``eval_data``
            loss (early stopping without stopping); the best state is checkpointed too
            (``load_checkpoint(path, best=True)``).
        batch_transform: ``f(batch, generator) -> batch`` applied to each training batch
            (e.g. a fresh dequantization), with a generator seeded by (seed, step).
        callback: ``callback(model, record)`` after each evaluation (e.g. sample snapshots);
            it may add entries to ``record`` and runs with the RNG state forked, so it does
            not change the training run.
        metadata: JSON-serialisable facts about the run (e.g. ``{"data": "moons"}``), saved in
            every checkpoint as ``extra["run"]``.
        allow_changes: resume a checkpoint even though the model, its config, ``metadata``,
            ``seed``, ``batch_size``, ``lr``, ``weight_decay``, ``schedule`` or ``keep_best``
            differ from what it was trained with; by default that raises
            :class:`CheckpointError` listing the differences (``steps`` may always grow; a
            checkpoint past ``steps`` is refused too, and kept as it is when allowed).

    Data-parallel (an initialized process group of ``W > 1`` ranks; ``fit`` initializes it
    itself from ``torchrun``'s environment, gloo for a CPU model, nccl for a CUDA one):

    - the model is wrapped in ``DistributedDataParallel`` (starting from rank 0's
      parameters); ``batch_size`` is the global batch, divisible by ``W``; every rank forms
      the same global batch as one process (``batch_transform`` applied to the whole batch
      with the same generator) and trains on its contiguous ``batch_size / W`` rows;
    - ``train_loss`` is the mean over ranks (the global batch's loss for a mean loss);
    - evaluation runs on rank 0 alone, with distributed losses acting locally
      (:func:`gencore.distributed.local_only`), and its result is broadcast; ``callback``,
      the progress bar, checkpoints and the folder lock are rank 0's alone; every rank loads
      the checkpoint to resume (a shared folder) and returns once the last one is written;
    - model-side randomness: rank 0 keeps the single-process stream, rank ``r > 0`` draws
      from a stream reseeded from ``(seed, r, step)`` at each step (resumable);
    - data-dependent initialisation (modules with ``needs_data_init``, e.g. ActNorm) sees
      the first global batch, as in one process;
    - not supported (``ValueError``): two-player models (``train_step``) and
      ``memory_efficient=True`` flows, whose in-place gradient accumulation bypasses DDP.

    Returns:
        :class:`FitResult` with the model (in eval mode), the final step and the history:
        a list of ``{"step", "train_loss", "eval_loss", "seconds"}`` (two-player models:
        ``train_<name>`` for each number their ``train_step`` returns, in place of
        ``train_loss``).
    """
    plain = _check_fit_args(model, steps, batch_size, lr, seed, weight_decay, eval_every, checkpoint_every,
                            keep_best, eval_data, schedule, batch_transform, callback, checkpoint_dir)
    steps, batch_size, lr, seed = plain["steps"], plain["batch_size"], plain["lr"], plain["seed"]
    weight_decay, eval_every, checkpoint_every = plain["weight_decay"], plain["eval_every"], plain["checkpoint_every"]
    if metadata is not None:
        try:
            metadata = _jsonable(metadata)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata must be JSON-serialisable: {e}") from e
    train_t = _as_tuple(data)
    eval_t = _as_tuple(eval_data, "eval_data") if eval_data is not None else None
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    first = next(model.parameters(), None)
    gdist.init_from_env(first.device if first is not None else "cpu")
    lock = run_lock(ckpt) if ckpt is not None and gdist.rank() == 0 else contextlib.nullcontext()
    with lock:
        return _fit(model, train_t, eval_t, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                    eval_every=eval_every or max(1, steps // 10), ckpt=ckpt, checkpoint_every=checkpoint_every,
                    progress=progress, weight_decay=weight_decay, schedule=schedule,
                    batch_transform=batch_transform, keep_best=keep_best, resume=resume, callback=callback,
                    metadata=metadata, allow_changes=allow_changes)


def _fit(model, train_t, eval_t, *, steps, batch_size, lr, seed, eval_every, ckpt, checkpoint_every, progress,
         weight_decay, schedule, batch_transform, keep_best, resume, callback, metadata, allow_changes):
    checkpoint_every = checkpoint_every or eval_every
    two_player = callable(getattr(model, "train_step", None)) and callable(getattr(model, "configure_optimizers", None))
    world, rank = gdist.world_size(), gdist.rank()
    if world > 1:
        _check_data_parallel(model, two_player, min(batch_size, train_t[0].shape[0]), world)

    torch.manual_seed(_seed64(seed))
    model.train()
    optimizers = _optimizers(model, two_player, lr, weight_decay)
    set_lr = _schedule(optimizers, schedule, steps)
    settings = {"seed": seed, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                "schedule": schedule, "keep_best": keep_best, "run": metadata}
    best = _BestKeeper(keep_best, ckpt, write=rank == 0)
    start, history = 0, []
    if ckpt is not None and resume and (ckpt / MANIFEST).exists():
        meta = _read_meta(ckpt)
        _check_resume(ckpt, meta, model, settings, allow_changes)
        if meta["step"] > steps and not allow_changes:  # (before the load touches model and optimizer)
            raise CheckpointError(
                f"run folder {ckpt} holds a checkpoint at step {meta['step']}, past steps={steps}: steps may grow, "
                "not shrink. Train into a new folder, or allow the change explicitly (fit(allow_changes=True), "
                "gencore train --allow-changes), which keeps the checkpoint as it is")
        _, meta = load_checkpoint(ckpt, model, optimizer=_saved_form(optimizers, two_player))
        start = int(meta["step"])
        history = _saved_history(ckpt, meta, start)
        best.restore(ckpt, meta)
    batches = _Batches(train_t[0].shape[0], batch_size, seed)

    def global_batch(step: int):
        batch = _batch(train_t, batches.indices(step - 1))
        if batch_transform is not None:
            batch = batch_transform(batch, torch.Generator().manual_seed(_seed64(seed * 1_000_003 + 7919 * step)))
        return batch

    ddp = None
    if world > 1:
        if start < steps:
            _initialize_data_dependent(model, global_batch(start + 1))
        first = next(model.parameters())
        on_cuda = first.device.type == "cuda"
        # static_graph: tolerates parameters that the loss never uses.
        ddp = torch.nn.parallel.DistributedDataParallel(
            _LossModule(model), device_ids=[first.device.index] if on_cuda else None, static_graph=True)
    step_fn = _step_function(model, optimizers, two_player, ddp, seed, rank, world)

    bar = None
    if progress and start < steps and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=type(model).__name__, leave=False)
    t0, count, sums = time.perf_counter(), 0, {}
    step = start
    for step in range(start + 1, steps + 1):
        set_lr(step)
        stats = step_fn(global_batch(step), step)
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
                best.offer(model, rec["eval_loss"], step)
            if callback is not None and rank == 0:
                with torch.random.fork_rng():
                    callback(model, rec)
            history.append(rec)
            count, sums = 0, {}
        if ckpt is not None and rank == 0 and (step % checkpoint_every == 0 or step == steps):
            extra = {"history": history, **{k: v for k, v in settings.items() if v is not None or k == "run"},
                     "best_eval_loss": best.loss if keep_best else None}
            save_checkpoint(ckpt, model, optimizer=_saved_form(optimizers, two_player), step=step, extra=extra,
                            _keep=best.files())
    if bar is not None:
        bar.close()
    if world > 1:
        torch.distributed.barrier()  # the last checkpoint is complete when fit returns on any rank
    if keep_best and best.state is not None:
        model.load_state_dict(best.state)
    model.eval()
    return FitResult(model=model, step=max(step, start), history=history)
