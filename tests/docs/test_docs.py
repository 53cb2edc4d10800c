"""The documentation (README.md and docs/, built by `make docs`): its Python examples compile
and run (shortened), every one of them is run by some test, and its relative links lead to
files of the repository."""

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

# Every ```python block of the documentation is run by a test: (page, a string that
# identifies the block) -> the test that runs it. A new example needs an entry (and a test).
TESTED = {
    ("README.md", "AffineCoupling(8, MLP("): "tests/docs/test_readme.py::test_readme_example",
    ("docs/models/contrastive.md", "SimCLR("): "tests/docs/test_readme.py::test_docs_contrastive_example",
    ("docs/data.md", "points.npy"): "tests/data/test_data_files.py::test_docs_data_example",
    ("docs/data.md", "with read_once():"): "tests/data/test_data_files.py::test_docs_read_once_example",
    ("docs/models/flows.md", "RealNVP(2, n_couplings=16"): "tests/docs/test_docs.py::test_docs_flows_example",
    ("docs/models/latent.md", "VAE(64, latent_dim=16"): "tests/docs/test_docs.py::test_docs_vae_examples",
    ("docs/models/latent.md", "HierarchicalVAE(64, latent_dims"): "tests/docs/test_docs.py::test_docs_vae_examples",
    ("docs/models/text2image.md", "TextToImage()"): "tests/docs/test_docs.py::test_docs_text2image_example",
}


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


def test_docs_pages_found():
    names = {_rel(p) for p in PAGES}
    assert {"README.md", "docs/index.md", "docs/ops.md", "docs/design.md", "docs/benchmarks.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_docs_python_blocks_compile(page):
    for i, block in enumerate(_blocks(page)):
        compile(block, f"{_rel(page)}, python block {i + 1}", "exec")


def test_docs_every_python_block_is_tested():
    untested = []
    for page in PAGES:
        for block in _blocks(page):
            if not any(p == _rel(page) and key in block for p, key in TESTED):
                untested.append(f"{_rel(page)}: {block.splitlines()[0]!r}...")
    assert not untested, "python blocks that no test runs (add them to TESTED, with a test):\n" + "\n".join(untested)
    for (page, key), test in TESTED.items():  # and every entry still names a block
        assert any(key in b for b in _blocks(ROOT / page)), f"{page} has no python block containing {key!r} ({test})"


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # fenced code
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    return _LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_docs_relative_links_exist(page):
    broken = []
    for target in _links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor of the page itself
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or ROOT not in path.parents:
            broken.append(target)
    assert not broken, f"{_rel(page)}: links to missing files or outside the repository: {broken}"


def test_docs_link_checker_sees_links():
    assert _links("[a](docs/x.md) `[b](no.md)` ![c](img.png \"t\")") == ["docs/x.md", "img.png"]


def test_docs_benchmark_markers():
    # bench/update_docs.py copies bench/results/ between these markers.
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    assert text.count("<!-- bench:begin -->") == 1 and text.count("<!-- bench:end -->") == 1
    assert "<!-- bench:begin -->" not in (ROOT / "README.md").read_text()


def test_docs_flows_example(doc_block, tmp_path, monkeypatch, one_thread):
    # docs/models/flows.md, shortened: 20 steps instead of 10000, checkpoints in tmp_path.
    block = doc_block("docs/models/flows.md", "RealNVP(2, n_couplings=16")
    short = block.replace("steps=10000", "steps=20")
    assert short.count("steps=20") == 1
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(short, scope)  # noqa: S102 - our own documentation
    flow = scope["flow"]
    lp = flow.log_prob(scope["x"][:5])
    assert lp.shape == (5,) and torch.isfinite(lp).all()
    assert flow.sample(7, generator=torch.Generator().manual_seed(0)).shape == (7, 2)
    assert (tmp_path / "runs" / "8g").is_dir()
    assert scope["glow"].log_prob(torch.rand(3, 1, 8, 8)).shape == (3,)
    assert scope["cond"].log_prob(torch.randn(3, 64), context=torch.eye(10)[:3]).shape == (3,)
    assert scope["nsf"].log_prob(torch.randn(3, 2)).shape == (3,)
    maf = scope["maf"]
    assert maf.config["autoregressive"] and maf.sample(4).shape == (4, 2)
    assert sum(p.numel() for p in maf.parameters()) == 136_884  # the docs' "same parameter count"


@pytest.mark.parametrize("key, name", [("VAE(64, latent_dim=16", "vae"),
                                       ("HierarchicalVAE(64, latent_dims", "hvae")])
def test_docs_vae_examples(doc_block, one_thread, key, name):
    # docs/models/latent.md, shortened: 30 steps instead of 3000, K = 20 instead of 1000.
    block = doc_block("docs/models/latent.md", key)
    short = block.replace("steps=3000", "steps=30").replace("n_samples=1000", "n_samples=20")
    assert "steps=30" in short and "n_samples=20" in short
    scope: dict = {}
    torch.manual_seed(0)
    exec(short, scope)  # noqa: S102 - our own documentation
    ll = scope[name].log_likelihood(scope["x_test"][:10], n_samples=5)
    assert ll.shape == (10,) and torch.isfinite(ll).all()
    if name == "hvae":
        assert not scope[name].training and len(scope[name].active_units(scope["x_test"])) == 2


def test_docs_text2image_example(doc_block, one_thread):
    # docs/models/text2image.md, shortened: 10 steps instead of 100.
    block = doc_block("docs/models/text2image.md", "TextToImage()")
    short = block.replace("steps=100", "steps=10")
    assert "steps=10," in short
    scope: dict = {}
    exec(short, scope)  # noqa: S102 - our own documentation
    assert scope["images"].shape == (3, 1, 8, 8) and bool(((scope["images"] >= 0) & (scope["images"] <= 1)).all())
    assert scope["nll"].shape == (135,) and scope["per_code"].shape == (135, 16)
    assert bool((scope["per_code"] <= 0).all())


def test_docs_docstring_dialect():
    # tools/docs/griffe_gencore.py, the extension through which mkdocstrings reads the docstrings.
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_gencore", ROOT / "tools" / "docs" / "griffe_gencore.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    doc = "\n".join([
        "Sum of :func:`~gencore.ops.affine_coupling` and :meth:`VAE.elbo`.",
        "",
        "Args:",
        "    x, y (Tensor): the inputs,",
        "        of one shape.",
        "    z: alone.",
        "",
        "Raises:",
        "    ValueError: a long description",
        "    that goes on unindented.",
        "    TypeError: a dtype.",
        "",
        "Example::",
        "",
        "    >>> f(x)",
    ])
    assert ext.rewrite(doc).splitlines() == [
        "Sum of ``affine_coupling`` and ``VAE.elbo``.",
        "",
        "Args:",
        "    x (Tensor): the inputs,",
        "        of one shape.",
        "    y (Tensor): the inputs,",
        "        of one shape.",
        "    z: alone.",
        "",
        "Raises:",
        "    ValueError: a long description",
        "        that goes on unindented.",
        "    TypeError: a dtype.",
        "",
        "Example:",
        "",
        "    >>> f(x)",
    ]
