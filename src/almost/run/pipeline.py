"""``almost pipeline CONFIG.yaml --output_dir RUN``: every stage of the method from one YAML file.

The config names the stages to run (pg, rg, cs, rm, rmsp, sft, rl, eval) and, for each, the flags
its command takes (``key: value`` → ``--key value``). The pipeline fills in the paths between the
stages (the RM trains on CS's comparisons, SFT on RMSP's demonstrations, RL starts from the SFT
model ...), gives every step its own folder under the run directory, and runs the steps in order.

A step records a marker (``.almost-step*.json``) in its folder holding a fingerprint of its command
line and of the input files it reads (by content; models by their config, tokenizer and weights;
``cache_dir`` and other ``NOT_RESULT_FLAGS`` left out). A step whose marker says "done" with the same fingerprint is
skipped; a step that started but did not finish is run again with the same flags and resumes by
itself (every stage is resumable); a step whose fingerprint changed starts again from an empty
folder, and so do the later steps that read its outputs, because their inputs changed.

Each step runs in a child process (``python -m almost ...``, or the stage's ``launcher`` such as
``accelerate launch``): vLLM must start under ``__main__`` and spawns workers, a training stage's
memory is returned to the system when it ends, and a crash in one stage cannot corrupt the
pipeline's records. ``in_process: true`` runs the steps inside this process instead, each by its
stage's run function with the configs parsed from its settings (``almost.stages``; faster to start,
used by the tests; not with the vllm backend or a launcher).

The whole config is checked before any step runs: stage names, every key of every stage (against
the fields of the stage's config dataclasses), every step's values (parsed into those dataclasses,
through the checks of the stage's command line), models, and the rubric.

``run_pipeline`` returns a ``PipelineResult`` (each step's status, times and product); the work is
split by job: ``plan`` (the config → steps), ``checks`` (before any work), ``fingerprints`` (markers:
done, changed or unfinished), ``execute`` (running the steps) and ``summary`` (what is printed).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from .. import stages
from ..config import OneLineArgumentParser
from ..errors import AlmostError
from ..locks import lock_output_dir
from .checks import validate
from .execute import PipelineResult, StepResult, execute
from .fingerprints import is_done, read_marker, step_fingerprint
from .plan import Planner, load_config
from .report import write_report
from .summary import print_plan, print_summary


def build_parser():
    p = OneLineArgumentParser(
        prog="almost pipeline", description="Run every stage of the method from one YAML config; finished, unchanged steps are skipped."
    )
    p.add_argument("config", help="The pipeline YAML (see docs/pipeline.md).")
    p.add_argument("--output_dir", "--output-dir", help="Run directory (default: output_dir in the config).")
    p.add_argument("--until", choices=stages.sections(), help="Stop after this stage.")
    p.add_argument(
        "--from", dest="first", choices=stages.sections(), help="Start again from this stage (earlier stages must have finished)."
    )
    p.add_argument("--dry_run", "--dry-run", action="store_true", help="Check the config and print the steps without running them.")
    p.add_argument("--no_report", "--no-report", action="store_true", help="Do not write report.md at the end.")
    return p


def run_pipeline(
    config_path: str | os.PathLike,
    output_dir: str | None = None,
    until: str | None = None,
    first: str | None = None,
    dry_run: bool = False,
    report: bool = True,
) -> PipelineResult:
    """Plan and check every step of the config, then run them (``--dry_run``: only say which would run).

    A config that cannot run raises ``AlmostError`` before any work; a step that fails stops the run
    and is the result's ``failed`` step.
    """
    config = load_config(config_path)
    run_dir = Path(output_dir or config.get("output_dir") or "")
    if not str(run_dir) or str(run_dir) == ".":
        raise AlmostError("no run directory: pass --output_dir RUN or set output_dir in the config")
    order = stages.sections()
    if until and first and order.index(first) > order.index(until):
        raise AlmostError(f"--from {first} comes after --until {until}")
    for stage in (until, first):
        if stage and stage not in config:
            raise AlmostError(f"stage {stage} is not in {config_path}")
    planner = Planner(config, run_dir.resolve(), Path(config_path))
    steps = planner.plan()
    if not steps:
        raise AlmostError(f"{config_path} names no stages")
    validate(steps, planner)
    if until:
        steps = [s for s in steps if order.index(s.stage.section) <= order.index(until)]
    if dry_run:
        planned = []
        for step in steps:
            marker = read_marker(step)
            planned.append((step, "done" if is_done(step, marker) and marker.get("fingerprint") == step_fingerprint(step) else "to run"))
        print_plan(planned)
        return PipelineResult(run_dir, tuple(StepResult.of(step, state) for step, state in planned))
    # One pipeline per run directory; a second one says who holds it and stops.
    lock_output_dir(run_dir, "almost pipeline " + shlex.join([str(config_path), "--output_dir", str(run_dir)]))
    outcomes = execute(steps, first, bool(config.get("in_process")))
    result = PipelineResult(run_dir, tuple(outcomes), write_report(run_dir) if report else None)
    print_summary(result)
    if result.failed:
        sys.stderr.write(f"almost pipeline: {result.failed.name} failed; fix the cause and rerun the same command to resume\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_pipeline(args.config, args.output_dir, args.until, args.first, args.dry_run, not args.no_report).exit_code
