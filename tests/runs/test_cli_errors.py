"""`gencore` reports a user error as one line, `gencore: error: ...`, with exit status 2 and
no traceback (`--debug` shows it); an internal error is status 1 with a hint; output paths
are reported as written."""

import subprocess
import sys

import pytest
import torch

from gencore import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "gencore.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def assert_user_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("gencore: error: "), r.stderr
    for f in fragments:
        assert f in first, first


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A RealNVP run folder trained for one step (a checkpoint to sample from)."""
    out = tmp_path_factory.mktemp("cli-errors") / "run"
    assert cli.main(["train", "realnvp", "--data", "8gaussians", "--steps", "1", "--out", str(out),
                     "--couplings", "2", "--hidden", "8", "--batch-size", "32", "--no-progress"]) == 0
    return out


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("not a folder")
    return f


# --- the measured cases, each in a subprocess: the real stderr and exit status ----------------

def test_negative_hidden_size(tmp_path):
    r = run("train", "realnvp", "--data", "8gaussians", "--steps", 1, "--out", tmp_path / "r", "--hidden", "-5")
    assert_user_error(r, "--hidden", "'-5'")
    assert not (tmp_path / "r").exists()  # refused before any work


def test_train_out_is_a_file(a_file):
    r = run("train", "realnvp", "--data", "8gaussians", "--steps", 1, "--out", a_file, "--no-progress")
    assert_user_error(r, "--out", "not a folder")
    assert a_file.read_text() == "not a folder"


def test_demo_out_is_a_file(a_file):
    r = run("demo", "--quick", "--out", a_file)
    assert_user_error(r, "demo", "--out", "not a folder")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_cuda_without_cuda():
    r = run("bench", "coupling", "--device", "cuda", "--quick")
    assert_user_error(r, "--device cuda", "CUDA is not available")


def test_sample_n_too_large(tiny_run, tmp_path):
    r = run("sample", tiny_run, "-n", 10**10, "--out", tmp_path / "s.png")
    assert_user_error(r, "-n", str(10**10))
    assert f"between 1 and {cli.MAX_SAMPLES:,} (one PNG;" in r.stderr
    assert not (tmp_path / "s.png").exists()


def test_debug_shows_the_traceback(tiny_run, tmp_path):
    for argv in (["--debug", "sample", tiny_run], ["sample", tiny_run, "--debug"]):
        r = run(*argv, "-n", 10**10, "--out", tmp_path / "s.png")
        assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr, r.stderr
        assert "UsageError: sample: -n must be between 1 and" in r.stderr


def test_sample_reports_the_png_it_wrote(tiny_run, tmp_path, capsys):
    assert cli.main(["sample", str(tiny_run), "-n", "16", "--out", str(tmp_path / "X")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"wrote {tmp_path / 'X.png'}"]
    assert (tmp_path / "X.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "X").exists()


# --- more argument checks, in process (fast) ----------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["train", "realnvp", "--data", "8gaussians", "--steps", "1", "--out", "{tmp}/r", "--hidden", "64,0"], "--hidden"),
    (["train", "realnvp", "--data", "8gaussians", "--steps", "1", "--out", "{tmp}/r", "--hidden", "a,b"], "--hidden"),
    (["train", "gan", "--data", "8gaussians", "--steps", "1", "--out", "{tmp}/r", "--hidden", "-5"], "--hidden"),
    (["train", "realnvp", "--data", "8gaussians", "--steps", "0", "--out", "{tmp}/r"], "steps must be"),
    (["train", "realnvp", "--data", "8gaussians", "--steps", "1", "--out", "{file}/sub"], "is a file"),
    (["sample", "{tmp}/run", "-n", "0", "--out", "{tmp}/s.png"], "-n"),
    (["sample", "{tmp}/nothing", "--out", "{tmp}/s.png"], "not a run folder"),
    (["sample", "{tmp}/run", "--out", "{tmp}"], "is a folder"),
    (["eval", "{file}"], "not a run folder"),
    (["bench", "coupling", "--device", "tpu"], "--device"),
    (["bench", "coupling", "--device", "cpu", "--out", "{file}"], "not a folder"),
    (["demo", "--out", "{file}/sub"], "is a file"),
    # An unset shell variable: Path("") is the current folder, which would receive the run.
    (["train", "realnvp", "--data", "8gaussians", "--steps", "1", "--out", ""], "--out is empty"),
    (["train", "realnvp", "--data", "8gaussians", "--steps", "1", "--out", "{tmp}/r", "--seed", "-1"], "--seed"),
    (["train", "realnvp", "--data", "8gaussians", "--steps", "1", "--out", "{tmp}/r", "--seed", str(10**14)],
     "--seed must be in [0, 4294967295]"),
    (["sample", "{tmp}/run", "--out", "{tmp}/s.png", "--seed", str(10**23)],
     "--seed must be in [0, 18446744073709551615]"),
    (["sample", "{tmp}/run", "-n", "100", "--candidates", "1000000000", "--out", "{tmp}/s.png"], "times --candidates"),
    # Model options are named by their flag, not by the config key they set (glow's is "steps").
    (["train", "glow", "--data", "8gaussians", "--steps", "1", "--out", "{tmp}/r", "--couplings", "0"],
     "--couplings must be an int in [1, 512], got 0"),
    (["train", "realnvp", "--data", "8gaussians", "--steps", "1", "--out", "{tmp}/r", "--couplings", "100000"],
     "--couplings must be an int in [1, 512]"),
    (["train", "vqvae", "--data", "digits", "--steps", "1", "--out", "{tmp}/r", "--num-codes", "0"],
     "--num-codes must be an int in [1, "),
    (["train", "gan", "--data", "8gaussians", "--steps", "1", "--out", "{tmp}/r", "--n-critic", "0"],
     "--n-critic must be an int in [1, "),
    (["train", "vae", "--data", "digits", "--steps", "1", "--out", "{tmp}/r", "--latent-dim", str(2**21)],
     "--latent-dim must be an int in [1, 1048576]"),
])
def test_bad_arguments_are_user_errors(argv, fragment, tmp_path, a_file, tiny_run, capsys):
    argv = [a.format(tmp=tmp_path, file=a_file).replace(f"{tmp_path}/run", str(tiny_run)) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gencore: error: ") and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


def test_bench_cuda_refused_when_cuda_is_unavailable(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "coupling", "--device", "cuda", "--quick"]) == 2
    assert capsys.readouterr().err.startswith("gencore: error: bench: --device cuda: CUDA is not available")


def test_argparse_errors_use_the_same_prefix(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "realnvp", "--data", "8gaussians"])
    assert e.value.code == 2
    assert "gencore: error: train: the following arguments are required: --out" in capsys.readouterr().err


def test_file_system_errors_are_user_errors(monkeypatch, capsys):
    def denied(args):
        raise PermissionError(13, "Permission denied", "/nope/x.json")

    monkeypatch.setattr(cli, "cmd_info", denied)
    assert cli.main(["info"]) == 2
    assert capsys.readouterr().err == "gencore: error: info: /nope/x.json: Permission denied\n"


def test_internal_errors_exit_1_with_a_hint(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("something broke")

    monkeypatch.setattr(cli, "cmd_info", boom)
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gencore: internal error: RuntimeError: info: something broke\n")
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="something broke"):
        cli.main(["--debug", "info"])


def test_a_flow_on_one_column_names_the_data(tmp_path, capsys):
    """A coupling (or autoregressive) flow transforms part of each example given the rest: one
    column of your own data is refused naming the file, not as the model's features = 1."""
    data = tmp_path / "one.csv"
    data.write_text("x\n" + "".join(f"{v / 10}\n" for v in range(20)))
    for model in ("nice", "realnvp", "glow", "nsf"):
        assert cli.main(["train", model, "--data", str(data), "--steps", "1", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert f"train: {model} needs at least 2 features per example" in err and "one.csv has 1" in err, err
