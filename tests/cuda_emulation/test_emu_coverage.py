"""Every op with a CUDA kernel has emulated tests, and each emulated op is a real CUDA kernel
(not a fallback to the CPU path)."""

import re
from pathlib import Path

import torch

import test_emu_contrastive
import test_emu_coupling
import test_emu_reparam
import test_emu_spline
import test_emu_vq

CSRC = Path(__file__).resolve().parents[2] / "csrc"
TESTED = {*test_emu_coupling.COVERS, *test_emu_reparam.COVERS, *test_emu_contrastive.COVERS,
           *test_emu_vq.COVERS, *test_emu_spline.COVERS}


def cuda_ops_in_sources() -> set[str]:
    """The ops each .cu registers in its TORCH_LIBRARY_IMPL(gencore, CUDA, m) block."""
    ops = set()
    for cu in CSRC.rglob("*.cu"):
        for block in re.findall(r"TORCH_LIBRARY_IMPL\(gencore,\s*CUDA,\s*m\)\s*\{(.*?)\n\}", cu.read_text(), re.S):
            ops.update(re.findall(r'm\.impl\("(\w+)"', block))
    return ops


def test_every_cuda_op_has_emulated_tests(emu):
    ops = cuda_ops_in_sources()
    assert ops, "no TORCH_LIBRARY_IMPL(gencore, CUDA, m) block found in csrc/**/*.cu"
    missing = ops - TESTED
    assert not missing, f"CUDA ops without emulated tests: {sorted(missing)}"


def test_emulated_library_registers_exactly_the_cuda_ops(emu):
    ops = cuda_ops_in_sources()
    for name in ops:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"gencore_emu::{name}", "CPU"), name
    # The schemas are all of gencore's; only the CUDA ones have an emulated kernel.
    schemas = {s.name.split("::")[1] for s in torch._C._jit_get_all_schemas() if s.name.startswith("gencore_emu::")}
    with_kernel = {n for n in schemas if torch._C._dispatch_has_kernel_for_dispatch_key(f"gencore_emu::{n}", "CPU")}
    assert with_kernel == ops
