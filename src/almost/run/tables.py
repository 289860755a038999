"""The report's building blocks: Markdown tables and PNG figures (written next to report.md)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..contracts import REPORT_FIGURES


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot drawing to files only (no display on CI or a GPU node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def figure(fig, path: Path) -> str:
    """Write the figure and return the Markdown that shows it (paths relative to report.md)."""
    save_figure(fig, path)
    return f"![{path.stem}]({REPORT_FIGURES}/{path.name})"
