"""Helpers of the emulated CUDA suite: the emulated library (build.py), an op call that must
launch emulated kernels, and the comparison with the CPU path.

Environment:
- GENCORE_EMU_VARIANT: plain (default), asan or tsan: which build to load (the sanitizer
  builds need their runtime preloaded: see the Makefile's cuda-emulate-sanitize);
- GENCORE_EMU_ORDER: forward (default), reverse, or random:SEED: the order in which the
  emulator runs the threads of a block and the blocks of a grid;
- GENCORE_EMU_LIB: a prebuilt library to load instead (mutation.py's mutants).
"""

import ctypes
import importlib.util
import os
from pathlib import Path

import torch

import gencore  # noqa: F401  (the real ops: the CPU path every emulated kernel is checked against)

_spec = importlib.util.spec_from_file_location("simt_build", Path(__file__).with_name("build.py"))
simt_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(simt_build)

ORDERS = {"forward": 0, "reverse": 1, "random": 2}


def parse_order(text: str) -> tuple[int, int]:
    name, _, seed = text.partition(":")
    if name not in ORDERS or (seed and not seed.isdigit()):
        raise ValueError(f"GENCORE_EMU_ORDER must be forward, reverse or random:SEED, got {text!r}")
    return ORDERS[name], int(seed or 0)


class Emulator:
    """The loaded emulated library: ``ops`` (torch.ops.gencore_emu), its launch counter and
    settings, and ``call`` (an op call that must launch at least one emulated kernel)."""

    def __init__(self, path: Path):
        torch.ops.load_library(str(path))
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        self.lib.simt_launch_count.restype = ctypes.c_longlong
        self.lib.simt_block_count.restype = ctypes.c_longlong
        self.lib.simt_configure.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_ulonglong]
        self.lib.simt_probe.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_char_p, ctypes.c_int]
        self.ops = torch.ops.gencore_emu
        self.order, self.seed = parse_order(os.environ.get("GENCORE_EMU_ORDER", "forward"))
        self.configure(sm_count=132)

    def configure(self, sm_count: int, order: int | None = None) -> None:
        rc = self.lib.simt_configure(sm_count, self.order if order is None else order, self.seed)
        assert rc == 0

    def launches(self) -> int:
        return self.lib.simt_launch_count()

    def call(self, name: str, *args, **kwargs):
        before = self.launches()
        out = getattr(self.ops, name)(*args, **kwargs)
        assert self.launches() > before, f"gencore_emu::{name} launched no emulated kernel"
        return out

    def probe(self, name: str, buf: torch.Tensor | None = None, ibuf: torch.Tensor | None = None):
        """Runs a kernel of probes.cu; returns the emulator's error message, or None."""
        msg = ctypes.create_string_buffer(4096)
        rc = self.lib.simt_probe(name.encode(), None if buf is None else buf.data_ptr(),
                                 None if ibuf is None else ibuf.data_ptr(), msg, len(msg))
        assert rc in (0, 1), f"unknown probe {name}"
        return msg.value.decode() if rc == 1 else None


def assert_matches(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    """got: an emulated kernel's output in `dtype`; ref: the CPU path's, in float32 (for
    float16 / bfloat16, on the same rounded inputs) or in `dtype`. Low precision follows
    FlashAttention's rule: the error is at most twice that of rounding the reference to
    `dtype`, plus a float32-sized floor."""
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    if dtype in (torch.float32, torch.float64):
        tol = 2e-5 if dtype == torch.float32 else 1e-11
        torch.testing.assert_close(got.to(ref.dtype), ref, rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")
        return
    ref = ref.float()
    if ref.numel() == 0:
        return
    err = (got.float() - ref).abs().max().item()
    rounding = (ref.to(dtype).float() - ref).abs().max().item()
    floor = 1e-5 * (1.0 + ref.abs().max().item())
    assert err <= 2 * rounding + floor, f"{what}: error {err:.3g} > 2 x rounding {rounding:.3g} + {floor:.2g}"


LOW = (torch.float16, torch.bfloat16)
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def cpu_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the CPU reference runs in: float32 for the half types (on rounded inputs)."""
    return torch.float32 if dtype in LOW else dtype
