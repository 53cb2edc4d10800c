"""`gencore train / eval` for simclr (digits) and clip (digits-captions)."""

import json

import pytest

from gencore import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*argv):
    return cli.main([str(a) for a in argv])


def _fraction(v):
    return isinstance(v, float) and 0.0 <= v <= 1.0


def test_simclr_train_eval(tmp_path, capsys):
    out = tmp_path / "simclr"
    assert run("train", "simclr", "--data", "digits", "--steps", 80, "--out", out, "--batch-size", 128,
               "--no-progress") == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 80
    assert run("eval", out) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "eval.json").read_text())
    assert json.loads(printed[:printed.rindex("}") + 1]) == res
    assert res["model"] == "simclr" and res["data"] == "digits" and res["step"] == 80 and res["held_out"] == 450
    for key in ("linear_probe_accuracy", "knn_accuracy", "augmented_test_knn_accuracy"):
        assert _fraction(res[key])
    for base in ("raw_pixels", "random_init_encoder"):
        assert set(res["baselines"][base]) == {"linear_probe_accuracy", "knn_accuracy", "augmented_test_knn_accuracy"}
    # Measured after 80 steps: probe 0.97, kNN 0.96 (raw pixels 0.96 / 0.98); the augmented
    # held-out digits show the learned invariance over the untrained encoder.
    assert res["linear_probe_accuracy"] > 0.9 and res["knn_accuracy"] > 0.9
    assert res["augmented_test_knn_accuracy"] > res["baselines"]["random_init_encoder"]["augmented_test_knn_accuracy"]
    hist = json.loads((out / "checkpoint.json").read_text())["extra"]["history"]
    assert hist[-1]["eval_loss"] < hist[0]["eval_loss"]


def test_clip_train_eval_and_errors(tmp_path):
    out = tmp_path / "clip"
    assert run("train", "clip", "--data", "digits-captions", "--steps", 80, "--out", out, "--batch-size", 128,
               "--hidden", "16,32,64", "--no-progress") == 0
    assert run("eval", out) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["model"] == "clip" and res["data"] == "digits-captions"
    for key in ("linear_probe_accuracy", "knn_accuracy", "zero_shot_accuracy", "zero_shot_accuracy_ensemble"):
        assert _fraction(res[key])
    r = res["retrieval"]
    for direction in ("image_to_text", "text_to_image", "chance", "image_to_text_exact_pair"):
        assert set(r[direction]) == {"recall@1", "recall@5"}
        assert all(_fraction(v) for v in r[direction].values())
        assert r[direction]["recall@1"] <= r[direction]["recall@5"]
    assert res["zero_shot_accuracy"] > 0.5  # chance 0.1
    assert r["image_to_text"]["recall@1"] > 5 * r["chance"]["recall@1"]
    assert r["text_to_image"]["recall@1"] > 5 * r["chance"]["recall@1"]
    a = res["caption_arithmetic"]
    assert a["property_hit_rate"] > a["property_chance"] and a["class_hit_rate"] > a["class_chance"]
    assert res["logit_scale"] > 0
    # Wrong pairings of model and data, and flags that do not apply.
    assert run("train", "clip", "--data", "digits", "--steps", 1, "--out", tmp_path / "a") == 2
    assert run("train", "simclr", "--data", "digits-captions", "--steps", 1, "--out", tmp_path / "b") == 2
    assert run("train", "realnvp", "--data", "digits-captions", "--steps", 1, "--out", tmp_path / "c") == 2
    assert run("train", "simclr", "--data", "digits", "--steps", 1, "--out", tmp_path / "d", "--image") == 2
    assert run("sample", out, "-n", 4, "--out", tmp_path / "x.png") == 2
