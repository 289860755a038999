"""The report's building blocks: Markdown tables, PNG figures (written next to report.md), and bars of
accuracies and win rates drawn with their 95% intervals."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contracts import REPORT_FIGURES

# Below this many items a plot says so: a 95% interval on so few spans much of [0, 1].
SMALL_SAMPLE = 30


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


def interval(ci: Any) -> str | None:
    """A 95% interval as the tables print it, ``[low, high]``; None when there is none."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    return None


@dataclass(frozen=True)
class Bar:
    """One bar of a plot of accuracies or win rates: its value, its 95% interval as the metrics hold it
    (``ci95``: Wilson, normal or bootstrap, as ``stats`` computed it) and its n."""

    name: str  # what the small-sample note calls it ("hhh", "chosen longer")
    value: Any
    ci95: Any = None
    n: Any = None


def error_bars(bars: Sequence[Bar]) -> tuple[list[float], list[list[float]]]:
    """Heights (0 for a bar without a value) and matplotlib's ``yerr`` ([below], [above] each value) of
    the bars' intervals; a bar without an interval gets none. A percentile bootstrap interval may leave
    out the value itself: the error bar then starts at the value."""
    heights, below, above = [], [], []
    for bar in bars:
        value = bar.value if isinstance(bar.value, (int, float)) else None
        low_high = bar.ci95 if interval(bar.ci95) is not None and value is not None else (value, value)
        heights.append(value or 0.0)
        below.append(max(0.0, value - low_high[0]) if value is not None else 0.0)
        above.append(max(0.0, low_high[1] - value) if value is not None else 0.0)
    return heights, [below, above]


def small_sample_note(bars: Sequence[Bar]) -> str | None:
    """``n < 30: hhh n=16, pairwise n=4 ...`` for the bars measured on fewer than SMALL_SAMPLE items (a bar
    without a value measured nothing); None when none is."""
    measured = [bar for bar in bars if isinstance(bar.value, (int, float)) and isinstance(bar.n, int)]
    small = dict.fromkeys(f"{bar.name} n={bar.n}" for bar in measured if bar.n < SMALL_SAMPLE)
    if not small:
        return None
    return f"n < {SMALL_SAMPLE}: {', '.join(small)}; intervals on so few items are wide"


def draw_bars(ax, xs: Sequence[float], bars: Sequence[Bar], width: float, label: str | None = None) -> None:
    """Bars with their 95% intervals as error bars."""
    heights, yerr = error_bars(bars)
    ax.bar(xs, heights, width=width, label=label, yerr=yerr, capsize=3, error_kw={"elinewidth": 1})


def note_small_samples(ax, bars: Sequence[Bar]) -> None:
    """Write ``small_sample_note`` under the plot, when there is one: as the x axis's label, which
    matplotlib places below the tick labels however many lines they take."""
    note = small_sample_note(bars)
    if note:
        ax.set_xlabel(textwrap.fill(note, 120), fontsize=7, color="dimgrey", loc="left")
