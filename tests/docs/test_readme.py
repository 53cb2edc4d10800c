"""The README's Python example and the contrastive page's run and do what they say."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(blocks[0], scope)  # noqa: S102 - our own documentation
    torch.testing.assert_close(scope["x_back"], scope["x"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scope["inv_logdet"], -scope["logdet"])
    assert torch.isfinite(scope["loss"])
    assert all(p.grad is not None for p in scope["layers"].parameters())


def test_docs_contrastive_example(doc_block):
    # The contrastive page's code, shortened (fewer steps, a smaller batch) so it runs in CI.
    block = doc_block("docs/models/contrastive.md", "SimCLR(")
    short = block.replace("steps=2000", "steps=30").replace("steps=1500", "steps=30").replace("8192", "300")
    assert short.count("steps=30") == 2 and "300, 256" in short
    scope: dict = {}
    torch.manual_seed(0)
    exec(short, scope)  # noqa: S102 - our own documentation
    assert torch.isfinite(scope["loss"]) and scope["a"].grad is not None
    pred = scope["clip"].zero_shot_classify(scope["xt"], __import__("gencore").data.class_prompts("class"))
    assert pred.shape == scope["yt"].shape and (pred == scope["yt"]).float().mean() > 0.2  # chance: 0.1
