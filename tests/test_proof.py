"""``almost demo --proof``: the table it prints at the end comes from the metrics a real (tiny) run's
stages wrote, read through the keys those stages write."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import build_tiny_model

from almost.cli import main as cli
from almost.readers import read_jsonl
from almost.run import demo
from almost.run.plan import Planner, load_config
from almost.writes import write_json_atomic, write_jsonl_atomic

pytestmark = pytest.mark.timeout(600)

PROMPTS = [
    f"Question number {i}: how should I plan a {w} trip?"
    for i, w in enumerate(["short", "long", "cheap", "family", "solo", "winter", "summer", "city"])
]
# The rubric's first configuration is a little shorter than the second and the second longer than the
# third, so each prompt gives one pair whose chosen answer is shorter and one whose chosen is longer.
LENGTHS = {"tiny-harmless-2shot": 110, "tiny-faithful-2shot": 120, "tiny-basic-1shot": 90}


def rg_outputs(folder: Path) -> Path:
    folder.mkdir()
    for name, n in LENGTHS.items():
        rows = [
            {
                "index": i,
                "prompt": p,
                "response": ("Plan ahead and pack light. " * 10)[: n - i].rstrip() + ".",
                "bad": False,
                "bad_reasons": [],
                "config": name,
            }
            for i, p in enumerate(PROMPTS)
        ]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def cut_down_proof_config(tmp_path: Path, reward_model: str, policy: str, other_policy: str) -> Path:
    """The shipped proof.yaml with tiny models and counts: its CS, RM (train + eval on the human
    pairs) and pairwise settings, with the two judges; PG, RG and the training of the policies are
    replaced by fixed inputs (answers as `almost rg` writes them, two tiny models)."""
    config = yaml.safe_load(demo.PROOF_CONFIG.read_text())
    cut = {"in_process": True}
    cut["cs"] = {**config["cs"], "input_dir": str(rg_outputs(tmp_path / "rg-outputs")), "rubric": list(LENGTHS)}
    cut["rm"] = {
        "train": {
            **config["rm"]["train"],
            "model_name_or_path": reward_model,
            "num_train_epochs": None,
            "max_steps": 1,
            "per_device_train_batch_size": 2,
            "max_length": 128,
            "eval_fraction": 0.25,
        },
        "eval": {**config["rm"]["eval"], "max_length": 256, "batch_size": 64},
    }
    pairwise = dict(config["eval"]["pairwise"])
    pairwise["judges"] = {**pairwise["judges"], "lm": f"llm:{policy}"}
    pairwise.update(max_questions=2, max_new_tokens=4, judge_max_new_tokens=4, backend="hf")
    cut["eval"] = {"models": {"base": policy, "sft": other_policy}, "pairwise": pairwise}
    path = tmp_path / "proof-tiny.yaml"
    path.write_text(yaml.safe_dump(cut, sort_keys=False))
    return path


def table_row(printed: str, first_cell: str) -> list[str]:
    for line in printed.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{printed}")


def test_demo_proof_prints_the_table_from_the_stages_metrics(tmp_path, tiny_model_path, tiny_reward_model_path, monkeypatch, capsys):
    other = str(build_tiny_model(tmp_path / "other-policy", seed=1))
    monkeypatch.setattr(demo, "PROOF_CONFIG", cut_down_proof_config(tmp_path, tiny_reward_model_path, tiny_model_path, other))
    out = tmp_path / "run"
    assert cli(["demo", "--proof", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out

    stats = json.loads((out / "cs" / "cs_stats.json").read_text())
    train = json.loads((out / "rm" / "metrics.json").read_text())
    human = json.loads((out / "rm_eval" / "metrics.json").read_text())
    assert human["n"] > 1000  # the shipped HH-RLHF harmless test half, not a sample
    low, high = human["length_balanced"]["ci95"]
    assert table_row(printed, "rm_eval") == [
        "rm_eval",
        str(stats["pairs"]),
        f"{train['heldout']['accuracy']:.3f}",
        str(human["n"]),
        f"{human['accuracy']:.3f}",
        f"{human['length_balanced']['accuracy']:.3f}",
        f"[{low:.3f}, {high:.3f}]",
        f"{human['length_bias']['length_only_accuracy']:.3f}",
        f"{human['length_bias']['spearman_reward_length']:.3f}",
    ]
    for judge, spec in (("rm", f"rm:{out / 'rm'}"), ("lm", f"llm:{tiny_model_path}")):
        label = f"sft-vs-base-by-{judge}"
        metrics = json.loads((out / "eval" / "pairwise" / label / "metrics.json").read_text())
        split = metrics["length_balanced"]
        row = table_row(printed, label)
        assert row[:5] == [
            label,
            spec,
            str(metrics["n"]),
            f"{metrics['win_rate']:.3f}",
            f"[{metrics['ci95'][0]:.3f}, {metrics['ci95'][1]:.3f}]",
        ]
        assert row[6] == str(split["model_shorter"]["n"]) and row[8] == str(split["model_longer"]["n"])
    # The two judges read one set of answers: the model's and the baseline's, made once.
    assert len(list((out / "eval" / "pairwise" / "answers").glob("answers_*.jsonl"))) == 2


def load_ablation_script():
    path = Path(__file__).resolve().parent.parent / "scripts" / "proof_ablation.py"
    spec = importlib.util.spec_from_file_location("proof_ablation", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_ablation_variants_differ_from_the_proof_run_only_in_their_own_flags(tmp_path, monkeypatch, capsys):
    """scripts/proof_ablation.py (docs/proof.md's table) retrains the proof run's RM with one change per
    variant: its base settings are proof.yaml's rm.train without the length head, and its rubrics name
    configurations the proof run generates."""
    ablation = load_ablation_script()
    steps = {s.name: s for s in Planner(load_config(demo.PROOF_CONFIG), tmp_path / "run", demo.PROOF_CONFIG).plan()}
    proof_rm = steps["rm/train"].argv
    proof_rm = proof_rm[1 : proof_rm.index("--data_path")]  # after "train"

    def pairs(argv):
        return dict(zip(argv[::2], argv[1::2]))

    assert pairs(proof_rm) == {**pairs(ablation.RM_TRAIN), "--length_head": "true"}
    generated = {name.removeprefix("rg/") for name in steps if name.startswith("rg/")}
    assert all(set(v.rubric) - set(v.regenerated) <= generated for v in ablation.VARIANTS)
    proof_rg = steps["rg/smollm2-135m-harmless-2shot"].argv
    per_configuration = ("--prompt_file_path", "--n_shot", "--prompts_path", "--output_dir")
    assert {k: v for k, v in pairs(proof_rg).items() if k not in per_configuration} == pairs(ablation.RG)
    assert list(steps["cs"].flags["rubric"]) == list(ablation.VARIANTS[0].rubric)

    (tmp_path / "gen" / "rg").mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", ["proof_ablation.py", str(tmp_path / "gen"), "--variants", "length-head", "--dry_run"])
    ablation.main()
    printed = capsys.readouterr().out
    assert f"almost cs --input_dir {tmp_path / 'gen' / 'rg'} --output_dir {tmp_path / 'gen' / 'ablation' / 'length-head' / 'cs'}" in printed
    assert "--length_head true --data_path" in printed and "--data_path hh-harmless-test" in printed
    assert not (tmp_path / "gen" / "ablation").exists()


def test_ablation_scale_rows_train_on_the_first_prompts_of_the_same_generation(tmp_path):
    """A scale row's CS reads a copy of the first N prompts' RG rows of every configuration its rubric
    names, and otherwise runs the proof run's recipe."""
    ablation = load_ablation_script()
    variant = ablation.BY_NAME["scale-100"]
    assert variant.cs_flags == ablation.PROOF_CS and variant.rm_flags == ablation.PROOF_RM
    generation, folder = tmp_path / "gen", tmp_path / "gen" / "ablation" / "scale-100"
    for name in variant.rubric:
        rows = [{"index": i, "prompt": f"q{i}", "response": f"{name} {i}", "bad": False} for i in range(150)]
        write_jsonl_atomic(generation / "rg" / f"{name}.jsonl", rows)
    ablation.write_first_prompts(generation, folder, variant)
    for name in variant.rubric:
        kept = read_jsonl(folder / "rg" / f"{name}.jsonl")
        assert [r["index"] for r in kept] == list(range(100)) and kept[-1]["response"] == f"{name} 99"
    cs_argv = ablation.steps(variant, generation, folder, "hh-harmless-test")[0][1]
    assert cs_argv[cs_argv.index("--input_dir") + 1] == str(folder / "rg")


def test_ablation_scale_plot_reads_the_scale_rows_the_proof_run_and_larger_runs(tmp_path):
    """The scale points: the scale rows (first N prompts of the proof run), the proof run itself, and
    proof runs of another size passed with --scale_runs, each at the count of prompts its PG wrote."""
    ablation = load_ablation_script()
    generation, out, larger = tmp_path / "gen", tmp_path / "gen" / "ablation", tmp_path / "proof-1000"
    for run, prompts in ((generation, 300), (larger, 1000)):
        (run / "pg").mkdir(parents=True)
        (run / "pg" / "prompts.txt").write_text("".join(f"q{i}\n" for i in range(prompts)))
    for folder, pairs, balanced in ((generation, 189, 0.526), (out / "scale-100", 60, 0.51), (larger, 610, 0.55)):
        metrics = {"accuracy": 0.5, "length_balanced": {"accuracy": balanced, "ci95": [balanced - 0.03, balanced + 0.03]}}
        write_json_atomic(folder / "rm_eval" / "metrics.json", {**metrics, "length_bias": {"length_only_accuracy": 0.435}})
        write_json_atomic(folder / "cs" / "cs_stats.json", {"pairs": pairs})
    points = ablation.scale_points(generation, out, [larger])
    assert [(n, m["length_balanced"]["accuracy"], pairs) for n, m, pairs in points] == [
        (100, 0.51, 60),
        (300, 0.526, 189),
        (1000, 0.55, 610),
    ]
    ablation.scale_plot(points, out / "scale.png")
    assert (out / "scale.png").read_bytes().startswith(b"\x89PNG")
    for run in (generation, larger):
        write_json_atomic(run / "rm" / "metrics.json", {"heldout": {"accuracy": 0.6}})
    rows = {line.split(" | ")[0].strip("| "): line for line in ablation.table(generation, out, [], [larger]).splitlines()}
    assert "300 prompts" in rows["proof run"] and "| 189 |" in rows["proof run"]
    assert (
        "1000 prompts" in rows["proof run (proof-1000)"]
        and "| 610 |" in rows["proof run (proof-1000)"]
        and "0.55" in rows["proof run (proof-1000)"]
    )


def test_ablation_rg_rows_answer_the_first_prompts_anew_and_copy_the_rest(tmp_path, monkeypatch, capsys):
    """An RG row runs `almost rg` on the generation's first 300 prompts for the configurations it
    changes (with the proof run's RG settings and its own flags), copies the first 300 RG rows of the
    configurations it keeps, and then the proof run's recipe; it is not a point of the scale figure."""
    ablation = load_ablation_script()
    variant = ablation.BY_NAME["more-shots"]
    assert variant.regenerated == ["smollm2-135m-harmless-5shot", "smollm2-135m-faithful-5shot"]
    assert variant.rubric == ("smollm2-135m-harmless-5shot", "smollm2-135m-faithful-5shot", "smollm2-135m-basic-1shot")
    assert variant.cs_flags == ablation.PROOF_CS and variant.rm_flags == ablation.PROOF_RM
    generation, out = tmp_path / "gen", tmp_path / "gen" / "ablation"
    (generation / "pg").mkdir(parents=True)
    (generation / "pg" / "prompts.txt").write_text("".join(f"q{i}\n" for i in range(400)))
    for name in (ablation.HARMLESS, ablation.FAITHFUL, ablation.BASIC):
        write_jsonl_atomic(
            generation / "rg" / f"{name}.jsonl", [{"index": i, "prompt": f"q{i}", "response": "a", "bad": False} for i in range(400)]
        )
    ablation.write_first_prompts(generation, out / variant.name, variant)
    assert (out / variant.name / "prompts.txt").read_text().splitlines() == [f"q{i}" for i in range(300)]
    assert sorted(p.name for p in (out / variant.name / "rg").iterdir()) == ["smollm2-135m-basic-1shot.jsonl"]
    assert len(read_jsonl(out / variant.name / "rg" / "smollm2-135m-basic-1shot.jsonl")) == 300

    name, argv, product = ablation.steps(variant, generation, out / variant.name, "hh-harmless-test")[0]
    assert name == "rg" and product == out / variant.name / "rg" / "README.md"
    assert argv[: len(ablation.RG) + 1] == ["rg", *ablation.RG]
    assert argv[argv.index("--prompts_path") + 1] == str(out / variant.name / "prompts.txt")
    tail = argv[argv.index("--prompt_file_path") :]
    assert tail == ["--prompt_file_path", "harmless_prompt.txt", "faithful_prompt.txt", "--n_shot", "5", "--select", *variant.regenerated]
    warm = ablation.steps(ablation.BY_NAME["seed-temperature"], generation, out / "seed-temperature", "hh-harmless-test")[0][1]
    assert warm.count("--temperature") == 1 and warm[warm.index("--temperature") + 1] == "1.0"
    assert warm[warm.index("--n_shot") + 1 : warm.index("--select")] == ["1", "2"]

    monkeypatch.setattr(sys, "argv", ["proof_ablation.py", str(generation), "--variants", "seed-temperature", "--dry_run"])
    ablation.main()
    assert "seed-temperature: rg: almost rg --model_name_or_path smollm2-135m" in capsys.readouterr().out
    write_json_atomic(
        out / variant.name / "rm_eval" / "metrics.json", {"accuracy": 0.5, "length_balanced": {"accuracy": 0.5, "ci95": [0.4, 0.6]}}
    )
    write_json_atomic(out / variant.name / "cs" / "cs_stats.json", {"pairs": 10})
    assert ablation.scale_points(generation, out) == []
