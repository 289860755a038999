"""``almost report RUN_DIR``: ``RUN_DIR/report.md`` with PNG plots, read from the files the stages wrote.

One section per stage (``run.sections``), in the stages' order, each from the stage's own output
files in its folder of the run directory (``stages.Stage.folder``: ``pg/``, ``rg/``, ``cs/``, ``rm/``,
``rm_eval/``, ``rmsp/``, ``sft/``, ``rl/``, ``eval/<kind>/<model>/``; files directly in RUN_DIR are
found too, as in the seed release's single output folder). A section whose files are missing says so;
the report never fails on a partial run. File names and summary keys come from the stages' records:
a summary is read through its stage's declaration, so the report cannot ask for a key that no stage
writes.
"""

from __future__ import annotations

from pathlib import Path

from .. import stages
from ..config import OneLineArgumentParser
from ..contracts import REPORT_FIGURES, REPORT_FILE
from ..errors import AlmostError
from ..writes import write_text_atomic
from .sections import section


def write_report(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise AlmostError(f"run directory not found: {run}")
    figures = run / REPORT_FIGURES
    parts = [
        f"# almost run report: `{run.resolve().name}`",
        "Built by `almost report` from the files the stages wrote; a section whose files are missing says so.",
    ]
    shown = []
    for stage in stages.pipeline_stages():
        write = section(stage)
        if write is not None and write not in shown:
            shown.append(write)
            parts.append(write(run, figures))
    return write_text_atomic(run / REPORT_FILE, "\n\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="almost report", description="Write RUN_DIR/report.md with PNG plots for a run directory.")
    parser.add_argument("run_dir", help="The run directory of `almost pipeline` or `almost demo`.")
    args = parser.parse_args(argv)
    path = write_report(args.run_dir)
    print(f"almost report: wrote {path}")
    return 0
