"""Crash-safe checkpoints (issue #16, item 2): atomic writes, a checksummed manifest written
last, optimizer state validated against the parameters, old checkpoints still readable.

The acceptance test trains in a child process that checkpoints every step, SIGKILLs it at
seeded random moments (so kills land inside file writes, between them and between saves),
resumes, and requires the final weights and optimizer state to be bit-identical to an
uninterrupted run in every trial.
"""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gencore
from gencore import train
from gencore.models import RealNVP
from gencore.train import CheckpointError, load_checkpoint, record_run_extra, save_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and SIGKILL")

STEPS = 24

# A "zygote": imports torch and gencore once, then forks one child per request so that each
# run starts at once (no interpreter start-up to hide the kill moment in). Children use one
# thread so every run does the same floating-point operations.
WORKER = r"""
import json, os, signal, sys, time, traceback
import torch
from gencore.models import RealNVP
from gencore.train import fit

def run(out, steps):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]])
    x = torch.randn(512, 3, generator=g) @ mix
    xe = torch.randn(128, 3, generator=g) @ mix
    torch.manual_seed(1)
    model = RealNVP(3, n_couplings=4, hidden=(128, 128))
    # keep_best: the best state's own file (written at an evaluation, named by the next
    # manifest) must survive kills too.
    fit(model, x, steps=steps, batch_size=64, lr=3e-3, seed=5, eval_every=3, checkpoint_dir=out,
        checkpoint_every=1, progress=False, eval_data=xe, keep_best=True)

# Warm up in the zygote (one thread, so no thread pool exists at fork time): lazy imports and
# first-call initialisation would otherwise fill the first seconds of every child.
torch.set_num_threads(1)
run(sys.argv[1], 2)

for line in sys.stdin:
    out, steps, delay = line.split()
    delay = float(delay)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run(out, int(steps))
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    # The kill is sent from here, the parent: an unreaped child's pid cannot be reused.
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if delay >= 0 and time.perf_counter() - t0 >= delay:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.0005)
    print(json.dumps({"status": status, "seconds": time.perf_counter() - t0}), flush=True)
"""


class Zygote:
    def __init__(self, warmup: Path):
        env = dict(os.environ)
        root = str(Path(gencore.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(warmup)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def run(self, out: Path, steps: int, kill_after: float = -1.0) -> dict:
        """Train in a fresh child; SIGKILL it after ``kill_after`` seconds unless negative or
        finished by then. Returns ``{"status": waitpid status, "seconds": ...}``."""
        self.proc.stdin.write(f"{out} {steps} {kill_after!r}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the worker process died"
        return json.loads(line)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def checkpoint_tensors(path: Path) -> tuple[dict, dict]:
    """(manifest, {kind/key: tensor}) of the checkpoint in ``path``."""
    from safetensors.torch import load_file

    meta = json.loads((path / "checkpoint.json").read_text())
    tensors = {}
    for kind, entry in meta["files"].items():
        tensors.update({f"{kind}/{k}": v for k, v in load_file(str(path / entry["name"])).items()})
    return meta, tensors


def where_killed(path: Path) -> str:
    """Classify the moment a kill hit from what it left in ``path``."""
    if not (path / "checkpoint.json").exists():
        return "before the first checkpoint"
    names = {f.name for f in path.iterdir()}
    if any(n.endswith(".tmp") for n in names):
        return "inside a file write"
    meta = json.loads((path / "checkpoint.json").read_text())
    referenced = {e["name"] for e in meta["files"].values()}
    steps = [int(m[1]) for n in names - referenced if (m := re.match(r"(?:model|optimizer|best)\.(\d+)\.", n))]
    if any(s > meta["step"] for s in steps):
        return "after a file, before the manifest"
    if steps:
        return "after the manifest, before the clean-up"
    return "outside a save"


def same_checkpoint(a: Path, b: Path) -> list[str]:
    """The tensors (model, optimizer state, RNG state, best state) and records in which the
    checkpoints in ``a`` and ``b`` differ."""
    meta_a, ta = checkpoint_tensors(a)
    meta_b, tb = checkpoint_tensors(b)
    differ = sorted(set(ta) ^ set(tb)) + [k for k in ta if k in tb and not torch.equal(ta[k], tb[k])]
    if meta_a["step"] != meta_b["step"]:
        differ.append("step")
    if meta_a["optimizer"] != meta_b["optimizer"]:  # param groups and non-tensor state
        differ.append("optimizer record")
    if meta_a["extra"].get("best_eval_loss") != meta_b["extra"].get("best_eval_loss"):
        differ.append("best_eval_loss")
    return differ


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    zyg = Zygote(tmp_path / "warmup")
    try:
        durations = []
        for ref in (tmp_path / "ref", tmp_path / "ref2"):
            res = zyg.run(ref, STEPS)
            assert res["status"] == 0, "the uninterrupted run failed (see stderr)"
            durations.append(res["seconds"])
        assert not same_checkpoint(tmp_path / "ref", tmp_path / "ref2"), "training is not deterministic"
        duration = min(durations)
        rng = random.Random(16)
        where, landed, trials = {}, 0, 8
        for trial in range(trials):
            out = tmp_path / f"trial{trial}"
            for _ in range(2):  # two kills per trial: one in the first run, one in the resumed run
                done = manifest(out)["step"] if (out / "checkpoint.json").exists() else 0
                delay = rng.uniform(0.0, 0.9) * duration * (STEPS - done) / STEPS  # within what is left to run
                status = zyg.run(out, STEPS, kill_after=delay)["status"]
                if os.WIFSIGNALED(status):
                    landed += 1
                    w = where_killed(out)
                    where[w] = where.get(w, 0) + 1
                else:
                    assert os.WEXITSTATUS(status) == 0, f"trial {trial}: the run failed after a kill (see stderr)"
            status = zyg.run(out, STEPS)["status"]  # resume to the end
            assert status == 0, f"trial {trial}: resuming failed (see stderr)"
            differ = same_checkpoint(tmp_path / "ref", out)
            assert not differ, f"trial {trial}: {len(differ)} entries differ from the uninterrupted run, " \
                               f"e.g. {differ[:3]} (kills so far: {where})"
            load_checkpoint(out)  # the manifest's checksums verify
        print(f"\n{landed} kills in {trials} trials, landed: {where} (uninterrupted run {duration:.2f} s)")
        assert landed >= trials  # most kills hit a running process
    finally:
        zyg.close()


# --- in-process tests ---------------------------------------------------------------------

def make():
    torch.manual_seed(1)
    model = RealNVP(3, n_couplings=2, hidden=(8,))
    opt = train._make_optimizer(model, 1e-3, 0.0)
    return model, opt


def trained(steps=2):
    model, opt = make()
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    for s in range(steps):
        train._loss_step(model, opt, x, s)
    return model, opt


def saved(tmp_path, steps=2, step=None):
    model, opt = trained(steps)
    save_checkpoint(tmp_path, model, optimizer=opt, step=steps if step is None else step)
    return model, opt


def manifest(p):
    return json.loads((p / "checkpoint.json").read_text())


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class TestLayout:
    def test_manifest_names_checksummed_versioned_files(self, tmp_path):
        saved(tmp_path)
        meta = manifest(tmp_path)
        assert meta["version"] == 2 and meta["step"] == 2 and set(meta["files"]) == {"model", "optimizer"}
        names = sorted(f.name for f in tmp_path.iterdir())
        assert names == sorted(["checkpoint.json", *(e["name"] for e in meta["files"].values())])
        import hashlib

        for e in meta["files"].values():
            data = (tmp_path / e["name"]).read_bytes()
            assert e["bytes"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()

    def test_a_new_save_replaces_the_old_files_only_after_the_manifest(self, tmp_path):
        saved(tmp_path, steps=1)
        first = {e["name"] for e in manifest(tmp_path)["files"].values()}
        saved(tmp_path, steps=2)
        second = {e["name"] for e in manifest(tmp_path)["files"].values()}
        assert not first & second  # new names: the old checkpoint was never overwritten
        assert {f.name for f in tmp_path.iterdir()} == second | {"checkpoint.json"}

    def test_leftovers_of_an_interrupted_save_are_removed(self, tmp_path):
        saved(tmp_path)
        (tmp_path / "model.00000009.0123abcd.safetensors.tmp").write_bytes(b"partial")
        (tmp_path / "optimizer.00000009.0123abcd.safetensors").write_bytes(b"orphan")
        (tmp_path / "notes.txt").write_text("not ours")
        saved(tmp_path, steps=3)
        names = {f.name for f in tmp_path.iterdir()}
        assert "notes.txt" in names and len(names) == 4


class Crash(BaseException):
    pass


class CrashAt:
    """Simulates a crash at the k-th durability event of the checkpoint code: a file write
    (only half of the bytes reach the file) or an fsync (it does not happen). It hooks the
    ``open`` and ``os.fsync`` that gencore.train calls."""

    def __init__(self, k: int):
        self.k, self.events, self.crashed = k, 0, False

    def event(self):
        self.events += 1
        if self.events == self.k:
            self.crashed = True
            return True
        return False

    def fsync(self, fd):
        if self.event():
            raise Crash
        REAL_FSYNC(fd)

    def open(self, file, mode="r", *args, **kw):
        fh = REAL_OPEN(file, mode, *args, **kw)
        if "w" not in mode:
            return fh
        crash = self

        class Torn:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def write(self, data):
                if crash.event():
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    raise Crash
                return fh.write(data)

            def __getattr__(self, name):
                return getattr(fh, name)

        return Torn()


REAL_FSYNC, REAL_OPEN = os.fsync, open


@pytest.mark.parametrize("call", ["save_checkpoint", "record_run_extra"])
def test_a_crash_at_any_write_or_fsync_leaves_a_complete_checkpoint(tmp_path, monkeypatch, call):
    """Simulated crash at each write and durability point of a save: what loads afterwards is
    the previous checkpoint or the new one, complete and verified, never an error or a mix."""
    model_old, opt_old = trained(1)
    old = state(model_old)
    model_new, opt_new = trained(3)
    new = state(model_new)
    crashed = 0
    for k in range(1, 30):
        save_checkpoint(tmp_path, model_old, optimizer=opt_old, step=1, extra={"tag": "old"})
        crash = CrashAt(k)
        monkeypatch.setattr(train.os, "fsync", crash.fsync)
        monkeypatch.setattr(train, "open", crash.open, raising=False)
        try:
            if call == "save_checkpoint":
                save_checkpoint(tmp_path, model_new, optimizer=opt_new, step=3, extra={"tag": "new"})
            else:
                record_run_extra(tmp_path, {"tag": "new"})
        except Crash:
            pass
        monkeypatch.undo()
        model, opt = make()
        _, meta = load_checkpoint(tmp_path, model, optimizer=opt)
        if meta["extra"]["tag"] == "old":
            assert meta["step"] == 1 and same(state(model), old)
        else:
            assert meta["step"] == (3 if call == "save_checkpoint" else 1)
            assert same(state(model), new if call == "save_checkpoint" else old)
        if not crash.crashed:  # every event has been tried
            break
        crashed += 1
    # save: 3 files written and fsynced, the folder fsynced twice; record_run_extra: 1 and 1
    assert crashed == (3 * 2 + 2 if call == "save_checkpoint" else 2 + 1)


class TestCorruption:
    @pytest.mark.parametrize("kind", ["model", "optimizer"])
    def test_truncated_file(self, tmp_path, kind):
        saved(tmp_path)
        f = tmp_path / manifest(tmp_path)["files"][kind]["name"]
        f.write_bytes(f.read_bytes()[:100])
        model, opt = make()
        with pytest.raises(CheckpointError, match=re.escape(f.name) + ".*truncated"):
            load_checkpoint(tmp_path, model, optimizer=opt)

    @pytest.mark.parametrize("kind", ["model", "optimizer"])
    def test_flipped_byte_is_a_checksum_mismatch(self, tmp_path, kind):
        saved(tmp_path)
        f = tmp_path / manifest(tmp_path)["files"][kind]["name"]
        blob = bytearray(f.read_bytes())
        blob[-3] ^= 0x10  # inside the tensor data: safetensors itself would not notice
        f.write_bytes(bytes(blob))
        model, opt = make()
        with pytest.raises(CheckpointError, match=re.escape(f.name) + ".*checksum mismatch"):
            load_checkpoint(tmp_path, model, optimizer=opt)

    def test_manifest_checksum_mismatch(self, tmp_path):
        saved(tmp_path)
        meta = manifest(tmp_path)
        meta["files"]["model"]["sha256"] = "0" * 64
        (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            load_checkpoint(tmp_path)

    def test_missing_file(self, tmp_path):
        saved(tmp_path)
        name = manifest(tmp_path)["files"]["optimizer"]["name"]
        (tmp_path / name).unlink()
        model, opt = make()
        with pytest.raises(CheckpointError, match=re.escape(name) + ".*missing"):
            load_checkpoint(tmp_path, model, optimizer=opt)

    def test_malformed_manifest(self, tmp_path):
        saved(tmp_path)
        meta = manifest(tmp_path)
        meta["files"]["model"]["name"] = "../elsewhere.safetensors"
        (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="'files' entry is missing or malformed"):
            load_checkpoint(tmp_path)


class FakeOptimizer:
    """Saves a crafted state dict through save_checkpoint (a valid manifest and checksums)."""

    def __init__(self, sd):
        self.sd = sd

    def state_dict(self):
        return self.sd


class TestCraftedOptimizerState:
    def crafted(self, tmp_path, edit):
        model, opt = trained()
        sd = opt.state_dict()
        edit(sd)
        save_checkpoint(tmp_path, model, optimizer=FakeOptimizer(sd), step=2)
        model, opt = make()
        return model, opt, next(iter(model.named_parameters()))[0]

    @pytest.mark.parametrize("key", ["exp_avg", "exp_avg_sq"])
    def test_state_smaller_than_the_parameter(self, tmp_path, key):
        def edit(sd):
            sd["state"][0][key] = torch.zeros(1)

        model, opt, name = self.crafted(tmp_path, edit)
        with pytest.raises(ValueError, match=re.escape(repr(name)) + f".*'{key}' has shape \\(1,\\)"):
            load_checkpoint(tmp_path, model, optimizer=opt)
        assert not opt.state  # nothing was loaded

    def test_wrong_dtype(self, tmp_path):
        def edit(sd):
            sd["state"][1]["exp_avg"] = sd["state"][1]["exp_avg"].double()

        model, opt, _ = self.crafted(tmp_path, edit)
        name = list(model.named_parameters())[1][0]
        with pytest.raises(ValueError, match=re.escape(repr(name)) + ".*float64"):
            load_checkpoint(tmp_path, model, optimizer=opt)

    @pytest.mark.parametrize("step", [-1.0, float("nan"), 2.5])
    def test_insane_step(self, tmp_path, step):
        def edit(sd):
            sd["state"][0]["step"] = torch.tensor(step)

        model, opt, name = self.crafted(tmp_path, edit)
        with pytest.raises(ValueError, match=re.escape(repr(name)) + ".*'step' must be a finite integer"):
            load_checkpoint(tmp_path, model, optimizer=opt)

    def test_state_for_an_unknown_parameter_and_missing_moments(self, tmp_path):
        def unknown(sd):
            sd["state"][999] = dict(sd["state"][0])

        model, opt, _ = self.crafted(tmp_path, unknown)
        with pytest.raises(ValueError, match="parameter index 999"):
            load_checkpoint(tmp_path, model, optimizer=opt)

        def missing(sd):
            del sd["state"][0]["exp_avg_sq"]

        model, opt, name = self.crafted(tmp_path, missing)
        with pytest.raises(ValueError, match=re.escape(repr(name)) + ".*missing.*exp_avg_sq"):
            load_checkpoint(tmp_path, model, optimizer=opt)

    def test_valid_state_round_trips_exactly(self, tmp_path):
        model, opt = saved(tmp_path)
        model2, opt2 = make()
        load_checkpoint(tmp_path, model2, optimizer=opt2)
        a, b = opt.state_dict(), opt2.state_dict()
        assert json.loads(json.dumps(a["param_groups"])) == b["param_groups"]  # JSON: tuples come back as lists
        for pid in a["state"]:
            assert all(torch.equal(a["state"][pid][k], b["state"][pid][k]) for k in a["state"][pid])


def test_version_1_checkpoints_still_load_and_are_converted(tmp_path):
    """The layout written before checksums: fixed names, a checkpoint.json without 'files'."""
    from safetensors.torch import save_file

    model, opt = trained()
    tensors, opt_meta = train._optimizer_tensors(opt)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(state(model), str(tmp_path / "model.safetensors"))
    save_file(tensors, str(tmp_path / "optimizer.safetensors"))
    (tmp_path / "checkpoint.json").write_text(json.dumps(
        {"format": "gencore-checkpoint", "version": 1, "model": "realnvp", "config": model.config, "step": 2,
         "extra": {"history": []}, "optimizer": opt_meta}))
    model2, opt2 = make()
    _, meta = load_checkpoint(tmp_path, model2, optimizer=opt2)
    assert meta["step"] == 2 and same(state(model2), state(model))
    record_run_extra(tmp_path, {"data": "toy"})  # atomic for version 1 too
    assert manifest(tmp_path)["extra"] == {"history": [], "data": "toy"}
    save_checkpoint(tmp_path, model2, optimizer=opt2, step=3)
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "optimizer.safetensors").exists()
    assert manifest(tmp_path)["version"] == 2
    load_checkpoint(tmp_path, make()[0], optimizer=make()[1])


def rewrite_model_file(path: Path, change) -> None:
    """Replaces the model tensors of the checkpoint in ``path`` by ``change(tensors)``, with
    a manifest whose size and sha256 match (a crafted checkpoint, not a damaged one)."""
    import hashlib

    from safetensors.torch import load, save

    meta = manifest(path)
    entry = meta["files"]["model"]
    data = save(change(load((path / entry["name"]).read_bytes())))
    (path / entry["name"]).write_bytes(data)
    entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (path / "checkpoint.json").write_text(json.dumps(meta))


class TestCraftedState:
    """Checkpoints whose checksums match but whose contents load_state_dict would take
    silently or that fail later, deep inside a method."""

    def test_non_finite_weights_are_refused_naming_the_tensor(self, tmp_path):
        model, _ = saved(tmp_path)
        key = next(k for k, v in model.state_dict().items() if v.is_floating_point() and v.numel() > 1)
        rewrite_model_file(tmp_path, lambda t: {**t, key: torch.full_like(t[key], float("nan"))})
        with pytest.raises(CheckpointError, match=f"{re.escape(key)} holds NaN or infinite values"):
            load_checkpoint(tmp_path)

    def test_an_integer_tensor_for_a_float_parameter_is_refused(self, tmp_path):
        model, _ = saved(tmp_path)
        key = next(k for k, v in model.state_dict().items() if v.is_floating_point())
        rewrite_model_file(tmp_path, lambda t: {**t, key: t[key].round().to(torch.int32)})
        with pytest.raises(CheckpointError, match=f"{re.escape(key)} is torch.int32, the model's"):
            load_checkpoint(tmp_path)

    def test_another_float_precision_loads(self, tmp_path):
        # float64 weights into a float32 model: a change of precision, not a crafted value.
        model, _ = saved(tmp_path)
        rewrite_model_file(tmp_path, lambda t: {k: v.double() if v.is_floating_point() else v for k, v in t.items()})
        loaded, _ = load_checkpoint(tmp_path)
        assert same(state(loaded), state(model))

    @pytest.mark.parametrize("edit, fragment", [
        (lambda m: m.pop("config"), "'config' is missing or not a mapping"),
        (lambda m: m.pop("model"), "'model' is missing or not a model name"),
        (lambda m: m.update(model=["realnvp"]), "'model' is missing or not a model name"),
        (lambda m: m.update(config=[3, 2]), "'config' is missing or not a mapping"),
    ])
    def test_a_manifest_without_model_or_config_is_refused(self, tmp_path, edit, fragment):
        saved(tmp_path)
        meta = manifest(tmp_path)
        edit(meta)
        (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=re.escape(fragment)):
            load_checkpoint(tmp_path)


class TestPCAState:
    def fitted(self, tmp_path, data=None):
        from gencore.models import PCA

        pca = PCA(2).fit(torch.randn(20, 4, generator=torch.Generator().manual_seed(0)) if data is None else data)
        save_checkpoint(tmp_path, pca)
        return pca

    @pytest.mark.parametrize("change, fragment", [
        (lambda t: {**t, "components_": torch.cat([t["components_"], t["components_"][:1]])},
         "explained_variance_ must have shape (3,)"),
        (lambda t: {**t, "mean_": torch.zeros(5, dtype=torch.float64)}, "components_ (r, D) with 1 <= r <= D"),
        (lambda t: {**t, "components_": t["components_"][0]}, "components_ (r, D) with 1 <= r <= D"),
        (lambda t: {**t, "mean_": torch.full_like(t["mean_"], float("inf"))}, "mean_ holds NaN or infinite values"),
        (lambda t: {**t, "components_": 2 * t["components_"]}, "rows of components_ are not orthonormal"),
        (lambda t: {**t, "explained_variance_": -t["explained_variance_"]}, "explained_variance_ must be >= 0"),
        (lambda t: {**t, "n_samples_": torch.tensor(1)}, "n_samples_ must be an integer >= 2"),
    ])
    def test_an_inconsistent_fitted_state_is_refused(self, tmp_path, change, fragment):
        self.fitted(tmp_path)
        rewrite_model_file(tmp_path, change)
        with pytest.raises(CheckpointError, match=re.escape(fragment)):
            load_checkpoint(tmp_path)

    def test_invalid_parameters_in_the_config_are_refused(self, tmp_path):
        self.fitted(tmp_path)
        meta = manifest(tmp_path)
        meta["config"]["whiten"] = "no"  # truthy: it would have whitened
        (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="PCA: whiten must be a bool"):
            load_checkpoint(tmp_path)

    def test_constant_data_with_its_nan_variance_ratio_round_trips(self, tmp_path):
        from gencore.models import PCA

        pca = self.fitted(tmp_path, torch.ones(6, 3, dtype=torch.float64))
        assert torch.isnan(pca.explained_variance_ratio_).all()  # as scikit-learn's
        x = torch.randn(4, 3, dtype=torch.float64)
        into_fitted = PCA(2).fit(torch.randn(9, 3, dtype=torch.float64))  # into a model that has the buffers
        for loaded in (load_checkpoint(tmp_path)[0], load_checkpoint(tmp_path, into_fitted)[0]):
            torch.testing.assert_close(loaded.transform(x), pca.transform(x))


def test_a_checkpoint_replaced_while_it_is_read_is_read_again(tmp_path, monkeypatch):
    # `gencore eval` / `sample` on a run that is training: the next save may remove the files
    # of the manifest just read. That is a newer checkpoint, not a corrupted one.
    saved(tmp_path, steps=1)
    real, raced = train._load_verified, []

    def racing(path, meta, kind):
        if not raced:
            raced.append(kind)
            saved(tmp_path, steps=2)  # the run's next checkpoint lands between the two reads
        return real(path, meta, kind)

    monkeypatch.setattr(train, "_load_verified", racing)
    model, meta = load_checkpoint(tmp_path)
    assert raced and meta["step"] == 2
    assert same(state(model), state(trained(2)[0]))


def test_a_missing_file_with_an_unchanged_manifest_is_still_corruption(tmp_path):
    saved(tmp_path)
    (tmp_path / manifest(tmp_path)["files"]["model"]["name"]).unlink()
    with pytest.raises(CheckpointError, match="is missing in"):
        load_checkpoint(tmp_path)


def test_a_step_that_disagrees_with_the_file_names_is_refused(tmp_path):
    # A resumed run would restart its batch order and schedule at the edited step.
    saved(tmp_path, steps=2)
    meta = manifest(tmp_path)
    meta["step"] = 7
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="step 7 but its model file model.00000002"):
        load_checkpoint(tmp_path)


def test_a_callback_may_record_any_json_and_the_run_still_resumes(tmp_path):
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))

    def note(model, record):
        record.update(note="ok", fractions=[0.5, 0.5])

    kw = dict(batch_size=16, lr=1e-3, seed=0, eval_data=x[:16], eval_every=1, checkpoint_dir=tmp_path,
              progress=False, callback=note)
    train.fit(make()[0], x, steps=2, **kw)
    result = train.fit(make()[0], x, steps=3, **kw)
    assert [r["step"] for r in result.history] == [1, 2, 3] and result.history[0]["note"] == "ok"


@pytest.mark.parametrize("edit, fragment", [
    (lambda h: h.__setitem__(0, {**h[0], "eval_loss": "abc"}), "holds a loss that is not a number"),
    (lambda h: h.__setitem__(0, {**h[0], "step": 9}), "steps must increase within [1, 2]"),
    (lambda h: h.append("x"), "not a list of records"),
])
def test_a_crafted_history_is_refused_before_training(tmp_path, edit, fragment):
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    kw = dict(batch_size=16, lr=1e-3, seed=0, eval_data=x[:16], eval_every=1, checkpoint_dir=tmp_path,
              progress=False)
    train.fit(make()[0], x, steps=2, **kw)
    meta = manifest(tmp_path)
    edit(meta["extra"]["history"])
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        train.fit(make()[0], x, steps=3, **kw)


def test_a_checkpoint_past_steps_is_refused_before_it_is_loaded(tmp_path):
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    kw = dict(batch_size=16, lr=1e-3, seed=0, checkpoint_dir=tmp_path, progress=False)
    train.fit(make()[0], x, steps=3, **kw)
    model = make()[0]
    before = state(model)
    with pytest.raises(CheckpointError, match="at step 3, past steps=2"):
        train.fit(model, x, steps=2, **kw)
    assert same(state(model), before)  # refused before the load touched the model
