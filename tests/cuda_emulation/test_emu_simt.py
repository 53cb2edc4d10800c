"""The SIMT emulator itself (simt/, probes.cu): collectives compute what CUDA defines,
shared memory starts poisoned, the thread order is selectable, and every strict check
names the problem, the kernel, the source line, the block and the thread."""

import math

import pytest
import torch

from simt_testing import ORDERS


def probe_ok(emu, name, buf=None, ibuf=None):
    msg = emu.probe(name, buf, ibuf)
    assert msg is None, msg


def test_shuffles_and_votes(emu):
    out = torch.zeros(8 * 32)
    probe_ok(emu, "collectives", out)
    lane = torch.arange(32)
    o = out.view(8, 32)
    assert torch.equal(o[0], (lane ^ 5).float())
    assert torch.equal(o[1], torch.where(lane >= 3, lane - 3, lane).float())
    assert torch.equal(o[2], torch.where(lane + 3 < 32, lane + 3, lane).float())
    assert torch.equal(o[3], torch.full((32,), 7.0))
    assert torch.equal(o[4], (lane ^ 1).float())  # within groups of 8
    ballot = sum(1 << i for i in range(16) if i % 3 == 0)
    assert torch.equal(o[5], torch.full((32,), float(ballot)))
    assert torch.equal(o[6], torch.ones(32)) and torch.equal(o[7], torch.zeros(32))


def test_block_reduction_and_atomics(emu):
    x = torch.zeros(1028)
    x[:1024] = torch.randn(1024)
    count = torch.zeros(1, dtype=torch.int32)
    blocks = emu.lib.simt_block_count()
    probe_ok(emu, "block_sum", x, count)
    torch.testing.assert_close(x[1024:], x[:1024].view(4, 256).sum(1), rtol=1e-5, atol=1e-5)
    assert count.item() == 1024
    assert emu.lib.simt_block_count() - blocks == 4


def test_unwritten_shared_memory_reads_as_nan(emu):
    out = torch.zeros(1)
    probe_ok(emu, "unwritten_shared", out)
    assert math.isnan(out.item())


def test_thread_order_is_selectable(emu):
    """A race (no barrier between a write and another thread's read) gives the written
    value in one order and the poison in the other."""
    seen = {}
    try:
        for name in ("forward", "reverse"):
            emu.configure(132, order=ORDERS[name])
            out = torch.zeros(1)
            probe_ok(emu, "race", out)
            seen[name] = out.item()
    finally:
        emu.configure(132)
    assert seen["forward"] == 1.0 and math.isnan(seen["reverse"])


def test_wmma_matches_a_float_product(emu):
    buf = torch.zeros(256 + 256 + 8, dtype=torch.float32)
    assert buf.data_ptr() % 32 == 0
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 16, generator=g).half(), torch.randn(16, 16, generator=g).half()
    halves = buf[:256].view(torch.float16)
    halves[:256] = a.flatten()
    halves[256:] = b.t().contiguous().flatten()  # b column-major
    probe_ok(emu, "wmma", buf)
    torch.testing.assert_close(buf[256:512].view(16, 16), a.float() @ b.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, pattern", [
    ("different_barriers", r"threads wait at different barriers: thread \(0, 0, 0\) at tests/cuda_emulation/probes\.cu:\d+, thread \(16, 0, 0\) at tests/cuda_emulation/probes\.cu:\d+"),
    ("barrier_after_exit", r"__syncthreads at tests/cuda_emulation/probes\.cu:\d+ after 63 thread\(s\) of the block exited"),
    ("shuffle_after_exit", r"a shuffle at tests/cuda_emulation/probes\.cu:\d+ after lane 3 of the warp exited"),
    ("partial_mask", r"mask 0xffff is a partial warp"),
    ("nonuniform_mask", r"non-uniform masks in the warp"),
    ("divergent_warp", r"divergent warp: lane 0 waits at a shuffle at .*probes\.cu:\d+, lane 16 at a vote at"),
    ("wmma_misaligned", r"wmma::load_matrix_sync at .*probes\.cu:\d+: pointer 0x[0-9a-f]+ is not 32-byte"),
    ("wmma_bad_ld", r"leading dimension 20 \(40 bytes\) must be >= 16 and a multiple of 16 bytes"),
    ("too_many_threads", r"invalid block \(2048, 1, 1\): 2048 threads"),
    ("empty_grid", r"invalid grid \(0, 1, 1\)"),
    ("launch_bounds", r"block of 128 threads exceeds the kernel's __launch_bounds__\(64\)"),
    ("big_shared", r"static shared memory of 53248 bytes exceeds 48 KiB"),
])
def test_strict_checks_name_the_problem(emu, name, pattern):
    buf = torch.zeros(1024)
    msg = emu.probe(name, buf, torch.zeros(1, dtype=torch.int32))
    assert msg is not None, f"probe {name} ran without an error"
    import re

    assert re.search(pattern, msg), msg
    assert "in kernel" in msg and "launched at tests/cuda_emulation/probes.cu:" in msg
    if not name.startswith(("too_many", "empty_grid", "launch_bounds", "big_shared")):
        assert re.search(r"block \(0, 0, 0\), thread \(\d+, 0, 0\)", msg), msg


def test_emulator_errors_reach_python_from_an_op(emu):
    """A failing check inside an op's kernel is a RuntimeError at the op call, not a crash."""
    out = torch.zeros(32)
    assert emu.probe("partial_mask", out) is not None
    # the emulator recovers: the next launch runs normally
    probe_ok(emu, "collectives", torch.zeros(256))
