"""Running a pipeline's steps in order: skip, resume or restart each by its marker, run it in this
process or as a child process, and record what happened (``StepResult``).

In process, a step's settings are parsed into its stage's configs and its run function is called
(``stages.Stage.run``); otherwise ``python -m almost <command> ...`` (or the step's launcher) runs it, so
that vLLM starts under ``__main__``, a training stage's memory goes back to the system when it ends and
a crash cannot corrupt the pipeline's records. Consecutive steps of stages that share a process
(``Stage.shares_process``: the evaluations) run in one child, ``python -m almost.run.execute STEPS``,
which runs each of them in process and writes its marker as the pipeline would.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import stages
from ..config import settings_to_argv
from ..errors import AlmostError
from ..locks import held_output_dirs, lock_output_dir, release_output_dirs
from ..redaction import redact_argv
from ..stages import Stage
from ..writes import write_json_atomic
from .fingerprints import clear_outputs, is_done, read_marker, step_fingerprint
from .plan import Step, parse


@dataclass(frozen=True)
class StepResult:
    """What became of one step: ran, skipped (finished earlier), failed, or (``--dry_run``) done / to run."""

    name: str
    stage: Stage
    status: str
    product: Path  # the file or folder the step made
    seconds: float = 0.0  # wall time; for a skipped step, that of the run that made its product
    cpu_seconds: float | None = None
    rc: int | None = None  # the exit status of a failed step

    @classmethod
    def of(cls, step: Step, status: str, **figures) -> StepResult:
        return cls(step.name, step.stage, status, step.product, **figures)


@dataclass(frozen=True)
class PipelineResult:
    """What ``run_pipeline`` did: each step's result in order (up to the first failure), and the report."""

    run_dir: Path
    steps: tuple[StepResult, ...]
    report: Path | None = None  # report.md, when one was written

    @property
    def failed(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def run_step(step: Step, in_process: bool) -> int:
    """Run one step (or a combined rg call) and return its exit status."""
    if in_process:
        return run_in_process(step)
    prefix = [*step.launcher, "-m", "almost"] if step.launcher else [sys.executable, "-m", "almost"]
    sys.stdout.flush()
    parent = os.getpid()
    return subprocess.run([*prefix, step.command[0], *step.argv], preexec_fn=lambda: die_with_parent(parent)).returncode


def run_in_process(step: Step) -> int:
    """The step's stage run inside this process, as its own process would: its settings parsed into its
    configs, its folder locked while it runs, errors one line on stderr with exit status 2."""
    from ..cli import exit_on_input_error

    stage = step.stage
    locked = held_output_dirs()
    try:
        configs = parse(stage, step.flags)
        lock_output_dir(step.output_dir, " ".join([stage.prog, *redact_argv(settings_to_argv(step.flags))]))
        stage.run(*configs)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except Exception as e:
        return exit_on_input_error(f"almost {step.command[0]}", e)
    finally:
        release_output_dirs(keep=locked)  # the step's own folder, as its own process would


def die_with_parent(parent: int) -> None:
    """In the child, before it starts: ask Linux to send it SIGTERM when the pipeline dies, however
    it dies (kill -9 included), so that no stage runs on orphaned. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the pipeline died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children: unlike wall time, it does not
    grow when other jobs share the machine, so it tells how long a step takes on an idle one."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def shares_process(step: Step) -> bool:
    return step.stage.shares_process and not step.launcher


def joins(group: list[tuple[Step, str]], step: Step, in_process: bool) -> bool:
    """Whether ``step`` runs with the waiting ``group``: in its call (``runs_with``), or, run as child
    processes, in its process (both of stages that share one)."""
    first = group[0][0]
    if first.stage.shared_call:
        return runs_with(first, step)
    return not in_process and shares_process(first) and shares_process(step)


def runs_with(first: Step, step: Step) -> bool:
    """Whether ``step`` can join ``first``'s call: steps of a stage that shares calls (``Stage.shared_call``:
    rg configurations of one model and the same settings) load the model, or start the vLLM engine,
    once for all of them."""

    def rest(s: Step) -> dict:
        return {k: v for k, v in s.flags.items() if k not in s.stage.shared_call}

    return first.stage is step.stage and bool(step.stage.shared_call) and first.launcher == step.launcher and rest(first) == rest(step)


def combined_step(group: list[Step]) -> Step:
    """One call for several steps: the values of the shared-call options they use (rg: demonstration
    files and shot counts), and --select so that only their configurations are made (not the whole
    product)."""
    if len(group) == 1:
        return group[0]
    flags = dict(group[0].flags)
    for key in group[0].stage.shared_call:
        flags[key] = list(dict.fromkeys(v for s in group for v in _as_list(s.flags.get(key))))
    flags["select"] = [s.label for s in group]
    return replace(group[0], name=" + ".join(s.name for s in group), flags=flags)


def execute(steps: list[Step], first: str | None, in_process: bool) -> list[StepResult]:
    """Run the steps in order until one fails; ``first``: the section from which steps run even if unchanged (``--from``)."""
    outcomes: list[StepResult] = []
    forced = False
    waiting: list[tuple[Step, str]] = []  # steps to run in one call once the next step cannot join them
    for step in steps:
        if waiting and not joins(waiting, step, in_process):
            if not run_group(waiting, in_process, outcomes):
                return outcomes
            waiting = []
        forced = forced or (first is not None and step.stage.section == first)
        if first is not None and not forced:
            if not is_done(step):
                raise AlmostError(f"{step.name} has not finished in this run directory; run without --from {first} first")
            outcomes.append(StepResult.of(step, "skipped", seconds=read_marker(step).get("seconds", 0.0)))
            continue
        fp = step_fingerprint(step)
        marker = read_marker(step)
        if not forced and marker.get("fingerprint") == fp and is_done(step, marker):
            print(f"almost pipeline: {step.name}: unchanged, skipped", flush=True)
            outcomes.append(StepResult.of(step, "skipped", seconds=marker.get("seconds", 0.0), cpu_seconds=marker.get("cpu_seconds")))
            continue
        if marker and (forced or marker.get("fingerprint") != fp):
            print(f"almost pipeline: {step.name}: settings or inputs changed, starting it again", flush=True)
            clear_outputs(step)
        elif marker:
            print(f"almost pipeline: {step.name}: unfinished, resuming", flush=True)
        waiting.append((step, fp))
        if not step.stage.shared_call and not (shares_process(step) and not in_process):
            if not run_group(waiting, in_process, outcomes):
                return outcomes
            waiting = []
    if waiting:
        run_group(waiting, in_process, outcomes)
    return outcomes


def run_group(group: list[tuple[Step, str]], in_process: bool, outcomes: list[StepResult]) -> bool:
    """Run steps that ``joins`` put together: in one call, or one after another in one process."""
    if len(group) > 1 and not group[0][0].stage.shared_call:
        return run_in_one_process(group, outcomes)
    return run_together(group, in_process, outcomes)


def run_in_one_process(group: list[tuple[Step, str]], outcomes: list[StepResult]) -> bool:
    """Steps of stages that share a process, one after another in one child (``main`` below), each
    with its marker written there as ``run_together`` writes it; the outcomes read back from the
    markers. The child stops at the first step that fails; a crash leaves that step's marker
    "running", so the next run resumes it. False if any step failed."""
    print(f"almost pipeline: {len(group)} steps in one process: {', '.join(step.name for step, _ in group)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="almost-steps-") as folder:
        steps_file = Path(folder) / "steps.json"
        steps_file.write_text(json.dumps([step_record(step, fp) for step, fp in group]))
        parent = os.getpid()
        rc = subprocess.run(
            [sys.executable, "-m", "almost.run.execute", str(steps_file)], preexec_fn=lambda: die_with_parent(parent)
        ).returncode
    for step, fp in group:
        marker = read_marker(step)
        if marker.get("fingerprint") != fp or not is_done(step, marker):
            outcomes.append(StepResult.of(step, "failed", seconds=marker.get("seconds", 0.0), rc=rc or 1))
            return False
        outcomes.append(StepResult.of(step, "ran", seconds=marker["seconds"], cpu_seconds=marker.get("cpu_seconds")))
    return True


def step_record(step: Step, fingerprint: str) -> dict:
    """A step as JSON, for the child process of ``run_in_one_process``."""
    return {
        "stage": step.stage.name,
        "name": step.name,
        "flags": step.flags,
        "user_keys": list(step.user_keys),
        "output_dir": str(step.output_dir),
        "product": str(step.product),
        "owned": [str(p) for p in step.owned],
        "label": step.label,
        "fingerprint": fingerprint,
    }


def step_from_record(record: dict) -> tuple[Step, str]:
    step = Step(
        stages.named(record["stage"]),
        record["name"],
        record["flags"],
        tuple(record["user_keys"]),
        Path(record["output_dir"]),
        Path(record["product"]),
        tuple(Path(p) for p in record["owned"]),
        label=record["label"],
    )
    return step, record["fingerprint"]


def main(argv: list[str] | None = None) -> int:
    """``python -m almost.run.execute STEPS.json``: run the steps ``run_in_one_process`` wrote, in this
    process, until one fails; its exit status is the failed step's."""
    (steps_file,) = sys.argv[1:] if argv is None else argv
    outcomes: list[StepResult] = []
    for record in json.loads(Path(steps_file).read_text()):
        if not run_together([step_from_record(record)], True, outcomes):
            return outcomes[-1].rc or 1
    return 0


def run_together(group: list[tuple[Step, str]], in_process: bool, outcomes: list[StepResult]) -> bool:
    """Run one step, or several that share a call; record each step's marker and outcome. The time
    of a shared call is split evenly between its steps. False if any step failed."""
    call = combined_step([s for s, _ in group])
    print(f"almost pipeline: {call.name}: {call.command_line()}", flush=True)
    for step, fp in group:
        step.output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(step.marker, {"status": "running", "fingerprint": fp, "command": call.command_line()})
    start, cpu_start = time.time(), cpu_seconds()
    rc = run_step(call, in_process)
    seconds, cpu = round((time.time() - start) / len(group), 1), round((cpu_seconds() - cpu_start) / len(group), 1)
    ok = True
    for step, fp in group:
        if rc != 0 or not step.product.exists():
            outcomes.append(StepResult.of(step, "failed", seconds=seconds, rc=rc))
            ok = False
            continue
        record = {"status": "done", "fingerprint": fp, "command": call.command_line(), "seconds": seconds, "cpu_seconds": cpu}
        write_json_atomic(step.marker, record)
        outcomes.append(StepResult.of(step, "ran", seconds=seconds, cpu_seconds=cpu))
    return ok


if __name__ == "__main__":
    sys.exit(main())
