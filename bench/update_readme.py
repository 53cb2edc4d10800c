#!/usr/bin/env python
"""Copies the Markdown tables of bench/results/ into README.md between the markers

    <!-- bench:begin -->  ...  <!-- bench:end -->
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def main() -> int:
    parts = []
    for md in sorted((ROOT / "bench" / "results").glob("*.md")):
        parts.append(f"**{md.stem}** (`bench/results/{md.name}`)\n\n{md.read_text().strip()}\n")
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md lacks the markers {BEGIN} / {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = "\n".join(parts) if parts else "_no results yet: run `make bench`_\n"
    readme.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")
    print(f"README.md: {len(parts)} benchmark table(s) from bench/results/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
