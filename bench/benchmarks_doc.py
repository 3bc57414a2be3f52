"""Writing one benchmark's section into docs/BENCHMARKS.md (shared by the bench scripts)."""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def write_section(heading: str, markdown: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section starting at ``heading`` (e.g. ``## Training``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    section = markdown.rstrip() + "\n\n"
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n", encoding="utf-8")


def publish(heading: str, lines: list[str], *, write: bool) -> str:
    """Print a benchmark's section (``lines`` start with ``heading``) and, with ``write``,
    put it into docs/BENCHMARKS.md; returns the Markdown."""
    markdown = "\n".join(lines)
    print(markdown)
    if write:
        write_section(heading, markdown)
        print(f"(wrote {BENCHMARKS})")
    return markdown
