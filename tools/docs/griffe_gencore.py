"""Griffe extension for gencore's docstring dialect (used by ``make docs``, mkdocs.yml).

gencore's docstrings are Google style ("Args:", "Returns:", "Raises:") with reStructuredText
inline markup. Before griffe parses a docstring, this extension rewrites the few constructs
that griffe's Google parser or Markdown would otherwise render wrongly; it changes how a
docstring is shown, never what it says, and it hides no warning:

* ``a, b, c: description`` in an Args section (parameters that share one description)
  becomes one entry per parameter, each with that description, so that every name is
  checked against the signature like any other entry;
* an RST role (``:func:`fit```, ``:class:`~gencore.models.VAE```) becomes inline code
  (```fit```, ```VAE```);
* a paragraph ending in ``::`` (an RST literal block follows) ends in ``:``; the indented
  block after it stays a code block (or, after ``Example::``, griffe's Examples section);
* in a Raises section, a line at the items' indentation that does not start with an
  exception name and a colon continues the previous item (RST-style docstrings often do
  not indent the continuation of a long description).
"""

from __future__ import annotations

import re

try:
    import griffe
except ImportError:  # tests/docs/test_docs.py checks rewrite() without the docs' packages
    griffe = None

_SECTION = re.compile(r"^(?P<indent>\s*)(?P<name>Args|Arguments|Parameters|Keyword Args|Raises):\s*$")
_GROUPED = re.compile(r"^(?P<names>[\w*]+(?:\s*,\s*[\w*]+)+)\s*(?P<type>\([^)]*\))?\s*:(?P<rest>.*)$")
_EXCEPTION_ITEM = re.compile(r"^[A-Za-z_][\w.]*(\s*\([^)]*\))?\s*:")
_ROLE = re.compile(r":(?:func|meth|class|attr|mod|data|obj|exc):`~?([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _roles(line: str) -> str:
    # ``:func:`~a.b.c``` shows ``c``; ``:func:`a.b``` shows ``a.b`` (as Sphinx does).
    def repl(m: re.Match) -> str:
        target = m.group(1)
        short = m.group(0).split("`", 1)[1].startswith("~")
        return f"``{target.rsplit('.', 1)[-1] if short else target}``"

    return _ROLE.sub(repl, line)


def rewrite(text: str) -> str:
    """The docstring ``text`` (as cleaned by ``inspect.cleandoc``) in griffe's dialect."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = _roles(lines[i])
        m = _SECTION.match(line)
        if not m:
            if line.rstrip().endswith("::") and not line.strip().startswith(">>>"):
                line = line.rstrip()[:-1]
            out.append(line)
            i += 1
            continue
        out.append(line)
        header, name = _indent(line), m.group("name")
        i += 1
        # The section's lines: up to the first non-empty line indented no deeper than the header.
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > header):
            body.append(_roles(lines[i]))
            i += 1
        item_indent = min((_indent(b) for b in body if b.strip()), default=header + 4)
        # Group the body into items: an item line at item_indent and its continuation lines.
        items: list[list[str]] = []
        for b in body:
            starts = b.strip() and _indent(b) == item_indent
            if starts and name == "Raises" and items and not _EXCEPTION_ITEM.match(b.strip()):
                b = " " * (2 * item_indent) + b.strip()  # a continuation, left unindented
                starts = False
            if starts or not items:
                items.append([b])
            else:
                items[-1].append(b)
        for item in items:
            g = _GROUPED.match(item[0].strip()) if name != "Raises" else None
            if not g:
                out.extend(item)
                continue
            for param in re.split(r"\s*,\s*", g.group("names")):
                out.append(" " * item_indent + f"{param}{' ' + g.group('type') if g.group('type') else ''}:"
                           f"{g.group('rest')}")
                out.extend(item[1:])
    return "\n".join(out)


if griffe is not None:

    class GencoreDocstrings(griffe.Extension):
        """Rewrites every docstring with :func:`rewrite` when griffe loads it."""

        def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj.docstring.value)
