"""Keep ``benchmarks/results.md`` as named sections that each benchmark script rewrites."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# PrivRec benchmark results\n\nEach section is written by the script it names; rerun it to refresh.\n"


def replace_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of a markdown file, keeping the others."""
    text = path.read_text() if path.exists() else HEADER
    block = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text.rstrip("\n") + "\n")


def mean_std(values: list[float]) -> str:
    """'mean ± standard deviation' to 4 decimals (the value alone for one run)."""
    import statistics

    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
