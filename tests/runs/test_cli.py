"""The `gencore` command line."""

import json
import subprocess
import sys

import pytest

import gencore
from gencore import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "gencore.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"gencore {gencore.__version__}"


def test_info_json_lists_ops_and_backends():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert "cpu" in info["compiled_backends"]
    op = info["ops"]["affine_coupling"]
    assert "CPU" in op["kernels"]
    assert op["schema"].startswith("gencore::affine_coupling(Tensor x, Tensor log_scale, Tensor shift")
    assert "CPU" in info["ops"]["masked_affine_coupling"]["kernels"]
    assert info["torch"].startswith("2.")


def test_unknown_command_fails():
    r = run("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_bench_coupling_quick_writes_results(tmp_path, capsys):
    rc = cli.main(["bench", "coupling", "--device", "cpu", "--quick", "--out", str(tmp_path)])
    assert rc == 0
    md = (tmp_path / "coupling-cpu-float32.md").read_text()
    csv = (tmp_path / "coupling-cpu-float32.csv").read_text().splitlines()
    # 3 quick cases (2 of affine_coupling, 1 of masked_affine_coupling) x 3 modes x 3 providers,
    # plus the header.
    assert len(csv) == 1 + 3 * 3 * 3
    assert "| 4096×512 | full |" in md and "| alternate 64×64 | full |" in md and "× vs compile" in md
    for line in csv[1:]:
        median = float(line.split(",")[3])
        assert median > 0


def test_bench_rejects_unknown_op():
    with pytest.raises(SystemExit):
        cli.main(["bench", "nothing"])
