"""The README's Python example runs and does what it says."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(blocks[0], scope)  # noqa: S102 - our own documentation
    torch.testing.assert_close(scope["x_back"], scope["x"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scope["inv_logdet"], -scope["logdet"])
    assert torch.isfinite(scope["loss"])
    assert all(p.grad is not None for p in scope["layers"].parameters())
