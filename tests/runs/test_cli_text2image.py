"""`gencore train / eval / sample` for text2image (digits-captions): the run layer's split
handling (held-out combinations never trained on), the eval JSON, captions on the command
line and their errors."""

import json
import sys

import numpy as np
import pytest
import torch

from gencore import cli, runs
from gencore.data import load_dataset
from gencore.runs import text2image as t2i

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*argv):
    return cli.main([str(a) for a in argv])


def test_held_out_combinations_never_reach_training(tmp_path, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(net, data, *, eval_data, keep_best=False, **kw):
        seen.update(train=data, eval=eval_data, keep_best=keep_best, steps=kw["steps"], batch=kw["batch_size"])
        raise Stop

    monkeypatch.setattr(sys.modules[runs.get("text2image").train.__module__], "fit", fake_fit)
    with pytest.raises(Stop):
        runs.train("text2image", "digits-captions", tmp_path / "r", progress=False)
    x, t, _ = load_dataset("digits-captions", "fit", dequantized=False)
    xv, tv, _ = load_dataset("digits-captions", "val")
    held = t2i.held_out_tokens()
    assert held.shape == (10, 3) and len({tuple(r) for r in held.tolist()}) == 10
    for (xs, ts), (xa, ta) in ((seen["train"], (x, t)), (seen["eval"], (xv, tv))):
        assert not (ts[:, None] == held[None]).all(-1).any()  # no held-out combination
        keep = t2i.seen_mask(ta)
        assert 0 < (~keep).sum() < 0.2 * len(ta) and torch.equal(ts, ta[keep]) and torch.equal(xs, xa[keep])
    assert seen["keep_best"] and (seen["steps"], seen["batch"]) == (t2i.STEPS, 128)


def test_train_eval_sample(tmp_path, capsys, monkeypatch):
    # A short run and a lighter eval (fewer candidates and draws, a briefly trained judge).
    monkeypatch.setattr(t2i, "CANDIDATES", 2)
    monkeypatch.setattr(t2i, "PER_COMBO", 4)
    monkeypatch.setattr(t2i, "JUDGE_STEPS", 50)
    t2i.judge_clip.cache_clear()
    out = tmp_path / "t2i"
    try:
        assert run("train", "text2image", "--data", "digits-captions", "--steps", 30, "--out", out,
                   "--no-progress") == 0
        assert json.loads(capsys.readouterr().out)["steps"] == 30
        assert run("eval", out) == 0
    finally:
        t2i.judge_clip.cache_clear()
    res = json.loads((out / "eval.json").read_text())
    assert res["model"] == "text2image" and res["step"] == 30
    tc = res["test_captions"]
    for key in ("generated", "generated_reranked", "plain_sampling", "real_test_digits", "chance"):
        assert set(tc[key]) == {"class_accuracy", "stroke_accuracy", "slant_accuracy", "all_accuracy",
                                "clip_recall@1"}, key
        assert all(0 <= v <= 1 for v in tc[key].values())
    # Real test digits: their captions were written by the judging rule, and the classifier is good.
    assert tc["real_test_digits"]["class_accuracy"] > 0.95 and tc["real_test_digits"]["stroke_accuracy"] > 0.9
    assert tc["chance"]["class_accuracy"] == 0.1 and abs(tc["chance"]["stroke_accuracy"] - 1 / 3) < 1e-12
    assert res["held_out_combos"]["per_combo"] == 4 and len(res["held_out_combos"]["combos"]) == 10
    mem = res["diversity_and_memorization"]
    assert {"near_copy_fraction", "nn_ratio", "tstr_accuracy"} <= set(mem["generated"])
    prior = res["prior"]
    # A 30-step run: only the report's shape and units here; the prior learning below the
    # unigram frequencies is asserted in tests/models/test_text2image.py.
    assert 1 <= prior["perplexity_per_code"] <= 64 and prior["uniform_perplexity_per_code"] == 64
    assert res["caption_arithmetic"]["generated"]["queries"] == 360
    png = tmp_path / "seven.png"
    assert run("sample", out, "--caption", "bold upright seven", "-n", 6, "--candidates", 2, "--out", png) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert run("sample", out, "-n", 10, "--out", tmp_path / "all") == 0
    assert (tmp_path / "all.png").exists()
    # as data: one image per default caption 'regular upright <class>', labelled with the class
    assert run("sample", out, "-n", 20, "--out", tmp_path / "all.npz") == 0
    from gencore.data.files import read_data

    d = read_data(tmp_path / "all.npz")
    assert d.x.shape == (20, 1, 8, 8) and np.array_equal(d.y, np.arange(20) % 10)
    assert run("sample", out, "--caption", "bold upright seven", "-n", 10, "--out", tmp_path / "seven.npz") == 0
    assert np.array_equal(read_data(tmp_path / "seven.npz").y, np.full(10, 7))  # the class its caption names
    assert run("sample", out, "--caption", "bold upright", "-n", 10, "--out", tmp_path / "open.npz") == 0
    assert read_data(tmp_path / "open.npz").y is None  # no class word: no class to record


def test_sample_errors(tmp_path, capsys):
    out = tmp_path / "t2i"
    assert run("train", "text2image", "--data", "digits-captions", "--steps", 2, "--out", out, "--no-progress") == 0
    capsys.readouterr()
    assert run("sample", out, "--caption", "bold slanted seven", "--out", tmp_path / "x.png") == 2
    err = capsys.readouterr().err
    assert "unknown caption token 'slanted'" in err and "left, upright, right" in err and "zero, one" in err
    assert not (tmp_path / "x.png").exists()
    assert run("sample", out, "--caption", "thin bold seven", "--out", tmp_path / "x.png") == 2
    assert "two stroke words" in capsys.readouterr().err
    assert run("sample", out, "--candidates", 0, "--out", tmp_path / "x.png") == 2
    assert "--candidates must be a positive int" in capsys.readouterr().err
    assert run("train", "clip", "--data", "digits-captions", "--steps", 2, "--out", tmp_path / "c",
               "--no-progress") == 0
    capsys.readouterr()
    assert run("sample", tmp_path / "c", "--caption", "seven", "--out", tmp_path / "x.png") == 2
    assert "no generator" in capsys.readouterr().err
    assert run("train", "vae", "--data", "digits", "--steps", 2, "--out", tmp_path / "v", "--no-progress") == 0
    capsys.readouterr()
    assert run("sample", tmp_path / "v", "--caption", "seven", "--out", tmp_path / "x.png") == 2
    assert "apply to text2image runs, not vae" in capsys.readouterr().err
    assert run("train", "text2image", "--data", "digits", "--out", tmp_path / "w") == 2
    assert "text2image trains on digits-captions" in capsys.readouterr().err
    assert run("train", "text2image", "--data", "digits-captions", "--hidden", "8", "--out", tmp_path / "w") == 2
    assert "does not apply to text2image" in capsys.readouterr().err
