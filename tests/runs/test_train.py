"""gencore.train.fit: learning, evaluation history, checkpoints, exact resume, errors."""

import json

import pytest
import torch

from gencore.models import RealNVP
from gencore.train import CheckpointError, fit, load_checkpoint, save_checkpoint


MIX = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]])


def data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g) @ MIX


def make_flow():
    torch.manual_seed(1)
    return RealNVP(3, n_couplings=4, hidden=(32,))


def params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_fit_learns_and_records_history():
    x, xe = data(4096), data(1024, seed=1)
    flow = make_flow()
    with torch.no_grad():
        nll0 = flow.eval().loss(xe).item()  # untrained: the identity map onto N(0, I)
    res = fit(flow, x, steps=200, batch_size=256, lr=3e-3, eval_data=xe, eval_every=50, progress=False)
    assert [h["step"] for h in res.history] == [50, 100, 150, 200]
    # The data is Gaussian with covariance MIX^T MIX: the true density's NLL on the same
    # test points is the best achievable (measured gap after 200 steps: 0.02 nats).
    true = torch.distributions.MultivariateNormal(torch.zeros(3), MIX.T @ MIX)
    best = -true.log_prob(xe).mean().item()
    final = res.history[-1]["eval_loss"]
    assert final < nll0 - 1.0 and final < best + 0.05
    assert not flow.training


def test_resume_gives_the_same_parameters(tmp_path):
    x = data()
    full = fit(make_flow(), x, steps=60, batch_size=64, lr=3e-3, seed=5, progress=False)
    ckpt = tmp_path / "run"
    fit(make_flow(), x, steps=30, batch_size=64, lr=3e-3, seed=5, checkpoint_dir=ckpt, progress=False)
    assert json.loads((ckpt / "checkpoint.json").read_text())["step"] == 30
    resumed = fit(make_flow(), x, steps=60, batch_size=64, lr=3e-3, seed=5, checkpoint_dir=ckpt, progress=False)
    assert resumed.step == 60
    assert torch.equal(params(resumed.model), params(full.model))


def test_numpy_arguments_train_and_resume_as_python_numbers(tmp_path):
    # np.int64 steps / seed went on into fit as they were: the seed's reduction modulo 2^64
    # overflowed ("Python int too large to convert to C long").
    import numpy as np

    x = data()
    full = fit(make_flow(), x, steps=20, batch_size=64, lr=float(np.float32(3e-3)), seed=5, progress=False)
    ckpt = tmp_path / "run"
    kw = dict(batch_size=np.int64(64), lr=np.float32(3e-3), seed=np.int64(5), checkpoint_dir=ckpt,
              checkpoint_every=np.int32(5), eval_every=np.int64(5), weight_decay=np.float64(0.0), progress=False,
              metadata={"lr": np.float32(3e-3)})  # refused as not JSON before
    fit(make_flow(), x, steps=np.int64(10), **kw)
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    assert meta["step"] == 10
    evaluated = []
    resumed = fit(make_flow(), x, steps=np.int64(20), callback=lambda m, rec: evaluated.append(rec["step"]), **kw)
    assert evaluated == [15, 20]  # resumed at step 10, not trained again from 0
    assert resumed.step == 20 and type(resumed.step) is int
    assert torch.equal(params(resumed.model), params(full.model))


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path):
    flow = make_flow()
    fit(flow, data(), steps=20, batch_size=64, progress=False, checkpoint_dir=tmp_path)
    loaded, meta = load_checkpoint(tmp_path)
    assert isinstance(loaded, RealNVP) and meta["config"]["n_couplings"] == 4
    x = data(16, seed=3)
    torch.testing.assert_close(loaded.eval().log_prob(x), flow.log_prob(x), rtol=0, atol=0)


class TestCorruptedCheckpoints:
    def saved(self, tmp_path):
        save_checkpoint(tmp_path, make_flow())
        return tmp_path

    def test_missing(self, tmp_path):
        with pytest.raises(CheckpointError, match="checkpoint.json is missing"):
            load_checkpoint(tmp_path)

    def test_bad_json(self, tmp_path):
        p = self.saved(tmp_path)
        (p / "checkpoint.json").write_text("{not json")
        with pytest.raises(CheckpointError, match="not valid JSON"):
            load_checkpoint(p)

    def test_truncated_tensors(self, tmp_path):
        p = self.saved(tmp_path)
        f = p / json.loads((p / "checkpoint.json").read_text())["files"]["model"]["name"]
        blob = f.read_bytes()
        f.write_bytes(blob[: len(blob) // 2])
        with pytest.raises(CheckpointError, match="corrupted checkpoint file"):
            load_checkpoint(p)

    def test_mismatched_model(self, tmp_path):
        p = self.saved(tmp_path)
        with pytest.raises(CheckpointError, match="does not match the model"):
            load_checkpoint(p, RealNVP(3, n_couplings=2, hidden=(32,)))

    def test_wrong_format(self, tmp_path):
        p = self.saved(tmp_path)
        (p / "checkpoint.json").write_text(json.dumps({"format": "other"}))
        with pytest.raises(CheckpointError, match="not a gencore checkpoint"):
            load_checkpoint(p)


class TestBadArguments:
    def test_bad_steps_lr(self):
        with pytest.raises(ValueError, match="steps must be a positive int"):
            fit(make_flow(), data(), steps=0, progress=False)
        with pytest.raises(ValueError, match="lr must be a positive finite number"):
            fit(make_flow(), data(), steps=1, lr=float("nan"), progress=False)

    @pytest.mark.parametrize("arg", ["lr", "steps", "batch_size", "weight_decay", "eval_every", "seed"])
    def test_bools_are_rejected(self, arg):
        """True used to be accepted as lr = 1 (issue #15)."""
        kw = {"steps": 1, arg: True}
        with pytest.raises(TypeError, match=f"{arg} must be an? (int|real number), got bool"):
            fit(make_flow(), data(), progress=False, **kw)

    def test_bad_data(self):
        with pytest.raises(ValueError, match="data is empty"):
            fit(make_flow(), torch.empty(0, 3), steps=1, progress=False)
        bad = data()
        bad[3, 1] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            fit(make_flow(), bad, steps=1, progress=False)
        with pytest.raises(TypeError, match="no loss"):
            fit(torch.nn.Linear(3, 3), data(), steps=1, progress=False)

    @pytest.mark.parametrize("kw, error, message", [
        # named as eval_data, not "data"
        ({"eval_data": 3}, TypeError, "eval_data must be a tensor or a tuple of tensors"),
        ({"eval_data": torch.empty(0, 3)}, ValueError, "eval_data is empty"),
        # "'int' object is not callable" from inside the loop before
        ({"callback": 3}, TypeError, "callback must be a function or None, got int"),
        ({"batch_transform": "x"}, TypeError, "batch_transform must be a function or None, got str"),
        # "expected str, bytes or os.PathLike object" before
        ({"checkpoint_dir": 3}, TypeError, "checkpoint_dir must be a folder path"),
    ])
    def test_arguments_are_named(self, kw, error, message):
        with pytest.raises(error, match=message):
            fit(make_flow(), data(), steps=1, progress=False, **kw)

    def test_any_int_seed(self):
        """Seeds are taken modulo 2^64 where generators are seeded (torch's own reading of a
        negative seed): a seed beyond 64 bits used to overflow; the others keep their streams."""
        from gencore.train import _seed64

        assert _seed64(-1) == torch.Generator().manual_seed(-1).initial_seed()
        assert _seed64(12345) == 12345
        for seed in (-1, 2**40, 10**30):
            runs = []
            for _ in range(2):
                torch.manual_seed(0)
                res = fit(make_flow(), data(), steps=2, seed=seed, progress=False)
                runs.append(res.history[-1]["train_loss"])
            assert runs[0] == runs[1]

    def test_data_without_values_or_batch_dimension(self):
        with pytest.raises(ValueError, match="data is on the meta device"):
            fit(make_flow(), torch.empty(8, 3, device="meta"), steps=1, progress=False)
        with pytest.raises(ValueError, match="data must have a batch dimension"):
            fit(make_flow(), torch.tensor(1.0), steps=1, progress=False)


def test_glow_image_checkpoint_round_trip(tmp_path):
    from gencore.models import Glow

    torch.manual_seed(3)
    flow = Glow((1, 8, 8), steps=2, hidden=16)
    x = torch.rand(32, 1, 8, 8)
    fit(flow, x, steps=5, batch_size=16, progress=False, checkpoint_dir=tmp_path)
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["model"] == "glow" and meta["config"]["features"] == [1, 8, 8]
    # The random 1x1-convolution permutations and signs are buffers: they come back too.
    torch.testing.assert_close(loaded.eval().log_prob(x), flow.log_prob(x), rtol=0, atol=0)


def test_keep_best_restores_the_best_evaluation():
    x, xe = data(256), data(64, seed=2)
    flow = make_flow()
    res = fit(flow, x, steps=120, batch_size=32, lr=1e-2, eval_data=xe, eval_every=10, keep_best=True,
              progress=False)
    best = min(h["eval_loss"] for h in res.history)
    with torch.no_grad():
        assert flow.loss(xe).item() == pytest.approx(best, rel=1e-6)
    with pytest.raises(ValueError, match="keep_best needs eval_data"):
        fit(make_flow(), x, steps=1, keep_best=True, progress=False)
