"""The compiled extension's portability contract (csrc/common/stable_api.h, CMakeLists.txt):
only the LibTorch stable ABI, Python's limited API, and a clear error under an old torch."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gencore
from gencore import _C


def test_python_and_cmake_agree_on_the_target_torch():
    assert _C.torch_target_version == ".".join(map(str, gencore.TORCH_MIN_VERSION))
    cmake = (Path(__file__).resolve().parents[2] / "CMakeLists.txt").read_text()
    assert re.search(rf'set\(GENCORE_TORCH_TARGET "{re.escape(_C.torch_target_version)}"', cmake)


@pytest.mark.skipif(shutil.which("nm") is None or shutil.which("c++filt") is None, reason="needs binutils")
def test_extension_imports_no_cxx_symbol_of_libtorch():
    undefined = subprocess.run(["nm", "-D", "--undefined-only", _C.__file__], check=True,
                               capture_output=True, text=True).stdout.split()
    names = [s for s in undefined if s != "U"]
    demangled = subprocess.run(["c++filt", *names], check=True, capture_output=True, text=True).stdout.split("\n")
    cxx = [s for s in demangled if re.match(r"(at|c10|torch)::", s)]
    assert cxx == []
    assert any(s.startswith("aoti_torch_") for s in names)  # the C shim is what it uses
    assert not [s for s in names if s.startswith(("GOMP_", "omp_"))]  # no OpenMP runtime of its own


def test_extension_is_a_limited_api_module():
    assert Path(_C.__file__).name.startswith("_C.abi3")


def test_an_older_torch_is_refused_with_both_versions(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.10.1+cpu")
    with pytest.raises(ImportError, match=r"torch >= 2\.11.*torch 2\.10\.1\+cpu"):
        gencore._check_torch_version()
    monkeypatch.setattr(torch, "__version__", "2.11.0")
    gencore._check_torch_version()


def test_dtype_errors_of_the_raw_op_are_value_errors_and_typed_in_the_wrapper():
    x = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"^\[TypeError\] gencore: x must be a floating-point tensor"):
        torch.ops.gencore.affine_coupling(x, x, x)
    with pytest.raises(TypeError, match=r"^gencore: x must be a floating-point tensor"):
        gencore.ops.affine_coupling(x, x, x)


def test_import_in_a_fresh_interpreter_registers_every_op():
    # Every schema defined in csrc/registration.cpp, and no other gencore op.
    source = (Path(__file__).resolve().parents[2] / "csrc" / "registration.cpp").read_text()
    defined = set(re.findall(r'm\.def\(\s*"(\w+)\(', source))
    assert len(defined) >= 13 and "nearest_code" in defined
    code = ("import torch, gencore; print(' '.join(n for n in torch._C._dispatch_get_all_op_names() "
            "if n.startswith('gencore::')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert {n.removeprefix("gencore::") for n in out.split()} == defined
