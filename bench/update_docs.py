#!/usr/bin/env python
"""Copies the Markdown tables of bench/results/ into docs/benchmarks.md between the markers

    <!-- bench:begin -->  ...  <!-- bench:end -->

(`make bench` runs it last). The README quotes a few of these numbers by hand.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def main() -> int:
    parts = []
    for md in sorted((ROOT / "bench" / "results").glob("*.md")):
        parts.append(f"**{md.stem}** (`bench/results/{md.name}`)\n\n{md.read_text().strip()}\n")
    name = PAGE.relative_to(ROOT)
    text = PAGE.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{name} lacks the markers {BEGIN} / {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = "\n".join(parts) if parts else "_no results yet: run `make bench`_\n"
    PAGE.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")
    print(f"{name}: {len(parts)} benchmark table(s) from bench/results/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
