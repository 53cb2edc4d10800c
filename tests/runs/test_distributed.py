"""Distributed contrastive losses and data-parallel ``fit``: 2 processes on gloo over loopback.

One pair of worker processes (this file run as a script) computes every distributed case
once, for the whole module; the tests compare what each rank saved with one process on the
global batch. Semantics under test (see gencore.nn.contrastive):

- mean over ranks of the rank losses == the single-process loss on the global batch;
- gradient of a rank's own features == W * the single-process gradient of those rows;
- gradient of the temperature / logit scale, averaged over ranks (what DDP does with a
  parameter gradient) == the single-process gradient;
- fit on 2 ranks ends with the parameters of fit in one process on the same global batches;
- VectorQuantizer: the EMA codebook, the gradient-learned codebook (gradients averaged over
  ranks, as DDP does) and the inputs' gradients (W * the single-process ones) after a few
  steps equal one process on the global batch, and dead-code restarts leave every rank with
  the same codebook.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import gencore
from gencore import distributed as gdist
from gencore.models import NICE
from gencore.nn import CLIPLoss, NTXentLoss, SigLIPLoss, VectorQuantizer
from gencore.train import fit, load_checkpoint

WORLD = 2
N, D = 6, 5  # rows per rank, feature size
UNEQUAL = (5, 8)  # rows of rank 0 and rank 1 in the unequal-batch cases
FIT_STEPS, FIT_BATCH, FIT_LR = 6, 16, 2e-2


# ---- data and models, built identically by the workers and by the test process ----------------

def features(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, D, generator=g, dtype=torch.float64)
    return a, a + 0.7 * torch.randn(n, D, generator=g, dtype=torch.float64)  # correlated pairs


def rows(r: int, sizes) -> slice:
    return slice(sum(sizes[:r]), sum(sizes[:r + 1]))


def make_ntxent():
    return NTXentLoss(0.3, distributed=True).double()


def make_ntxent_learnable():
    return NTXentLoss(0.4, distributed=True, learnable=True).double()


def make_clip():
    loss = CLIPLoss(distributed=True).double()
    with torch.no_grad():
        loss.log_logit_scale.fill_(math.log(4.0))  # 1/0.07 on raw features saturates the softmax
    return loss


def make_siglip():
    loss = SigLIPLoss(distributed=True).double()
    with torch.no_grad():  # raw features: scale 10 and bias -10 would leave the positives' gradient ~0
        loss.log_logit_scale.fill_(math.log(2.0))
        loss.logit_bias.fill_(-1.5)
    return loss


LOSSES = {"ntxent": make_ntxent, "ntxent_learnable": make_ntxent_learnable, "clip": make_clip,
          "siglip": make_siglip}


class PairEncoder(nn.Module):
    """A linear encoder of paired views trained by a distributed contrastive loss."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.enc_a = nn.Linear(7, 4).double()
        self.enc_b = nn.Linear(7, 4).double() if kind == "clip" else self.enc_a
        self.criterion = (CLIPLoss(distributed=True, init_logit_scale=math.log(3.0)) if kind == "clip"
                          else NTXentLoss(0.5, distributed=True, learnable=True)).double()

    def loss(self, batch):
        xa, xb = batch
        return self.criterion(self.enc_a(xa), self.enc_b(xb))


def pair_data(n: int = 64):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 7, generator=g, dtype=torch.float64)
    return x, x + 0.3 * torch.randn(n, 7, generator=g, dtype=torch.float64)


def make_nice():
    torch.manual_seed(2)
    return NICE(3, n_couplings=2, hidden=(16,)).double()  # starts with a data-initialised ActNorm


def flow_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]], dtype=torch.float64) + 1.5


def fit_kwargs(**kw):
    return {"steps": FIT_STEPS, "batch_size": FIT_BATCH, "lr": FIT_LR, "seed": 3, "progress": False, **kw}


def params(m: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def leaves(*ts):
    return [t.clone().requires_grad_(True) for t in ts]


# ---- the worker ---------------------------------------------------------------------------

def _loss_case(r: int, make, sizes, seed: int) -> dict:
    a, b = features(sum(sizes), seed)
    a, b = leaves(a[rows(r, sizes)], b[rows(r, sizes)])
    crit = make()
    loss = crit(a, b)
    loss.backward()
    out = {"loss": loss.detach(), "ga": a.grad, "gb": b.grad}
    for name, p in crit.named_parameters():
        out[f"param.{name}"] = p.grad
    return out


def _errors(r: int) -> dict:
    out = {}
    for name, call in {
        "memory_efficient": lambda: fit(NICE(3, n_couplings=2, hidden=(8,), memory_efficient=True),
                                        flow_data(32, 0), steps=1, batch_size=8, progress=False),
        "indivisible": lambda: fit(make_nice(), flow_data(32, 0), steps=1, batch_size=7, progress=False),
    }.items():
        try:
            call()
            out[name] = "no error"
        except ValueError as e:
            out[name] = str(e)
    return out


VQ_STEPS, VQ_ROWS, VQ_CODES, VQ_DIM = 3, 10, 6, 3  # rows per rank per step


def make_vq(kind: str) -> VectorQuantizer:
    torch.manual_seed(5)
    ema = {"ema": 0.8, "grad": None, "restart": 0.8}[kind]
    # restart: a threshold no code can keep (every code restarts every step)
    return VectorQuantizer(VQ_CODES, VQ_DIM, ema_decay=ema, restart_dead_codes=kind == "restart",
                           dead_threshold=1e6 if kind == "restart" else 1.0).double()


def vq_batch(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(WORLD * VQ_ROWS, VQ_DIM, 2, generator=g, dtype=torch.float64)


def vq_steps(kind: str, part: slice, world: int) -> dict:
    """VQ_STEPS training steps on rows `part` of each global batch; with world > 1 the
    codebook's gradient is averaged over ranks (DDP's all-reduce) before an SGD step."""
    import torch.distributed as dist

    vq = make_vq(kind)
    out: dict = {}
    for step in range(VQ_STEPS):
        x = vq_batch(step)[part].requires_grad_()
        res = vq(x)
        full = vq_batch(step)
        w = torch.linspace(-1, 1, full.numel(), dtype=torch.float64).reshape(full.shape)[part]
        # the output's part of the loss, as a mean over the rows (local rows on a rank)
        loss = res.loss + (res.quantized * w).sum() / x.shape[0]
        loss.backward()
        if vq.ema_decay is None:
            if world > 1:
                dist.all_reduce(vq.codebook.grad)
                vq.codebook.grad /= world
            with torch.no_grad():
                vq.codebook -= 0.5 * vq.codebook.grad
            out[f"grad_codebook{step}"] = vq.codebook.grad.clone()
            vq.codebook.grad = None
        out[f"grad_x{step}"] = x.grad
        out[f"perplexity{step}"] = res.perplexity.detach()
    out["codebook"] = vq.codebook.detach().clone()
    return out


def worker(r: int, folder: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    initialized = gdist.init_from_env()  # torchrun's variables, set by the fixture
    res: dict = {"world": gdist.world_size(), "rank": gdist.rank(), "initialized": initialized,
                 "backend": dist.get_backend()}

    # all_gather_with_grad alone, unequal sizes: d(sum of both ranks' (out * w).sum()) / dx = W w.
    x = leaves(torch.arange(UNEQUAL[r] * 3, dtype=torch.float64).reshape(-1, 3) + 100 * r)[0]
    out, sizes = gdist.all_gather_with_grad(x, return_sizes=True)
    w = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
    (out * w).sum().backward()
    res.update({"gather.out": out.detach(), "gather.sizes": torch.tensor(sizes), "gather.grad": x.grad})

    for name, make in LOSSES.items():
        for tag, sizes in (("equal", (N, N)), ("unequal", UNEQUAL)):
            for k, v in _loss_case(r, make, sizes, seed=len(name) + len(tag)).items():
                res[f"{name}.{tag}.{k}"] = v

    for kind in ("ntxent", "clip"):
        model = PairEncoder(kind)
        hist = fit(model, pair_data(), eval_every=2, **fit_kwargs()).history
        res[f"fit.{kind}"] = params(model)
        res[f"fit.{kind}.train_loss"] = torch.tensor([h["train_loss"] for h in hist])

    nice = make_nice()
    hist = fit(nice, flow_data(128, 0), eval_data=flow_data(40, 1), eval_every=3, **fit_kwargs()).history
    res["fit.nice"] = params(nice)
    res["fit.nice.train_loss"] = torch.tensor([h["train_loss"] for h in hist])
    res["fit.nice.eval_loss"] = torch.tensor([h["eval_loss"] for h in hist])

    # Stopped after 3 steps and resumed: rank 0 writes, every rank reads the shared folder.
    ckpt = folder / "ckpt"
    fit(make_nice(), flow_data(128, 0), checkpoint_dir=ckpt, **fit_kwargs(steps=3))
    resumed = make_nice()
    fit(resumed, flow_data(128, 0), checkpoint_dir=ckpt, **fit_kwargs())
    res["fit.nice.resumed"] = params(resumed)

    for kind in ("ema", "grad", "restart"):
        for k, v in vq_steps(kind, rows(r, (VQ_ROWS, VQ_ROWS)), WORLD).items():
            res[f"vq.{kind}.{k}"] = v

    res["errors"], res["folder"] = _errors(r), str(folder)
    torch.save(res, folder / f"rank{r}.pt")
    dist.destroy_process_group()


# ---- the fixture running both workers -------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "WORLD_SIZE": str(WORLD),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "PYTHONPATH": os.pathsep.join([str(Path(gencore.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(folder)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(WORLD)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("distributed workers timed out")
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-4000:]}"
    print(f"2 workers: {time.perf_counter() - t0:.1f} s")
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


# ---- tests ------------------------------------------------------------------------------------

def test_world_from_torchrun_environment(ranks):
    assert [res["world"] for res in ranks] == [2, 2] and [res["rank"] for res in ranks] == [0, 1]
    assert all(res["initialized"] and res["backend"] == "gloo" for res in ranks)


def test_all_gather_with_grad_unequal_sizes(ranks):
    xs = [torch.arange(n * 3, dtype=torch.float64).reshape(-1, 3) + 100 * r for r, n in enumerate(UNEQUAL)]
    full = torch.cat(xs)
    w = torch.linspace(-1, 1, full.numel(), dtype=torch.float64).reshape(full.shape)
    for r, res in enumerate(ranks):
        assert res["gather.sizes"].tolist() == list(UNEQUAL)
        torch.testing.assert_close(res["gather.out"], full, rtol=0, atol=0)
        torch.testing.assert_close(res["gather.grad"], WORLD * w[rows(r, UNEQUAL)], rtol=0, atol=0)


@pytest.mark.parametrize("tag", ["equal", "unequal"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_distributed_loss_matches_one_process(ranks, name, tag):
    sizes = (N, N) if tag == "equal" else UNEQUAL
    a, b = leaves(*features(sum(sizes), seed=len(name) + len(tag)))
    crit = LOSSES[name]()
    loss = crit(a, b)  # no process group here: distributed=True acts on the local (= global) batch
    loss.backward()
    pre = f"{name}.{tag}."
    mean = sum(res[pre + "loss"] for res in ranks) / WORLD
    torch.testing.assert_close(mean, loss.detach(), rtol=1e-12, atol=0)
    for r, res in enumerate(ranks):
        # The gather's backward sums over ranks: W times the global gradient of this rank's rows.
        torch.testing.assert_close(res[pre + "ga"] / WORLD, a.grad[rows(r, sizes)], rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(res[pre + "gb"] / WORLD, b.grad[rows(r, sizes)], rtol=1e-10, atol=1e-13)
    for pname, p in crit.named_parameters():
        # A parameter's gradient is d loss_r on rank r; DDP averages it: the global gradient.
        mean_grad = sum(res[f"{pre}param.{pname}"] for res in ranks) / WORLD
        assert p.grad.abs() > 1e-3
        torch.testing.assert_close(mean_grad, p.grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["ntxent", "clip"])
def test_fit_contrastive_two_ranks_equals_one_process(ranks, kind, one_thread):
    model = PairEncoder(kind)
    start = params(model)
    hist = fit(model, pair_data(), eval_every=2, **fit_kwargs()).history
    one = params(model)
    assert (one - start).abs().max() > 1e-3  # it trained
    for res in ranks:
        torch.testing.assert_close(res[f"fit.{kind}"], one, rtol=0, atol=1e-10)
        # The recorded loss is the mean over ranks: the global batch's loss.
        torch.testing.assert_close(res[f"fit.{kind}.train_loss"], torch.tensor([h["train_loss"] for h in hist]),
                                   rtol=1e-10, atol=0)


def test_fit_flow_two_ranks_equals_one_process(ranks, one_thread):
    nice = make_nice()
    hist = fit(nice, flow_data(128, 0), eval_data=flow_data(40, 1), eval_every=3, **fit_kwargs()).history
    one = params(nice)
    for res in ranks:
        torch.testing.assert_close(res["fit.nice"], one, rtol=0, atol=1e-10)
        torch.testing.assert_close(res["fit.nice.train_loss"], torch.tensor([h["train_loss"] for h in hist]),
                                   rtol=1e-10, atol=0)
        torch.testing.assert_close(res["fit.nice.eval_loss"], torch.tensor([h["eval_loss"] for h in hist]),
                                   rtol=1e-10, atol=0)
        # Resumed at step 3 by both ranks from rank 0's checkpoint: the same end point.
        torch.testing.assert_close(res["fit.nice.resumed"], one, rtol=0, atol=1e-10)


def test_fit_rejects_unsupported_data_parallel_runs(ranks):
    for res in ranks:
        assert "memory_efficient=True" in res["errors"]["memory_efficient"]
        assert "must be divisible by the 2 ranks" in res["errors"]["indivisible"]


def test_without_process_group():
    assert not gdist.is_distributed() and gdist.world_size() == 1 and gdist.rank() == 0
    x = torch.randn(3, 2, requires_grad=True)
    out, sizes = gdist.all_gather_with_grad(x, return_sizes=True)
    assert out is x and sizes == [3]
    with pytest.raises(ValueError, match="batch dimension"):
        gdist.all_gather_with_grad(torch.tensor(1.0))


def test_checkpoint_written_by_rank_0_loads(ranks):
    """The data-parallel run's checkpoint is an ordinary model's (no DDP prefix in the names)."""
    loaded, meta = load_checkpoint(Path(ranks[0]["folder"]) / "ckpt", make_nice())
    assert meta["step"] == FIT_STEPS
    torch.testing.assert_close(params(loaded), ranks[0]["fit.nice.resumed"], rtol=0, atol=0)


if __name__ == "__main__":
    worker(int(sys.argv[1]), Path(sys.argv[2]))


@pytest.mark.parametrize("kind", ["ema", "grad"])
def test_vector_quantizer_matches_one_process_on_the_global_batch(ranks, kind):
    one = vq_steps(kind, slice(None), 1)
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res[f"vq.{kind}.codebook"], one["codebook"])
        for step in range(VQ_STEPS):
            torch.testing.assert_close(res[f"vq.{kind}.perplexity{step}"], one[f"perplexity{step}"])
            # a rank's mean is over its own rows: W times the global mean's gradient
            torch.testing.assert_close(res[f"vq.{kind}.grad_x{step}"],
                                       WORLD * one[f"grad_x{step}"][rows(r, (VQ_ROWS, VQ_ROWS))])
            if kind == "grad":
                torch.testing.assert_close(res[f"vq.{kind}.grad_codebook{step}"], one[f"grad_codebook{step}"])


def test_vector_quantizer_restarts_keep_ranks_identical(ranks):
    a, b = (res["vq.restart.codebook"] for res in ranks)
    assert torch.equal(a, b)
    # every code was restarted onto one of rank 0's input vectors of the last step
    last = vq_batch(VQ_STEPS - 1)[:VQ_ROWS].movedim(1, -1).reshape(-1, VQ_DIM)
    assert all(any(torch.equal(c, v) for v in last) for c in a)
