"""``almost pipeline``: skip unchanged steps, rerun changed ones and what reads them, resume, --until/--from,
and config errors caught before any work starts."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from almost import stages
from almost.cli import main as cli
from almost.errors import AlmostError
from almost.run.checks import validate
from almost.run.fingerprints import step_fingerprint
from almost.run.pipeline import run_pipeline
from almost.run.plan import Planner, load_config, options, parse
from almost.stages import CS, RG

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["How do I keep basil alive indoors?", "What is a prime number?", "Give me a tip for learning to juggle.", "Why is the sky blue?"]


def rg_rows(config: str, lengths: list[int]) -> list[dict]:
    return [
        {
            "index": i,
            "prompt": p,
            "response": ("A helpful sentence. " * 20)[:n].rstrip() + ".",
            "bad": False,
            "bad_reasons": [],
            "config": config,
        }
        for i, (p, n) in enumerate(zip(PROMPTS, lengths))
    ]


@pytest.fixture
def rg_outputs(tmp_path: Path) -> Path:
    """Two RG configurations' outputs, as `almost rg` writes them."""
    folder = tmp_path / "rg-outputs"
    folder.mkdir()
    # With two answers the length filter drops the pair when the chosen one is shorter: whichever
    # configuration the rubric ranks first, two of the four prompts give a pair.
    for name, lengths in (("big-faithful-3shot", [160, 80, 170, 70]), ("small-basic-1shot", [90, 150, 100, 140])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rg_rows(name, lengths)))
    return folder


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(config: Path, out: Path, **options) -> tuple[int, dict[str, str]]:
    """Run the pipeline (``options``: run_pipeline's until, first, report); its exit status and each step's status."""
    result = run_pipeline(config, out, **options)
    return result.exit_code, {step.name: step.status for step in result.steps}


def test_skip_rerun_resume_until_from(tmp_path, rg_outputs, tiny_reward_model_path, capsys):
    out = tmp_path / "run"
    config = {
        "in_process": True,
        "cs": {"input_dir": str(rg_outputs), "rubric": ["big-faithful-3shot", "small-basic-1shot"]},
        "rm": {
            "train": {
                "model_name_or_path": tiny_reward_model_path,
                "max_steps": 1,
                "per_device_train_batch_size": 2,
                "eval_fraction": 0.0,
                "report_to": "none",
                "learning_rate": 1e-3,
            }
        },
    }
    path = write_config(tmp_path / "pipeline.yaml", config)

    # --until cs: only the comparisons.
    assert run(path, out, until="cs") == (0, {"cs": "ran"})
    assert (out / "cs" / "comparison.jsonl").exists() and not (out / "rm").exists()
    # The full run skips cs (unchanged) and trains the RM on its pairs.
    assert run(path, out) == (0, {"cs": "skipped", "rm/train": "ran"})
    assert json.loads((out / "rm" / ".almost-step.json").read_text())["status"] == "done"
    assert (out / "report.md").exists()
    # Nothing changed: nothing runs.
    weights = (out / "rm" / "model.safetensors").stat().st_mtime_ns
    assert run(path, out) == (0, {"cs": "skipped", "rm/train": "skipped"})
    assert (out / "rm" / "model.safetensors").stat().st_mtime_ns == weights

    # A changed RM setting reruns the RM only.
    config["rm"]["train"]["learning_rate"] = 5e-4
    write_config(path, config)
    assert run(path, out) == (0, {"cs": "skipped", "rm/train": "ran"})

    # A half-finished cs (killed: marker says running) is run again without clearing its folder; it
    # rewrites the same comparisons, so the RM, whose input did not change, is skipped.
    marker = out / "cs" / ".almost-step.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "status": "running"}))
    (out / "cs" / "kept-by-resume").write_text("x")
    assert run(path, out) == (0, {"cs": "ran", "rm/train": "skipped"})
    assert (out / "cs" / "kept-by-resume").exists()

    # A changed rubric reruns cs from an empty folder, then the RM because its pairs changed.
    config["cs"]["rubric"] = ["small-basic-1shot", "big-faithful-3shot"]
    write_config(path, config)
    assert run(path, out) == (0, {"cs": "ran", "rm/train": "ran"})
    assert not (out / "cs" / "kept-by-resume").exists()
    first = json.loads((out / "cs" / "comparison.jsonl").read_text().splitlines()[0])
    assert first["chosen_config"] == "small-basic-1shot"

    # --from cs reruns cs although unchanged; --until cs keeps the RM out of it.
    assert run(path, out, first="cs", until="cs") == (0, {"cs": "ran"})
    # --from rm in a fresh directory: cs never finished there.
    assert cli(["pipeline", str(path), "--output_dir", str(tmp_path / "fresh"), "--from", "rm"]) == 2
    assert "cs has not finished" in capsys.readouterr().err


def test_rg_configurations_are_steps_of_their_own(tmp_path, tiny_model_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[0] + "\n")
    out = tmp_path / "run"
    config = {
        "in_process": True,
        "rg": {
            "prompts_path": str(prompts),
            "model_name_or_path": tiny_model_path,
            "max_new_tokens": 2,
            "batch_size": 1,
            "backend": "hf",
            "configurations": [
                {"prompt_file_path": "faithful_prompt.txt", "n_shot": 0},
                {"prompt_file_path": "basic_prompt.txt", "n_shot": 0},
            ],
        },
    }
    path = write_config(tmp_path / "pipeline.yaml", config)
    name = Path(tiny_model_path).name.lower()
    faithful, basic = f"rg/{name}-faithful-0shot", f"rg/{name}-basic-0shot"
    assert run(path, out) == (0, {faithful: "ran", basic: "ran"})
    assert (out / "rg" / f"{name}-basic-0shot.jsonl").exists()
    # Changing one configuration reruns that configuration only.
    config["rg"]["configurations"][1]["temperature"] = 0.5
    write_config(path, config)
    assert run(path, out) == (0, {faithful: "skipped", basic: "ran"})


def test_steps_run_as_child_processes_and_failures_stop_the_run(tmp_path, rg_outputs):
    out = tmp_path / "run"
    config = {"cs": {"input_dir": str(rg_outputs), "rubric": ["big-faithful-3shot", "small-basic-1shot"]}}
    path = write_config(tmp_path / "pipeline.yaml", config)
    result = run_pipeline(path, out)
    assert result.ok and result.exit_code == 0 and result.report == out / "report.md" and result.report.exists()
    (cs,) = result.steps
    assert (cs.name, cs.status, cs.rc, cs.product) == ("cs", "ran", None, out / "cs" / CS.outputs.product_file)
    assert cs.seconds > 0 and cs.cpu_seconds is not None  # a child's CPU time counts once it has ended
    assert len(cs.product.read_text().splitlines()) == 2
    # A stage that fails (here: no outputs for a rubric name, which only cs itself can know) stops
    # the run with exit status 1, and its marker stays "running" so a rerun resumes it.
    config["cs"]["rubric"] = ["big-faithful-3shot", "missing-basic-1shot"]
    write_config(path, config)
    result = run_pipeline(path, out, report=False)
    assert (result.exit_code, result.failed.name, result.failed.status, result.failed.rc, result.report) == (1, "cs", "failed", 2, None)
    assert json.loads((out / "cs" / ".almost-step.json").read_text())["status"] == "running"


def test_evaluations_run_in_one_child_process_and_a_failure_stops_there(tmp_path, tiny_model_path, capfd):
    out = tmp_path / "run"
    bad_questions = tmp_path / "bad_tqa.jsonl"
    bad_questions.write_text(json.dumps({"question": "Is it?", "mc1_targets": {"choices": ["yes", "no"], "labels": [0, 0]}}) + "\n")
    config = {
        "eval": {
            "models": {"base": str(tiny_model_path), "other": str(tiny_model_path)},
            "hhh": {"data_path": "eval/hhh_sample.jsonl", "max_length": 256},
            "truthfulqa": {"data_path": "eval/truthfulqa_sample.jsonl"},
        }
    }
    path = write_config(tmp_path / "p.yaml", config)
    result = run_pipeline(path, out, report=False)
    names = ["eval/hhh/base", "eval/hhh/other", "eval/truthfulqa/base", "eval/truthfulqa/other"]
    assert result.ok and [(s.name, s.status) for s in result.steps] == [(n, "ran") for n in names]
    assert all(s.seconds > 0 and s.cpu_seconds is not None for s in result.steps)
    printed = capfd.readouterr().out
    assert f"almost pipeline: 4 steps in one process: {', '.join(names)}" in printed
    for name in names:  # each step's marker as a step of its own writes it, and its own metrics
        marker = json.loads((out / name / ".almost-step.json").read_text())
        assert marker["status"] == "done" and marker["command"].startswith("almost eval ")
        assert json.loads((out / name / "metrics.json").read_text())["model"] == str(tiny_model_path)
    # One evaluation that fails (a file only the stage reads rows of) stops the child there: the steps
    # before it finished, it failed with the stage's exit status, the ones after it did not run, and a
    # rerun skips what finished and resumes the rest.
    config["eval"]["truthfulqa"]["data_path"] = str(bad_questions)
    config["eval"]["hhh"]["max_length"] = 128
    write_config(path, config)
    result = run_pipeline(path, out, report=False)
    assert [(s.name, s.status, s.rc) for s in result.steps] == [
        ("eval/hhh/base", "ran", None),
        ("eval/hhh/other", "ran", None),
        ("eval/truthfulqa/base", "failed", 2),
    ]
    assert "labels must hold exactly one 1" in capfd.readouterr().err
    assert json.loads((out / "eval/truthfulqa/base/.almost-step.json").read_text())["status"] == "running"
    config["eval"]["truthfulqa"]["data_path"] = "eval/truthfulqa_sample.jsonl"
    write_config(path, config)
    result = run_pipeline(path, out, report=False)
    assert [(s.name, s.status) for s in result.steps] == [
        ("eval/hhh/base", "skipped"),
        ("eval/hhh/other", "skipped"),
        ("eval/truthfulqa/base", "ran"),
        ("eval/truthfulqa/other", "ran"),
    ]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"pq": {}}, "unknown stage 'pq'"),
        ({"rm": {"train": {"learnin_rate": 1e-5}}}, "rm/train: unknown key 'learnin_rate'"),
        ({"rm": {"train": {"model_name_or_path": "nobody/no-such-model"}}}, "not in the local hub cache"),
        ({"rm": {"train": {"learning_rate": "fast"}}}, "rm/train:"),
        ({"cs": {"rubric": ["a", "b"], "output_dir": "elsewhere"}}, "output_dir is chosen by the pipeline"),
        ({"pg": ["num_generation", 3]}, "pg must be a mapping"),
        ({"eval": {"models": {"base": "smollm2-135m"}, "mmlu": {}}}, "unknown evaluation 'mmlu'"),
        ("RUBRIC", "cs.rubric names 'tiny-hhh-1shot', which is not an rg configuration"),
    ],
)
def test_bad_configs_fail_before_any_work(tmp_path, request, capsys, config, message):
    if config == "RUBRIC":
        tiny_model_path = request.getfixturevalue("tiny_model_path")
        config = {
            "rg": {
                "model_name_or_path": tiny_model_path,
                "configurations": [{"n_shot": 1}, {"prompt_file_path": "basic_prompt.txt", "n_shot": 1}],
            },
            "cs": {"rubric": [f"{Path(tiny_model_path).name.lower()}-faithful-1shot", "tiny-hhh-1shot"]},
        }
    path = write_config(tmp_path / "bad.yaml", config)
    out = tmp_path / "run"
    assert cli(["pipeline", str(path), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not out.exists()


def test_rg_chat_format_plans_chat_configurations_and_the_rubric_uses_their_names(tmp_path, tiny_model_path, capsys):
    short = Path(tiny_model_path).name.lower()
    config = {
        "rg": {
            "model_name_or_path": tiny_model_path,
            "chat_format": True,
            "configurations": [
                {"prompt_file_path": "harmless_prompt.txt", "n_shot": 2},
                {"prompt_file_path": "basic_prompt.txt", "n_shot": 1},
            ],
        },
        "cs": {"rubric": [f"{short}-harmless-2shot-chat", f"{short}-basic-1shot-chat"]},
    }
    path = write_config(tmp_path / "chat.yaml", config)
    planner = Planner(load_config(path), tmp_path / "run", path)
    steps = planner.plan()
    assert [s.name for s in steps if s.stage is RG] == [f"rg/{short}-harmless-2shot-chat", f"rg/{short}-basic-1shot-chat"]
    assert all(s.flags["chat_format"] is True for s in steps if s.stage is RG)
    validate(steps, planner, check_models=False)
    # The transcript format's names are another run's configurations.
    config["cs"]["rubric"] = [f"{short}-harmless-2shot", f"{short}-basic-1shot"]
    out = tmp_path / "run"
    assert cli(["pipeline", str(write_config(path, config)), "--output_dir", str(out)]) == 2
    assert f"cs.rubric names '{short}-harmless-2shot', which is not an rg configuration" in capsys.readouterr().err
    assert not out.exists()


def test_every_stage_record_names_its_configs_its_run_function_and_inputs_that_are_its_options():
    """The CLI and the pipeline run a stage through its record: config dataclasses in its module, a
    run function there, and inputs that are options of the stage, made by stages whose outputs they name."""
    for stage in stages.STAGES:
        assert stage.config_types() and all(dataclasses.is_dataclass(t) for t in stage.config_types()), stage.name
        assert callable(getattr(importlib.import_module(stage.module), stage.run_name)), stage.name
        assert set(stage.inputs) <= options(stage), stage.name
        for source in stage.inputs.values():
            if source.stage is not None:
                assert source.stage.folder and (source.role is None or source.role in source.stage.outputs.files), stage.name
    # A value the command line refuses is refused in process too, by the same checks.
    with pytest.raises(AlmostError, match="--learning_rate must be above 0"):
        parse(stages.RM_TRAIN, {"learning_rate": 0, "output_dir": "unused"})


def test_unknown_stage_for_until(tmp_path, capsys):
    path = write_config(tmp_path / "p.yaml", {"cs": {"rubric": ["a", "b"]}})
    assert cli(["pipeline", str(path), "--output_dir", str(tmp_path / "r"), "--until", "rl"]) == 2
    assert "stage rl is not in" in capsys.readouterr().err


BUILT_IN = [REPO / "src" / "almost" / "run" / "configs" / name for name in ("demo.yaml", "proof.yaml")]


@pytest.mark.parametrize("example", sorted((REPO / "configs" / "examples").glob("*.yaml")) + BUILT_IN, ids=lambda p: p.name)
def test_shipped_configs_name_only_real_options(tmp_path, example):
    """Every key of every stage in the shipped configs is an option of that stage; the built-in
    configs' values all parse.

    The GPU examples name gated hub models and bf16, which this offline CPU machine cannot check."""
    config = load_config(example)
    planner = Planner(config, tmp_path / "run", example)
    steps = planner.plan()
    assert {s.stage.section for s in steps} == {k for k in config if k in stages.sections()}
    built_in = example in BUILT_IN
    validate(steps, planner, check_models=built_in, parse_values=built_in)


def test_demo_proof_dry_run_plans_every_step(tmp_path, capsys):
    out = tmp_path / "proof"
    assert cli(["demo", "--proof", "--dry_run", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    steps = {line.split()[0]: line for line in printed.splitlines() if re.match(r"^\S+\s+to run\s+almost ", line)}
    rubric = ["smollm2-135m-harmless-2shot", "smollm2-135m-faithful-2shot", "smollm2-135m-basic-1shot"]
    assert list(steps) == [
        "pg",
        *(f"rg/{n}" for n in rubric),
        "cs",
        "dpo",
        "rm/train",
        "rm/eval",
        "rmsp",
        "sft",
        "rl",
        *(
            f"eval/pairwise/{m}-vs-{b}-by-{j}"
            for m, b in (("dpo", "base"), ("sft", "base"), ("rl", "base"), ("dpo", "rl"))
            for j in ("rm", "lm")
        ),
    ]
    # DPO trains on the pairs the RM learns from, and is judged against RL as well as against base.
    assert f"--data_path {out / 'cs' / 'comparison.jsonl'}" in steps["dpo"]
    assert f"--model_name_or_path {out / 'dpo'} --baseline_model_name_or_path {out / 'rl'}" in steps["eval/pairwise/dpo-vs-rl-by-lm"]
    assert "seed_prompts_harmless.txt" in steps["pg"] and "--length_balance true" in steps["cs"]
    assert "--length_head true" in steps["rm/train"] and "--use_peft false" in steps["rm/train"]
    assert "--data_path hh-harmless-test" in steps["rm/eval"] and f"--model_name_or_path {out / 'rm'}" in steps["rm/eval"]
    assert (
        f"--judge rm:{out / 'rm'}" in steps["eval/pairwise/rl-vs-base-by-rm"]
        and "--judge llm:smollm2-135m" in steps["eval/pairwise/rl-vs-base-by-lm"]
    )
    assert not out.exists()


def test_pairwise_judges_each_get_a_step_and_bad_judges_fail_early(tmp_path, capsys):
    base = {"eval": {"models": {"base": "smollm2-135m", "sft": "smollm2-135m"}, "pairwise": {"data_path": "eval/questions.jsonl"}}}
    path = write_config(tmp_path / "p.yaml", base)
    steps = Planner(load_config(path), tmp_path / "run", path).plan()
    assert [s.name for s in steps] == ["eval/pairwise/sft-vs-base"] and "judge" not in steps[0].flags  # unchanged without judges
    # Every pairing reads and writes one answer cache: the baseline answers each question once.
    assert steps[0].flags["answers_dir"] == str(tmp_path / "run" / "eval" / "pairwise" / "answers")
    base["eval"]["pairwise"]["judges"] = {"a": "llm:smollm2-135m", "b": "openai:https://example.org/v1"}
    steps = Planner(load_config(path := write_config(path, base)), tmp_path / "run", path).plan()
    assert [(s.name, s.flags["judge"]) for s in steps] == [
        ("eval/pairwise/sft-vs-base-by-a", "llm:smollm2-135m"),
        ("eval/pairwise/sft-vs-base-by-b", "openai:https://example.org/v1"),
    ]
    # Both judges' steps share it too, left out of their fingerprints (it grows as they run).
    assert {s.flags["answers_dir"] for s in steps} == {str(tmp_path / "run" / "eval" / "pairwise" / "answers")}
    fingerprints = [step_fingerprint(s) for s in steps]
    (tmp_path / "run" / "eval" / "pairwise" / "answers").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "pairwise" / "answers" / "answers_x.jsonl").write_text("{}\n")
    assert [step_fingerprint(s) for s in steps] == fingerprints
    # A judge that reads only some models' pairings (an LM judge can cost more than the rest of a run).
    base["eval"]["models"]["rl"] = "smollm2-135m"
    base["eval"]["pairwise"]["judges"] = {"a": {"judge": "llm:smollm2-135m", "models": ["rl"]}, "b": "openai:https://example.org/v1"}
    steps = Planner(load_config(path := write_config(path, base)), tmp_path / "run", path).plan()
    assert [(s.name, s.flags["judge"]) for s in steps] == [
        ("eval/pairwise/sft-vs-base-by-b", "openai:https://example.org/v1"),
        ("eval/pairwise/rl-vs-base-by-a", "llm:smollm2-135m"),
        ("eval/pairwise/rl-vs-base-by-b", "openai:https://example.org/v1"),
    ]
    for judges, message in (
        ({"x": "rm"}, "no rm stage"),
        ({"../x": "llm:m"}, "must be a plain name"),
        (["rm"], "must map labels"),
        ({"x": {"judge": "llm:m", "models": ["dpo"]}}, "models must list evaluated models (base, sft, rl)"),
        ({"x": {"judge": "llm:m"}}, "must be a judge, or {judge: SPEC, models: [label, ...]}"),
    ):
        base["eval"]["pairwise"]["judges"] = judges
        assert cli(["pipeline", str(write_config(path, base)), "--output_dir", str(tmp_path / "run")]) == 2
        assert message in capsys.readouterr().err


def test_rg_configurations_of_one_model_run_in_one_call(tmp_path, tiny_model_path, capsys):
    """One model load (one vLLM engine start) for every configuration that differs only in its
    demonstration file and shots; each configuration keeps its own step, marker and output."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[0] + "\n")
    configurations = [
        {"prompt_file_path": "faithful_prompt.txt", "n_shot": 1},
        {"prompt_file_path": "faithful_prompt.txt", "n_shot": 0},
        {"prompt_file_path": "basic_prompt.txt", "n_shot": 0},
    ]
    config = {
        "in_process": True,
        "rg": {
            "prompts_path": str(prompts),
            "model_name_or_path": tiny_model_path,
            "max_new_tokens": 2,
            "backend": "hf",
            "configurations": configurations,
        },
    }
    path = write_config(tmp_path / "pipeline.yaml", config)
    out = tmp_path / "run"
    assert cli(["pipeline", str(path), "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    calls = [line for line in printed.splitlines() if re.search(r": almost rg ", line)]
    name = Path(tiny_model_path).name.lower()
    names = [f"{name}-faithful-1shot", f"{name}-faithful-0shot", f"{name}-basic-0shot"]
    assert len(calls) == 1 and all(n in calls[0] for n in names) and "--select" in calls[0]
    for n in names:  # not the whole product: no basic-1shot
        assert json.loads((out / "rg" / f".almost-step-{n}.json").read_text())["status"] == "done"
        assert (out / "rg" / f"{n}.jsonl").exists()
    assert not (out / "rg" / f"{name}-basic-1shot.jsonl").exists()
    # Run alone, a configuration writes the same file as in the shared call.
    alone = tmp_path / "alone"
    config["rg"]["configurations"] = configurations[2:]
    assert cli(["pipeline", str(write_config(tmp_path / "alone.yaml", config)), "--output_dir", str(alone)]) == 0
    assert (alone / "rg" / f"{names[2]}.jsonl").read_text() == (out / "rg" / f"{names[2]}.jsonl").read_text()
