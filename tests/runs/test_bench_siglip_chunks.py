"""bench/bench_siglip_chunks.py on the CPU: a smoke test of its harness (the chunk budgets
apply to the CUDA GEMM path only; tests/cuda_emulation checks its chunk counts)."""

from gencore.benchmarks import gemm_chunks


def test_quick_run_writes_a_row_per_configuration(tmp_path, capsys):
    assert gemm_chunks.main(["--device", "cpu", "--dtype", "float32", "--quick", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "siglip-chunks-cpu-float32.md").read_text()
    assert "these rows test the harness only" in md
    rows = [line for line in md.splitlines() if line.startswith("| siglip 512×32 |")]
    names = [r.split(" | ")[1] for r in rows]
    assert names == ["gemm, 16 MiB chunks", "gemm, 32 MiB chunks (default)", "gemm, 128 MiB chunks",
                     "gemm, 512 MiB chunks", "tile kernels", "eager (materialized)"]
    for r in rows:
        cells = r.strip("|").split(" | ")
        ms, host = float(cells[3].split()[0]), float(cells[4])
        assert ms > 0 and host > 0 and cells[6] != "–" and float(cells[7]) >= 0
    assert rows[-1].split(" | ")[6] == "1.00"  # eager against itself


def test_chunk_count_follows_the_budget():
    import torch

    # float32: 4 bytes per pair; bfloat16: 4 + 2 x 2 (the weight's hi and lo)
    assert gemm_chunks.chunk_count(8192, 8192, torch.float32, 32 << 20) == 8   # 1024 rows
    assert gemm_chunks.chunk_count(8192, 8192, torch.bfloat16, 32 << 20) == 16  # 512 rows
    assert gemm_chunks.chunk_count(65536, 65536, torch.bfloat16, 32 << 20) == 1024
    # the weights rounded once (GENCORE_CONTRASTIVE_HALF_WEIGHTS=single): 4 + 2 bytes, 682 rows
    assert gemm_chunks.chunk_count(8192, 8192, torch.bfloat16, 32 << 20, planes=1) == 13
    assert gemm_chunks.chunk_count(10, 10, torch.float32, 1) == 10  # at least one row
    assert gemm_chunks.chunk_count(10, 10, torch.float32, 1 << 30) == 1
