"""The launch rewriter of build.py: the only change the emulator makes to a .cu file."""

from pathlib import Path

import pytest

from simt_testing import simt_build

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cu", sorted((ROOT / "csrc").rglob("*.cu")), ids=lambda p: p.name)
def test_rewrite_keeps_every_line_and_removes_every_launch(cu):
    text = cu.read_text()
    out, count = simt_build.rewrite_launches(text, cu.name)
    assert count == text.count("<<<") > 0
    assert "<<<" not in out and ">>>" not in out
    assert out.count("\n") == text.count("\n")  # diagnostics keep the original line numbers
    assert out.count("::simt::launch(") == count


def test_rewrite_of_a_templated_launch():
    src = "void f() {\n  k<T, V<2>>\n      <<<grid(n), 256, 0, stream>>>(a,\n b);\n}\n"
    out, n = simt_build.rewrite_launches(src, "x.cu")
    assert n == 1
    assert ('::simt::launch(::simt::LaunchSite{"x.cu", 3, "k<T, V<2>>", static_cast<int>(0), '
            'static_cast<int>(0)}, k<T, V<2>>, grid(n), 256, 0, stream)') in out
    assert out.count("\n") == src.count("\n")


def test_launch_bounds_reach_the_launch_site():
    src = "__global__ void __launch_bounds__(kThreads, 2) g(int x) {}\nvoid f() { g<<<1, 64>>>(3); }\n"
    out, _ = simt_build.rewrite_launches(src, "x.cu")
    assert "static_cast<int>(kThreads), static_cast<int>(2)}" in out


def test_a_launch_it_cannot_rewrite_fails_the_build():
    with pytest.raises(simt_build.RewriteError, match="rewrote 1 launches, the file has 2"):
        simt_build.rewrite_launches("// see k<<<\nvoid f() { k<<<1, 32>>>(); }\n", "x.cu")
