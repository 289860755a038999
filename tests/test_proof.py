"""``almost demo --proof``: the table it prints at the end comes from the metrics a real (tiny) run's
stages wrote, read through the keys those stages write."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import build_tiny_model

from almost.cli import main as cli
from almost.models import EMBEDDED_MODELS
from almost.readers import read_jsonl
from almost.run import demo
from almost.run.checks import validate
from almost.run.execute import runs_with
from almost.run.plan import Planner, as_asset, load_config
from almost.shipped import HH_HARMLESS_TEST
from almost.stages import RG
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


HUMAN_PAIRS = 48
SHIPPED_PROOF_CONFIG = demo.PROOF_CONFIG  # before a test points demo at a cut-down copy


def first_human_pairs(tmp_path: Path) -> Path:
    """The first HUMAN_PAIRS rows of the shipped HH-RLHF harmless test half, as HH-RLHF rows."""
    with gzip.open(HH_HARMLESS_TEST, "rt", encoding="utf-8") as f:
        rows = [line for line, _ in zip(f, range(HUMAN_PAIRS))]
    path = tmp_path / "hh-harmless-test-first.jsonl"
    path.write_text("".join(rows))
    return path


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
        # The shipped config reads the whole test half (1,153 pairs); here its first pairs, in its format.
        "eval": {**config["rm"]["eval"], "data_path": str(first_human_pairs(tmp_path)), "max_length": 256, "batch_size": 64},
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
    assert yaml.safe_load(SHIPPED_PROOF_CONFIG.read_text())["rm"]["eval"]["data_path"] == "hh-harmless-test"
    assert human["rows_read"] == HUMAN_PAIRS
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
    assert all(set(v.rubric) - set(v.regenerated) <= generated for v in ablation.VARIANTS if "proof" in v.generations)
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

    name, argv, products = ablation.steps(variant, generation, out / variant.name, "hh-harmless-test")[0]
    assert name == "rg smollm2-135m" and products == tuple(out / variant.name / "rg" / f"{n}.jsonl" for n in variant.regenerated)
    assert argv[: len(ablation.RG) + 1] == ["rg", *ablation.RG]
    assert argv[argv.index("--prompts_path") + 1] == str(out / variant.name / "prompts.txt")
    tail = argv[argv.index("--prompt_file_path") :]
    assert tail == ["--prompt_file_path", "harmless_prompt.txt", "faithful_prompt.txt", "--n_shot", "5", "--select", *variant.regenerated]
    warm = ablation.steps(ablation.BY_NAME["seed-temperature"], generation, out / "seed-temperature", "hh-harmless-test")[0][1]
    assert warm.count("--temperature") == 1 and warm[warm.index("--temperature") + 1] == "1.0"
    assert warm[warm.index("--n_shot") + 1 : warm.index("--select")] == ["1", "2"]

    monkeypatch.setattr(sys, "argv", ["proof_ablation.py", str(generation), "--variants", "seed-temperature", "--dry_run"])
    ablation.main()
    assert "seed-temperature: rg smollm2-135m: almost rg --model_name_or_path smollm2-135m" in capsys.readouterr().out
    write_json_atomic(
        out / variant.name / "rm_eval" / "metrics.json", {"accuracy": 0.5, "length_balanced": {"accuracy": 0.5, "ci95": [0.4, 0.6]}}
    )
    write_json_atomic(out / variant.name / "cs" / "cs_stats.json", {"pairs": 10})
    assert ablation.scale_points(generation, out) == []


def test_demo_proof_size_runs_the_size_config_and_proof_alone_the_135m_one(tmp_path, monkeypatch, capsys):
    """`almost demo --proof size` runs proof-size.yaml into ./almost-proof-size and prints the proof table;
    `--proof` alone is the 135M proof as before, and no --proof the demo."""
    ran = []
    monkeypatch.setattr(demo, "run_pipeline", lambda config, run_dir, *rest: ran.append((config, run_dir)) or SimpleNamespace(exit_code=0))
    monkeypatch.setattr(demo, "proof_table", lambda run_dir: f"proof table of {run_dir}")
    assert cli(["demo", "--proof", "size"]) == 0 and cli(["demo", "--proof"]) == 0 and cli(["demo"]) == 0
    assert ran == [
        (demo.PROOF_SIZE_CONFIG, "almost-proof-size"),
        (demo.PROOF_CONFIG, "almost-proof"),
        (demo.DEMO_CONFIG, "almost-demo"),
    ]
    printed = capsys.readouterr().out
    assert printed.count("proof table of almost-proof-size") == 1 and printed.count("proof table of almost-proof\n") == 1
    assert cli(["demo", "--proof", "large"]) == 2


def planned(config_path: Path, run: Path) -> tuple[Planner, dict]:
    planner = Planner(load_config(config_path), run, config_path)
    return planner, {s.name: s for s in planner.plan()}


def settings(step, run: Path) -> dict:
    """A step's flags with its run directory written RUN, so two runs' steps compare."""

    def portable(value):
        if isinstance(value, list):
            return [portable(v) for v in value]
        return value.replace(str(run), "RUN") if isinstance(value, str) else value

    return {k: portable(v) for k, v in step.flags.items()}


def test_size_proof_config_is_the_135m_proof_with_the_1_5b_on_top_and_a_better_judge(tmp_path):
    """proof-size.yaml plans with valid settings for every stage, ranks the 1.5B's harmless answers (the
    configuration name `almost rg` makes for the model name) over proof.yaml's, starts one engine per
    model, judges by the run's RM and by the 1.5B (longer replies, a set KV cache), and is otherwise
    proof.yaml step for step, less DPO and SFT's LM judging, at 200 prompts, with the LM judge's
    verdicts read from its token probabilities."""
    planner, size = planned(demo.PROOF_SIZE_CONFIG, tmp_path / "size")
    _, proof = planned(demo.PROOF_CONFIG, tmp_path / "proof")
    # Less proof.yaml's DPO (two more pairings for the 1.5B judge), at the prompts the budget allows; the
    # 1.5B judges RL vs base only, a pairing of 120 questions in both orders being the run's costliest step.
    proof = {name: step for name, step in proof.items() if "dpo" not in name and name != "eval/pairwise/sft-vs-base-by-lm"}
    # Models resolve where they run: the 1.5B's extra is not in the test install (its names are checked below).
    validate(list(size.values()), planner, check_models=False)
    top = "qwen2.5-coder-1.5b-harmless-2shot"
    rubric = [top, "smollm2-135m-harmless-2shot", "smollm2-135m-basic-1shot"]
    assert list(size["cs"].flags["rubric"]) == rubric
    assert list(size) == [*proof][:1] + [f"rg/{top}"] + [*proof][1:]
    calls, group = [], []
    for step in (s for s in size.values() if s.stage is RG):
        if group and not runs_with(group[0], step):
            calls.append(group)
            group = []
        group.append(step)
    calls.append(group)
    assert [[s.name for s in call] for call in calls] == [[f"rg/{top}"], [n for n in proof if n.startswith("rg/")]]
    wired = {str(s.output_dir) for s in size.values()}
    models = {v for s in size.values() for k, v in s.flags.items() if k in s.stage.inputs and s.stage.inputs[k].model and v not in wired}
    assert models == {"smollm2-135m", "qwen2.5-coder-1.5b"} and models <= set(EMBEDDED_MODELS)

    expected = {name: settings(step, tmp_path / "proof") for name, step in proof.items()}
    expected[f"rg/{top}"] = {
        **expected["rg/smollm2-135m-harmless-2shot"],
        "model_name_or_path": "qwen2.5-coder-1.5b",
        "kv_cache_gib": 3,
        "max_model_len": 4096,
    }
    expected["cs"]["rubric"] = rubric
    expected["pg"]["num_generation"] = 200
    for name in [n for n in expected if n.startswith("eval/pairwise/")]:
        expected[name].update(kv_cache_gib=3, max_model_len=4096, judge_logprobs=True)
        del expected[name]["judge_max_new_tokens"]  # no reply to generate
        if name.endswith("-by-lm"):
            expected[name]["judge"] = "llm:qwen2.5-coder-1.5b"
    assert {name: settings(step, tmp_path / "size") for name, step in size.items()} == expected


def test_ablation_settings_are_the_size_configs_and_its_rows_name_what_it_makes(tmp_path):
    """The ablation's PG, RG (per model) and RM settings are proof-size.yaml's; a size row's rubric names
    configurations the size run makes or the row answers anew, and the ones it answers anew in the shared
    ablation/rg/ are never the run's own."""
    ablation = load_ablation_script()
    _, size = planned(demo.PROOF_SIZE_CONFIG, tmp_path / "run")

    def pairs(argv, dropped=()):
        return {k: v for k, v in zip(argv[::2], argv[1::2]) if k not in dropped}

    per_configuration = ("--prompt_file_path", "--n_shot", "--prompts_path", "--output_dir")
    for step in (s for s in size.values() if s.stage is RG):
        model = step.flags["model_name_or_path"]
        assert pairs(step.argv, per_configuration) == pairs(
            ablation.overridden(ablation.RG, ("--model_name_or_path", model, *ablation.ENGINE_FLAGS.get(model, ())))
        )
    pg = pairs(ablation.PG)
    pg["--prompt_file_path"] = as_asset(pg["--prompt_file_path"])
    assert pairs(size["pg"].argv, ("--output_dir", "--num_generation")) == pg
    rm = size["rm/train"].argv
    assert pairs(rm[1 : rm.index("--data_path")]) == {**pairs(ablation.RM_TRAIN), "--length_head": "true"}

    made = {name.removeprefix("rg/") for name in size if name.startswith("rg/")}
    assert list(size["cs"].flags["rubric"]) == list(ablation.SIZE_RUBRIC) and ablation.QWEN_HARMLESS in made
    rows = [v for v in ablation.VARIANTS if "size" in v.generations and not v.supervised]
    assert all(set(v.rubric) - set(v.regenerated) <= made for v in rows)
    assert all(made.isdisjoint(v.regenerated) for v in rows if v.rg_configurations and not v.own_answers)
    assert all(set(v.rubric) <= set(v.regenerated) for v in rows if v.pg_model)


def size_generation(root: Path, prompts: int = 6) -> Path:
    """A size run's files as the ablation reads them: PG's prompts and the four RG configurations."""
    ablation = sys.modules["proof_ablation"]
    (root / "pg").mkdir(parents=True)
    (root / "pg" / "prompts.txt").write_text("".join(f"q{i}\n" for i in range(prompts)))
    for name in (ablation.QWEN_HARMLESS, ablation.HARMLESS, ablation.FAITHFUL, ablation.BASIC):
        rows = [{"index": i, "prompt": f"q{i}", "response": f"{name} {i}", "bad": False} for i in range(prompts)]
        write_jsonl_atomic(root / "rg" / f"{name}.jsonl", rows)
    return root


def test_ablation_size_rows_answer_the_1_5b_anew_once_for_all_rows_and_pg_on_it(tmp_path, monkeypatch, capsys):
    """On a size run the default rows are the size rows (and the supervised reference). Rows that need the
    1.5B's faithful answers on the run's own prompts share one `almost rg` call into ablation/rg/, beside
    copies of the run's files they name; the PG row makes 100 prompts on the 1.5B and answers every
    configuration of the size rubric on them, one call per model."""
    ablation = load_ablation_script()
    generation = size_generation(tmp_path / "gen")
    out = generation / "ablation"
    assert ablation.generation_kind(generation) == "size" and ablation.generation_kind(tmp_path) == "proof"

    faithful, harmless = ablation.BY_NAME["size-faithful"], ablation.BY_NAME["harmless-1.5b"]
    first = ablation.steps(faithful, generation, out / faithful.name, "hh-harmless-test")
    assert first[0] == ablation.steps(harmless, generation, out / harmless.name, "hh-harmless-test")[0]
    name, argv, products = first[0]
    assert name == "rg qwen2.5-coder-1.5b" and products == (out / "rg" / f"{ablation.QWEN_FAITHFUL}.jsonl",)
    assert argv == [
        "rg",
        *ablation.overridden(ablation.RG, ("--model_name_or_path", "qwen2.5-coder-1.5b", "--kv_cache_gib", "3", "--max_model_len", "4096")),
        "--prompts_path",
        str(generation / "pg" / "prompts.txt"),
        "--output_dir",
        str(out / "rg"),
        "--prompt_file_path",
        "faithful_prompt.txt",
        "--n_shot",
        "2",
        "--select",
        ablation.QWEN_FAITHFUL,
    ]
    cs = first[1][1]
    assert cs[cs.index("--input_dir") + 1] == str(out / "rg")
    for variant in (faithful, harmless):
        ablation.prepare(variant, generation, out / variant.name)
    assert sorted(p.name for p in (out / "rg").iterdir()) == sorted(f"{n}.jsonl" for n in (ablation.FAITHFUL, ablation.QWEN_HARMLESS))
    assert (out / "rg" / f"{ablation.FAITHFUL}.jsonl").read_bytes() == (generation / "rg" / f"{ablation.FAITHFUL}.jsonl").read_bytes()

    pg = ablation.BY_NAME["pg-1.5b"]
    folder = out / pg.name
    planned_steps = ablation.steps(pg, generation, folder, "hh-harmless-test")
    assert [s[0] for s in planned_steps] == ["pg", "rg qwen2.5-coder-1.5b", "rg smollm2-135m", "cs", "rm train", "rm eval"]
    made = ("--model_name_or_path", "qwen2.5-coder-1.5b", "--kv_cache_gib", "3", "--max_model_len", "4096", "--num_generation", "100")
    assert planned_steps[0][1] == ["pg", *ablation.overridden(ablation.PG, made), "--output_dir", str(folder / "pg")]
    for _, argv, products in planned_steps[1:3]:
        assert argv[argv.index("--prompts_path") + 1] == str(folder / "pg" / "prompts.txt")
        assert all(p.parent == folder / "rg" for p in products)
    assert [p.stem for _, _, products in planned_steps[1:3] for p in products] == list(ablation.SIZE_RUBRIC)

    monkeypatch.setattr(sys, "argv", ["proof_ablation.py", str(generation), "--dry_run"])
    ablation.main()
    printed = capsys.readouterr().out
    ran = list(dict.fromkeys(line.split(":")[0] for line in printed.splitlines()))
    assert ran == [v.name for v in ablation.VARIANTS if "size" in v.generations]


def test_supervised_reference_trains_on_as_many_seeded_dev_pairs_as_cs_kept_and_never_test_pairs(tmp_path, monkeypatch, capsys):
    """The supervised row's training file holds the generation's CS pair count of hh-harmless-dev rows, a
    seeded shuffle of the usable ones (the same file every time, not the file's first rows), no row of the
    test half it is read on; `rm train` takes it with the proof RM's settings (memory saved by checkpointing);
    read on the dev half it is refused."""
    ablation = load_ablation_script()
    from almost.reward.formats import load_pairs
    from almost.reward.train import refuse_evaluation_data
    from almost.shipped import HH_HARMLESS_DEV, HH_HARMLESS_TEST

    generation, variant = tmp_path / "gen", ablation.BY_NAME["supervised-smollm2-135m"]
    write_json_atomic(generation / "cs" / "cs_stats.json", {"pairs": 37})
    folder = generation / "ablation" / variant.name
    path = ablation.write_human_pairs(generation, folder)
    written = path.read_bytes()
    rows = read_jsonl(path)

    def ids(source):
        with gzip.open(source, "rt") as f:
            return {json.loads(line)["id"] for line in f}

    usable = ablation.usable_dev_rows()
    assert len(rows) == 37 and len(load_pairs(path).pairs) == 37
    assert {r["id"] for r in rows} <= ids(HH_HARMLESS_DEV) and not {r["id"] for r in rows} & ids(HH_HARMLESS_TEST)
    assert all(r in usable for r in rows) and rows != usable[:37]
    assert ablation.write_human_pairs(generation, folder).read_bytes() == written
    refuse_evaluation_data(str(path))  # a file of its own, not the shipped set's name
    # At an ablation row's count (--supervised_pairs): the first N of the same shuffle, nested in the larger ones.
    at_20 = ablation.supervised_at(20)
    ablation.prepare(at_20, generation, generation / "ablation" / at_20.name)
    assert (
        at_20.name == "supervised-smollm2-135m-20" and read_jsonl(generation / "ablation" / at_20.name / "human_pairs.jsonl") == rows[:20]
    )

    train, evaluate = ablation.steps(variant, generation, folder, "hh-harmless-test")
    settings = [*ablation.RM_TRAIN, *ablation.PROOF_RM, "--gradient_checkpointing", "true"]
    assert train[1] == ["rm", "train", *settings, "--data_path", str(path), "--output_dir", str(folder / "rm")]
    assert evaluate[1][evaluate[1].index("--data_path") + 1] == "hh-harmless-test"

    (generation / "rg").mkdir()
    monkeypatch.setattr(sys, "argv", ["proof_ablation.py", str(generation), "--variants", variant.name, "--data_path", "hh-harmless-dev"])
    with pytest.raises(SystemExit) as refused:
        ablation.main()
    assert refused.value.code == 2 and "trains on hh-harmless-dev" in capsys.readouterr().err
    for asked, said in (
        (["--data_path", "hh-harmless-dev", "--supervised_pairs", "20"], "trains on hh-harmless-dev"),
        (["--supervised_pairs", "0"], "1 or more"),
    ):
        monkeypatch.setattr(sys, "argv", ["proof_ablation.py", str(generation), "--variants", "length-head", *asked])
        with pytest.raises(SystemExit) as refused:
            ablation.main()
        assert refused.value.code == 2 and said in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["proof_ablation.py", str(generation), "--data_path", "hh-harmless-dev", "--dry_run"])
    ablation.main()
    assert variant.name not in capsys.readouterr().out


def rm_metrics(folder: Path, balanced: float, base: str = "smollm2-135m", data: str = "hh-harmless-test", pairs: int = 40) -> None:
    """The files an RM row is read from: rm train's summary and rm eval's metrics on human pairs."""
    write_json_atomic(folder / "rm" / "metrics.json", {"base_model": base, "data": {"pairs": pairs}, "heldout": {"accuracy": 0.55}})
    length = {"chosen_longer": {"accuracy": 0.4}, "chosen_shorter": {"accuracy": 0.6}, "length_only_accuracy": 0.435}
    metrics = {"n": 1153, "accuracy": 0.52, "length_balanced": {"accuracy": balanced, "ci95": [balanced - 0.03, balanced + 0.03]}}
    write_json_atomic(folder / "rm_eval" / "metrics.json", {**metrics, "length_bias": length, "data": data})


def test_no_share_is_taken_of_a_reference_at_chance(tmp_path):
    """A supervised reference whose length-balanced interval reaches 0.5 has a margin that is noise: both
    tables say so in the share cell instead of dividing by it, and still show the reference's own row."""
    ablation = load_ablation_script()
    from almost.run.proof import proof_table

    run = size_generation(tmp_path / "run")
    write_json_atomic(run / "cs" / "cs_stats.json", {"pairs": 40})
    rm_metrics(run, 0.52)
    rm_metrics(run / "ablation" / "supervised-smollm2-135m", 0.525)  # interval [0.495, 0.555]
    rm_metrics(run / "ablation" / "size-harmless", 0.56)
    write_json_atomic(run / "ablation" / "size-harmless" / "cs" / "cs_stats.json", {"pairs": 33})

    printed = proof_table(run)
    assert table_row(printed, "rm_eval")[-1] == "none: reference at chance"
    assert table_row(printed, "ablation/supervised-smollm2-135m")[-1] == "(reference)"
    text = ablation.table(run, run / "ablation", [ablation.SUPERVISED, ablation.BY_NAME["size-harmless"]])
    column = text.splitlines()[0].split(" | ").index("share of the supervised margin")
    assert table_row(text, "size-harmless")[column] == "none: reference at chance (reference: 40 pairs)"
    assert table_row(text, "proof run")[column] == "none: reference at chance"


def test_margin_share_is_read_from_the_synthetic_and_the_supervised_metrics(tmp_path):
    """With a supervised reference of the same base on the same human pairs in RUN/ablation/, the proof
    table and the ablation table give each synthetic RM (synthetic - 0.5) / (supervised - 0.5) of their
    length-balanced accuracies and show the reference's own row; a reference of another base, or read on
    other pairs, is not used, and without one the proof table is as before. Of references at several pair
    counts (--supervised_pairs) a row takes the one at its own count, else the nearest, whose count the cell
    then names. Pairwise rows come per category."""
    ablation = load_ablation_script()
    from almost.run.proof import proof_table

    run = size_generation(tmp_path / "run")
    write_json_atomic(run / "cs" / "cs_stats.json", {"pairs": 40})
    rm_metrics(run, 0.547)
    before = proof_table(run)
    assert "share of the supervised margin" not in before
    rm_metrics(run / "ablation" / "supervised-other", 0.7, base="qwen2.5-coder-1.5b")
    rm_metrics(run / "ablation" / "supervised-dev", 0.7, data="hh-harmless-dev")
    rm_metrics(run / "ablation" / "supervised-smollm2-135m", 0.615)
    rm_metrics(run / "ablation" / "supervised-smollm2-135m-33", 0.58, pairs=33)
    for name, balanced, pairs in (("size-harmless", 0.56, 33), ("size-faithful", 0.52, 36)):
        rm_metrics(run / "ablation" / name, balanced)
        write_json_atomic(run / "ablation" / name / "cs" / "cs_stats.json", {"pairs": pairs})

    def share(folder, reference="supervised-smollm2-135m"):
        synthetic = json.loads((folder / "rm_eval" / "metrics.json").read_text())["length_balanced"]["accuracy"]
        supervised = json.loads((run / "ablation" / reference / "rm_eval" / "metrics.json").read_text())
        return f"{(synthetic - 0.5) / (supervised['length_balanced']['accuracy'] - 0.5):.0%}"

    printed = proof_table(run)
    assert table_row(printed, "rm_eval")[-1] == share(run) and table_row(printed, "rm_eval")[:9] == table_row(before, "rm_eval")
    reference = table_row(printed, "ablation/supervised-smollm2-135m")
    assert reference[1] == "40" and reference[5] == "0.615" and reference[-1] == "(reference)"
    assert "supervised-other" not in printed and "supervised-dev" not in printed and "-33" not in printed

    rows = [ablation.SUPERVISED, ablation.supervised_at(33), ablation.BY_NAME["size-harmless"], ablation.BY_NAME["size-faithful"]]
    text = ablation.table(run, run / "ablation", rows)
    column = text.splitlines()[0].split(" | ").index("share of the supervised margin")
    assert table_row(text, "proof run")[column] == share(run) and "proof-size.yaml" in table_row(text, "proof run")[1]
    assert table_row(text, "size-harmless")[column] == share(run / "ablation" / "size-harmless", "supervised-smollm2-135m-33") == "75%"
    nearest = share(run / "ablation" / "size-faithful", "supervised-smollm2-135m-33")
    assert table_row(text, "size-faithful")[column] == f"{nearest} (reference: 33 pairs)"
    assert table_row(text, "size-harmless")[2] == "33" and table_row(text, "supervised-smollm2-135m")[2] == "40"
    assert table_row(text, "supervised-smollm2-135m")[column] == table_row(text, "supervised-smollm2-135m-33")[column] == "(reference)"
    assert "33 human pairs" in table_row(text, "supervised-smollm2-135m-33")[1]

    from almost.evaluate.pairwise import pairwise_metrics

    judged = [
        {"category": c, "outcome": o, "model_length": m, "baseline_length": 100}
        for c, o, m in [("helpful", "win", 90), ("helpful", "loss", 120), ("harmless", "win", 80), ("harmless", "tie", 130)]
    ]
    metrics = {**pairwise_metrics(judged), "judge": "llm:qwen2.5-coder-1.5b"}
    write_json_atomic(run / "eval" / "pairwise" / "sft-vs-base-by-lm" / "metrics.json", metrics)
    printed = proof_table(run)
    for label, part in [("sft-vs-base-by-lm", metrics), *((f"sft-vs-base-by-lm: {c}", m) for c, m in metrics["per_category"].items())]:
        low, high = part["ci95"]
        assert table_row(printed, label)[1:5] == [
            "llm:qwen2.5-coder-1.5b",
            str(part["n"]),
            f"{part['win_rate']:.3f}",
            f"[{low:.3f}, {high:.3f}]",
        ]
