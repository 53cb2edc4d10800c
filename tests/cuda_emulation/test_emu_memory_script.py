"""tests/cuda_emulation/memory.py (the CUDA path's peak memory, measured under the emulator)
end to end on a small problem."""

import importlib.util
import os
from pathlib import Path

_spec = importlib.util.spec_from_file_location("emu_memory", Path(__file__).with_name("memory.py"))
emu_memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(emu_memory)


def test_memory_script_writes_its_table(emu, tmp_path, monkeypatch):
    monkeypatch.delenv("GENCORE_CONTRASTIVE_PATH", raising=False)
    monkeypatch.delenv("GENCORE_EMU_GEMM_BLOCK", raising=False)
    monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", str(8 * 256 * 32))  # 32-row chunks in bfloat16
    assert emu_memory.main(["--n", "256", "--d", "16", "--dtypes", "float32,bfloat16", "--out", str(tmp_path)], emu=emu) == 0
    text = (tmp_path / "siglip-emulated-memory.md").read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| siglip 256×16")]
    assert [r[1].strip() for r in rows] == ["float32", "bfloat16", "bfloat16, weights rounded once"]
    chunks = {r[1].strip(): int(r[2]) for r in rows}
    # 4 bytes per pair in float32 (64 rows), 8 with hi and lo (32), 6 rounded once (42)
    assert chunks == {"float32": 4, "bfloat16": 8, "bfloat16, weights rounded once": 7}
    for r in rows:
        # at least the chunk (64 KiB of pairs) and the float32 gradient accumulators (32 KiB)
        assert float(r[3]) >= 96 / 1024, r
    # the settings it measures under are its own, not left to the tests after it
    assert "GENCORE_CONTRASTIVE_PATH" not in os.environ and "GENCORE_EMU_GEMM_BLOCK" not in os.environ
    assert "GENCORE_CONTRASTIVE_HALF_WEIGHTS" not in os.environ
