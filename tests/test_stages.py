"""A stage is added in one place: a ``Stage`` record (here a toy one, with its config and run function
in this module) is all the CLI, the pipeline's planner and checks, the steps' fingerprints and the
report need to pick it up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from almost import stages
from almost.cli import main as cli
from almost.contracts import StageOutputs, keys, write_summary
from almost.readers import read_prompts
from almost.run.checks import validate
from almost.run.fingerprints import step_fingerprint
from almost.run.pipeline import run_pipeline
from almost.run.plan import Planner, load_config
from almost.run.report import write_report
from almost.stages import PG, Input, Stage


@dataclass
class ToyArguments:
    """Settings of ``almost toy``."""

    output_dir: str | None = field(default=None, metadata={"help": "Where toy.json goes."})
    prompts_path: str | None = field(default=None, metadata={"help": "The prompts to count."})


def run_toy(config: ToyArguments) -> dict:
    prompts = read_prompts(config.prompts_path)
    summary = {"prompts": len(prompts), "longest": max(map(len, prompts))}
    write_summary(TOY.outputs, config.output_dir, summary)
    return summary


TOY = Stage(
    ("toy",),
    "Count the prompts (a stage the tests add).",
    __name__,
    ("ToyArguments",),
    "run_toy",
    StageOutputs({"counts": "toy.json"}, product="counts", summary="counts", summary_keys=keys("prompts", "longest")),
    {"prompts_path": Input(PG, "prompts")},
    folder="toy",
)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES, TOY))
    return TOY


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("Why is the sky blue?\nHow do I keep basil alive indoors?\n")
    return path


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_cli_runs_a_new_stage_from_its_record(toy, prompts, tmp_path, capsys):
    assert cli(["--help"]) == 0
    assert f"toy       {toy.help}" in capsys.readouterr().out
    assert cli(["toy", "--prompts_path", str(prompts), "--output_dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "toy.json").read_text().count('"prompts": 2') == 1
    assert cli(["toy", "--output_dir", str(tmp_path / "out"), "--no_such_option", "1"]) == 2


def test_the_planner_wires_a_new_stage_to_the_stage_that_makes_its_input(toy, tmp_path):
    path = write_config(tmp_path / "p.yaml", {"pg": {"num_generation": 2}, "toy": {}})
    planner = Planner(load_config(path), tmp_path / "run", path)
    steps = planner.plan()
    assert [(s.name, s.stage) for s in steps] == [("pg", PG), ("toy", toy)]
    assert steps[1].flags["prompts_path"] == str(tmp_path / "run" / "pg" / "prompts.txt")
    assert steps[1].product == tmp_path / "run" / "toy" / "toy.json"
    validate(steps, planner, check_models=False)


def test_a_pipeline_runs_fingerprints_and_reports_a_new_stage(toy, prompts, tmp_path):
    out = tmp_path / "run"
    path = write_config(tmp_path / "p.yaml", {"in_process": True, "toy": {"prompts_path": str(prompts)}})
    result = run_pipeline(path, out)
    assert [(s.name, s.status) for s in result.steps] == [("toy", "ran")]
    # Its input is fingerprinted by content: the same run skips it, another prompt file reruns it.
    assert [s.status for s in run_pipeline(path, out).steps] == ["skipped"]
    (step,) = Planner(load_config(path), out.resolve(), path).plan()
    before = step_fingerprint(step)
    longer = "Which one prompt is longer than the two before it were?"
    prompts.write_text(longer + "\n")
    assert step_fingerprint(step) != before
    assert [s.status for s in run_pipeline(path, out).steps] == ["ran"]
    # The report has a section for it, from the summary it declares.
    text = write_report(out).read_text()
    assert "## toy" in text and "| prompts | 1 |" in text and f"| longest | {len(longer)} |" in text
