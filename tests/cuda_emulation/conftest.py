"""Fixtures of the emulated CUDA suite (helpers: simt_testing.py)."""

import os
from pathlib import Path

import pytest

from simt_testing import Emulator, simt_build


@pytest.fixture(scope="session")
def emu() -> Emulator:
    path = os.environ.get("GENCORE_EMU_LIB")
    if not path:
        path = simt_build.build(os.environ.get("GENCORE_EMU_VARIANT", "plain"), verbose=False)
    return Emulator(Path(path))


@pytest.fixture(params=[1, 132], ids=["sm1", "sm132"])
def sm_count(request, emu):
    """The SM count the launchers see (the contrastive grids split their key tiles over
    gridDim.y when the rows alone cannot fill the device)."""
    emu.configure(request.param)
    yield request.param
    emu.configure(132)
