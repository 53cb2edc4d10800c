"""`gencore train / eval / sample gan`: short end-to-end runs that must learn."""

import json

import pytest

from gencore import cli


pytestmark = pytest.mark.usefixtures("one_thread")


def test_gan_on_8gaussians_train_eval_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "gan", "--data", "8gaussians", "--steps", "800", "--out", str(run),
                     "--loss", "non_saturating", "--hidden", "128,128", "--batch-size", "128", "--lr", "1e-3",
                     "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 800
    assert cli.main(["eval", str(run)]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["model"] == "gan" and res["data"] == "8gaussians" and res["loss"] == "non_saturating"
    assert res["modes_covered"] == 8 and res["high_quality_fraction"] > 0.8
    assert res["mmd2_vs_heldout"] < res["mmd2_collapsed_vs_heldout"] / 20
    refs = res["references"]
    assert refs["real_train"]["high_quality_fraction"] > 0.98 and refs["collapsed_one_mode"]["modes_covered"] == 1
    # A ring through the centres passes the mode criteria; the local MMD^2 sees that it has no modes.
    assert refs["uniform_ring"]["modes_covered"] == 8 and refs["uniform_ring"]["high_quality_fraction"] > 0.9
    assert refs["uniform_ring"]["mmd2_local_vs_heldout"] > 0.01 > 5 * abs(refs["real_train"]["mmd2_local_vs_heldout"])
    assert res["mmd2_local_vs_heldout"] < refs["uniform_ring"]["mmd2_local_vs_heldout"]
    hist = json.loads((run / "checkpoint.json").read_text())["extra"]["history"]
    assert len(hist) == 10 and all("eval_loss" in h and "modes_covered" in h for h in hist)
    png = tmp_path / "s.png"
    capsys.readouterr()
    assert cli.main(["sample", str(run), "-n", "500", "--out", str(png)]) == 0
    printed = capsys.readouterr().out
    for f in (png, tmp_path / "s-ipm.png", tmp_path / "s-snapshots.png"):
        assert f.read_bytes()[:4] == b"\x89PNG" and str(f) in printed


def test_conditional_digits_gan_eval_reports_quality_and_memorization(tmp_path):
    run = tmp_path / "digits"
    assert cli.main(["train", "gan", "--data", "digits", "--steps", "60", "--out", str(run), "--conditional",
                     "--n-critic", "2", "--ema", "0.99", "--no-progress"]) == 0
    assert cli.main(["eval", str(run)]) == 0
    res = json.loads((run / "eval.json").read_text())
    ref = res["real_reference"]
    # 60 steps exercise the report, not learning (asserted in test_gan.py): the barely trained
    # GAN (measured: score 1.01, accuracy 8%) must score below the real digits it is set against.
    assert ref["inception_score"] > 8 and ref["tstr_accuracy"] > 0.9
    assert res["inception_score"] < ref["inception_score"] and res["tstr_accuracy"] < ref["tstr_accuracy"]
    mem = res["memorization"]
    assert mem["near_copy_fraction"] < 0.05 and mem["sample_nn_median"] > 0
    assert cli.main(["sample", str(run), "-n", "20", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").exists() and (tmp_path / "g-ipm.png").exists()


def test_gan_cli_errors(tmp_path, capsys):
    assert cli.main(["train", "gan", "--data", "moons", "--steps", "1", "--out", str(tmp_path / "m"),
                     "--conditional", "--no-progress"]) == 2
    assert "apply to labelled or image data" in capsys.readouterr().err
    assert cli.main(["train", "realnvp", "--data", "moons", "--steps", "1", "--out", str(tmp_path / "r"),
                     "--loss", "hinge", "--no-progress"]) == 2
    assert "--loss does not apply to realnvp" in capsys.readouterr().err
    assert cli.main(["train", "gan", "--data", "moons", "--steps", "1", "--out", str(tmp_path / "g"),
                     "--n-critic", "0", "--no-progress"]) == 2
    assert "--n-critic must be an int in [1, " in capsys.readouterr().err
