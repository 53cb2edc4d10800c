import re
from pathlib import Path

import pytest
import torch

import gencore  # noqa: F401  (registers the ops)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(params=["tiles", "gemm", "gemm-chunks"])
def contrastive_path(request, monkeypatch):
    """The two paths of the CUDA contrastive backend (csrc/contrastive/contrastive_cuda.cu):
    the tile kernels, and cuBLAS GEMMs over chunks of query rows, in one chunk or (a
    64 KiB budget) in many. Without the variable, the size of the problem chooses."""
    path = request.param
    monkeypatch.setenv("GENCORE_CONTRASTIVE_PATH", "tiles" if path == "tiles" else "gemm")
    if path == "gemm-chunks":
        monkeypatch.setenv("GENCORE_CONTRASTIVE_CHUNK_BYTES", "65536")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Small models gain nothing from intra-op threads, and on a shared, busy CPU two spinning
    OpenMP threads slow them down many times over: one thread for the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- code blocks of the documentation (README.md, docs/) ----

ROOT = Path(__file__).resolve().parents[1]


def doc_python_blocks(page: str) -> list[str]:
    """The ```python blocks of a Markdown file of the repository, e.g. "README.md" or
    "docs/models/flows.md", in order."""
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)


def doc_python_block(page: str, containing: str) -> str:
    """The first ```python block of ``page`` that contains ``containing``."""
    blocks = [b for b in doc_python_blocks(page) if containing in b]
    assert blocks, f"{page} has no python block containing {containing!r}"
    return blocks[0]


@pytest.fixture
def doc_block():
    """``doc_block(page, containing)``: a python block of the documentation (see above)."""
    return doc_python_block
