"""Dataset cards beside every dataset a stage writes, and ``almost push`` up to the upload call."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from pathlib import Path

import pytest
from scripted_engine import ScriptedEngine

from almost import shipped
from almost.cards import count_rows, read_card_metadata, size_category, write_dataset_card
from almost.cli import main as cli_main
from almost.errors import AlmostError
from almost.feedback.cs import CSArguments, run_cs
from almost.feedback.pg import PGArguments, run_pg
from almost.feedback.rg import RGArguments, run_rg
from almost.hub import PushArguments, plan_uploads, run_push
from almost.policy.selfplay import RMSPArguments, run_rmsp
from almost.reward.score import RewardScoreConfig, run_rm_score
from almost.stages import PG, RG, RM_TRAIN

pytestmark = pytest.mark.timeout(300)

QUESTIONS = [
    "How do volcanoes form beneath the ocean floor?",
    "What should I cook for a vegetarian birthday dinner?",
    "Which exercises strengthen a weak lower back safely?",
    "Why did the Roman empire split into two halves?",
    "Can you explain compound interest with an example?",
]
LONG = "It depends on a few things, and the short answer is that you should start small and build up from there step by step."
SHORT = "Start small and build up."


def card_files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file() and p.name != "README.md"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_reward_model_path) -> Path:
    """A small run made by the stages themselves with scripted engines (and a tiny real RM)."""
    run = tmp_path_factory.mktemp("run")
    pool = itertools.cycle(QUESTIONS)
    run_pg(PGArguments(output_dir=str(run / "pg"), num_generation=4, batch_size=5, seed=1), ScriptedEngine(lambda p, i: " " + next(pool)))

    def rg(prompt_file):
        return RGArguments(
            output_dir=str(run / "rg"),
            prompts_path=str(run / "pg" / "prompts.txt"),
            prompt_file_path=[str(prompt_file)],
            n_shot=[1],
        )

    run_rg(rg(shipped.BETTER_DEMONSTRATIONS), ScriptedEngine(lambda p, i: " " + LONG))
    run_rg(rg(shipped.WORSE_DEMONSTRATIONS), ScriptedEngine(lambda p, i: " " + SHORT + " It is fine to go slowly at first."))
    run_cs(
        CSArguments(
            output_dir=str(run / "cs"), input_dir=str(run / "rg"), rubric=["smollm2-135m-faithful-1shot", "smollm2-135m-basic-1shot"]
        )
    )
    run_rm_score(
        RewardScoreConfig(
            model_name_or_path=tiny_reward_model_path, data_path=str(run / "cs" / "comparison.jsonl"), output_dir=str(run / "score")
        )
    )

    class LengthScorer:
        def score(self, conversations):
            return [float(len(c[-1]["content"])) for c in conversations]

    run_rmsp(
        RMSPArguments(
            output_dir=str(run / "rmsp"),
            prompts_path=str(run / "pg" / "prompts.txt"),
            reward_model_name_or_path="scripted",
            prompt_file_path=str(shipped.BETTER_DEMONSTRATIONS),
            n_shot=1,
            num_candidates=2,
            max_turns=1,
        ),
        policy=ScriptedEngine(lambda p, i: " " + LONG),
        user=ScriptedEngine(lambda p, i: " Thanks!"),
        scorer=LengthScorer(),
    )
    model = run / "rm"  # a model folder as `almost rm train` leaves it
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "README.md").write_text("---\nlicense: apache-2.0\n---\n# reward model\n")
    (model / "checkpoint-3").mkdir()
    (model / "checkpoint-3" / "optimizer.pt").write_text("x")
    return run


EXPECTED = {  # folder: (default config, its rows, columns of the default config)
    "pg": ("prompts", 4, {"text"}),
    "rg": ("smollm2-135m-faithful-1shot", 4, {"index", "prompt", "response", "bad", "bad_reasons", "config"}),
    "cs": ("comparisons", 4, {"prompt", "chosen", "rejected", "chosen_config", "rejected_config"}),
    "score": ("scored", 4, {"prompt", "chosen", "rejected", "chosen_config", "rejected_config", "reward_chosen", "reward_rejected"}),
    "rmsp": ("demonstrations", 4, None),
}


@pytest.mark.parametrize("folder", list(EXPECTED))
def test_every_dataset_folder_has_a_card_that_parses_and_loads(run_dir, folder, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    path = run_dir / folder
    # What a killed rerun or the pipeline leaves beside the data must not be loaded.
    (path / "half.jsonl.partial").write_text('{"index": 99}\n{"ind')
    (path / ".almost-step.json").write_text("{}")
    card = DatasetCard.load(path / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["task_categories"] and data["size_categories"] == ["n<1K"]
    assert data["almost"]["version"] and data["almost"]["stages"]
    default, rows, columns = EXPECTED[folder]
    configs = {c["config_name"]: c for c in data["configs"]}
    assert next(c for c in data["configs"] if c.get("default"))["config_name"] == default
    for c in configs.values():
        (file,) = c["data_files"]
        assert (path / file["path"]).is_file() and not file["path"].endswith((".partial", ".json"))
    loaded = datasets.load_dataset(str(path), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].num_rows == rows
    if columns:
        assert set(loaded["train"].column_names) == columns
    for name in configs:
        assert datasets.load_dataset(str(path), name, cache_dir=str(tmp_path / "cache"))["train"].num_rows >= 0


def test_cards_say_what_made_the_data(run_dir):
    rg = read_card_metadata(run_dir / "rg")["almost"]["stages"]["rg"]
    # The pipeline runs rg once per configuration into one folder: the card keeps both.
    assert set(rg["files"]) == {"smollm2-135m-faithful-1shot", "smollm2-135m-basic-1shot"}
    assert rg["configurations"]["smollm2-135m-faithful-1shot"] == {"demonstrations": "faithful", "n_shot": 1, "rows": 4, "bad": 0}
    assert rg["model"] == "smollm2-135m" and rg["sampling"]["seed"] == 42
    pg = read_card_metadata(run_dir / "pg")["almost"]["stages"]["pg"]
    assert pg["rounds_log"].startswith("pg_rounds.jsonl:")
    assert pg["accepted"] == 4 and "rejected_by_filter" in pg and pg["settings"]["rouge_l_threshold"] == 0.5
    cs = read_card_metadata(run_dir / "cs")["almost"]["stages"]["cs"]
    assert (
        cs["pairs"] == 4
        and cs["dropped_by_filter"] == 0
        and cs["rubric"] == [["smollm2-135m-faithful-1shot"], ["smollm2-135m-basic-1shot"]]
    )
    rmsp = read_card_metadata(run_dir / "rmsp")["almost"]["stages"]["rmsp"]
    assert rmsp["dialogues"] == 4 and rmsp["settings"]["num_candidates"] == 2
    body = (run_dir / "cs" / "README.md").read_text()
    assert "| `comparisons` | `comparison.jsonl` | 4 | `almost cs` |" in body


def test_writing_a_card_leaves_the_data_files_alone(run_dir):
    before = card_files(run_dir / "rg")
    write_dataset_card(run_dir / "rg", RG, {}, {"note": "again"})
    assert card_files(run_dir / "rg") == before
    assert read_card_metadata(run_dir / "rg")["almost"]["stages"]["rg"]["note"] == "again"


def test_prompts_beside_answers_stay_out_of_the_loaded_configs(tmp_path):
    # Standalone rg writes next to prompts.txt; `datasets` reads a folder with one format.
    (tmp_path / "prompts.txt").write_text("a\nb\n")
    (tmp_path / "x-1shot.jsonl").write_text('{"index": 0}\n')
    write_dataset_card(tmp_path, PG, {"prompts": "prompts.txt"}, {})
    write_dataset_card(tmp_path, RG, {"x-1shot": "x-1shot.jsonl"}, {})
    configs = read_card_metadata(tmp_path)["configs"]
    assert [c["config_name"] for c in configs] == ["x-1shot"]
    assert 'load_dataset("text", data_files="prompts.txt")' in (tmp_path / "README.md").read_text()


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 54_321, 2_000_000)] == ["n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]


# --- push -------------------------------------------------------------------------------------------


def test_push_refuses_without_a_token(run_dir, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(AlmostError, match="no Hub token: set HF_TOKEN"):
        run_push(PushArguments(run_dir=str(run_dir), repo_id="org/name"))
    assert cli_main(["push", str(run_dir), "--repo_id", "org/name"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Hub token" in err


def test_push_uploads_each_folder_with_its_card_and_no_partial_files(run_dir, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)) or f"https://hf.co/{repo_id}"
    )
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw["repo_id"], kw)))
    uploads = run_push(PushArguments(run_dir=str(run_dir), repo_id="org/name", private=True))
    assert {(u.repo_id, u.repo_type) for u in uploads} == {
        ("org/name-pg", "dataset"),
        ("org/name-rg", "dataset"),
        ("org/name-cs", "dataset"),
        ("org/name-score", "dataset"),
        ("org/name-rmsp", "dataset"),
        ("org/name-rm", "model"),
    }
    creates = [c for c in calls if c[0] == "create"]
    assert all(c[2]["private"] is True and c[2]["exist_ok"] is True for c in creates) and len(creates) == 6
    rg_upload = next(c[2] for c in calls if c[0] == "upload" and c[1] == "org/name-rg")
    assert rg_upload["folder_path"] == str(run_dir / "rg") and rg_upload["repo_type"] == "dataset"
    rg = next(u for u in uploads if u.repo_id == "org/name-rg")
    (run_dir / "rg" / "half.jsonl.partial").write_text("x")
    (run_dir / "rg" / ".almost-step.json").write_text("{}")
    files = plan_uploads(run_dir, "org/name", ["rg"])[0].files
    assert "README.md" in files and "smollm2-135m-basic-1shot.jsonl" in files
    assert not [f for f in files if "partial" in f or f.startswith(".")], files
    assert set(rg.files) <= set(files)
    model = next(u for u in uploads if u.repo_type == "model")
    assert "README.md" in model.files and not any(f.startswith("checkpoint-") for f in model.files)


def test_one_stage_goes_to_the_repo_id_as_it_is_and_bad_choices_fail_early(run_dir, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: f"https://hf.co/{repo_id}")
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: pytest.fail("uploaded despite --dry_run"))
    (upload,) = run_push(PushArguments(run_dir=str(run_dir), repo_id="org/comparisons", stage=["cs"], dry_run=True))
    assert upload.repo_id == "org/comparisons" and upload.folder == run_dir / "cs"
    with pytest.raises(AlmostError, match="--stage nope: no such folder"):
        plan_uploads(run_dir, "org/name", ["nope"])
    with pytest.raises(AlmostError, match="ORG/NAME"):
        plan_uploads(run_dir, "name-only")
    assert plan_uploads(run_dir / "cs", "org/x")[0].repo_id == "org/x"  # a stage folder itself


def test_merged_shards_get_a_card_that_leaves_the_shards_out(tmp_path):
    import datasets

    from almost.feedback.merge import MergeArguments, run_merge

    (tmp_path / "prompts.txt").write_text("".join(q + "\n" for q in QUESTIONS))
    for i in range(2):
        run_rg(RGArguments(output_dir=str(tmp_path), n_shot=[1], shard=f"{i}/2"), ScriptedEngine(lambda p, i: " " + LONG))
    assert not (tmp_path / "README.md").exists()  # a shard alone is not a dataset yet
    run_merge(MergeArguments(output_dir=str(tmp_path)))
    (config,) = read_card_metadata(tmp_path)["configs"]
    assert config["config_name"] == "smollm2-135m-faithful-1shot" and config["data_files"] == [
        {"split": "train", "path": "smollm2-135m-faithful-1shot.jsonl"}
    ]
    assert datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path / "cache"))["train"].num_rows == len(QUESTIONS)


# --- cards on a real pipeline run -------------------------------------------------------------------

RM_EVAL_PAIRS = [  # the chosen answer is longer in two pairs and shorter in two: a length-balanced value exists
    {
        "prompt": "How do I keep bread fresh?",
        "chosen": "Wrap it in a cloth and keep it in a bread box, away from the fridge.",
        "rejected": "Fridge.",
    },
    {"prompt": "What is rain?", "chosen": "Water falling from clouds once its droplets grow heavy enough.", "rejected": "Rain."},
    {"prompt": "Name a prime.", "chosen": "Seven.", "rejected": "Nine is a prime number, because it is odd and has no factors at all."},
    {
        "prompt": "Is the sun a star?",
        "chosen": "Yes.",
        "rejected": "No, the sun is a planet that happens to glow because it is hot inside.",
    },
]
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:tmp|home|root|work|Users|private|var|mnt)/")


def data_files_of(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file() and p.suffix in (".jsonl", ".txt")}


@pytest.mark.timeout(900)
def test_every_folder_of_a_pipeline_run_has_a_card(tmp_path, tiny_model_path, tiny_reward_model_path, capsys):
    """The real pipeline: generation stages against a fake completions server (the openai backend,
    so the text is known), training stages on tiny models. Every dataset folder gets a dataset card
    that `datasets` loads with the right row counts, every model folder a model card that parses,
    names no path of this machine and has the evaluation table."""
    import datasets
    from huggingface_hub import DatasetCard, ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results
    from test_openai_engine import FakeServer
    from test_pipeline import run, write_config

    questions = iter(QUESTIONS + ["How do tides work?", "What makes bread rise?", "Why do cats purr?"])
    lock = threading.Lock()

    def reply(body, k):
        if "Assistant:" not in body["prompt"]:  # pg: a new question per request
            with lock:
                return " " + next(questions, "Where do rivers begin?")
        # rg and rmsp: an answer that grows with the shots in the prompt (the better configuration
        # writes the longer answer, so cs keeps its pairs) and with the candidate number.
        return " " + "This is a complete answer with a reason. " * (1 + body["prompt"].count("Assistant:") + k)

    server = FakeServer(reply)
    try:
        pairs = tmp_path / "rm-eval-pairs.jsonl"
        pairs.write_text("".join(json.dumps(p) + "\n" for p in RM_EVAL_PAIRS))
        served = {"backend": "openai", "base_url": [server.url]}
        config = {
            "in_process": True,
            "pg": {**served, "num_generation": 3, "batch_size": 3},
            "rg": {
                **served,
                "configurations": [
                    {"prompt_file_path": "faithful_prompt.txt", "n_shot": 1},
                    {"prompt_file_path": "faithful_prompt.txt", "n_shot": 0},
                ],
            },
            "cs": {"rubric": ["smollm2-135m-faithful-1shot", "smollm2-135m-faithful-0shot"]},
            "rm": {
                "train": {
                    "model_name_or_path": tiny_reward_model_path,
                    "max_steps": 1,
                    "per_device_train_batch_size": 2,
                    "eval_fraction": 0.34,
                    "report_to": "none",
                },
                "eval": {"data_path": str(pairs), "plot": False},
            },
            "rmsp": {**served, "model_name_or_path": tiny_model_path, "max_prompts": 2, "num_candidates": 2, "max_turns": 1},
            "sft": {"model_name_or_path": tiny_model_path, "max_steps": 1, "per_device_train_batch_size": 2, "report_to": "none"},
            "rl": {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 4, "report_to": "none"},
        }
        path = write_config(tmp_path / "pipeline.yaml", config)
        out = tmp_path / "run"
        rc, statuses = run(path, out, report=False)
        assert rc == 0 and set(statuses.values()) == {"ran"}, statuses
        # rm eval wrote into rm's card: the model is unchanged, so a rerun skips every step.
        rc, statuses = run(path, out, report=False)
        assert rc == 0 and set(statuses.values()) == {"skipped"}, statuses
    finally:
        server.close()

    models = {p.name for p in out.iterdir() if (p / "config.json").exists()}
    evaluations = {p.name for p in out.iterdir() if (p / "metrics.json").exists()} - models
    datasets_ = {p.name for p in out.iterdir() if p.is_dir() and data_files_of(p)} - models - evaluations
    assert models == {"rm", "sft", "rl"} and evaluations == {"rm_eval"} and datasets_ == {"pg", "rg", "cs", "rmsp"}

    expected_rows = {"pg": {"prompts": 3}, "cs": {"comparisons": 3}, "rmsp": {"demonstrations": 2}}
    for name in sorted(datasets_):
        folder = out / name
        loaded_card = DatasetCard.load(folder / "README.md")
        assert not ABSOLUTE_PATH.search(loaded_card.content) and str(tmp_path) not in loaded_card.content, name
        card = loaded_card.data.to_dict()
        listed = {f for stage in card["almost"]["stages"].values() for f in stage["files"].values()}
        # A file outside the table must at least be named (pg's rounds log).
        assert all(f"{f}:" in loaded_card.text for f in data_files_of(folder) - listed), f"{name}: data files the card does not name"
        configs = {c["config_name"]: c["data_files"][0]["path"] for c in card["configs"]}
        assert configs, name
        for config_name, file in configs.items():
            rows = count_rows(folder / file)
            assert rows > 0 and expected_rows.get(name, {}).get(config_name, rows) == rows, (name, config_name, rows)
            loaded = datasets.load_dataset(str(folder), config_name, cache_dir=str(tmp_path / "cache"))
            assert loaded["train"].num_rows == rows, (name, config_name)
        default = next(c["config_name"] for c in card["configs"] if c.get("default"))
        assert datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))["train"].num_rows == count_rows(
            folder / configs[default]
        )

    for name in sorted(models):
        text = (out / name / "README.md").read_text()
        assert not ABSOLUTE_PATH.search(text) and str(tmp_path) not in text, f"{name}: {ABSOLUTE_PATH.search(text)}"
        card = ModelCard.load(out / name / "README.md")
        model_name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
        assert model_name == name and "## Evaluation\n\n| data | measure | value |" in text
        found = {(r.dataset_name, r.metric_name): r.metric_value for r in results}
        for (dataset_name, metric), value in found.items():
            assert f"| {metric} | {value:.3f} |" in text, (name, dataset_name, metric)
    rm = {(r.dataset_name, r.metric_name): r.metric_value for r in ModelCard.load(out / "rm" / "README.md").data.eval_results}
    held, evaluated = (
        json.loads((out / "rm" / "metrics.json").read_text())["heldout"],
        json.loads((out / "rm_eval" / "metrics.json").read_text()),
    )
    assert rm[("held-out comparisons", "rubric agreement")] == held["accuracy"]
    assert rm[("rm-eval-pairs.jsonl", "accuracy (agreement with the labels)")] == evaluated["accuracy"]
    assert rm[("rm-eval-pairs.jsonl", "length-balanced accuracy")] == evaluated["length_balanced"]["accuracy"]
    assert rm[("rm-eval-pairs.jsonl", "'prefer the longer answer' baseline")] == evaluated["length_bias"]["length_only_accuracy"] == 0.5
    sft = {r.metric_name: r.metric_value for r in ModelCard.load(out / "sft" / "README.md").data.eval_results}
    assert sft["loss, last logged step"] == json.loads((out / "sft" / "metrics.json").read_text())["train"]["last_loss"]
    rl = {r.metric_name: r.metric_value for r in ModelCard.load(out / "rl" / "README.md").data.eval_results}
    assert {"mean reward, last logged step", "KL to the reference policy, last logged step"} <= set(rl)
    assert "**Base model:** `sft`" in (out / "rl" / "README.md").read_text()
    assert f"**Base model:** `.../{Path(tiny_model_path).name}`" in (out / "sft" / "README.md").read_text()


def test_rm_eval_adds_its_results_to_the_card_of_our_reward_model_only(tmp_path, tiny_reward_model_path):
    import shutil

    from huggingface_hub import ModelCard

    from almost.cards import write_model_card
    from almost.reward.evaluate import RewardEvalConfig, run_rm_eval

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in RM_EVAL_PAIRS))
    ours, theirs = tmp_path / "run" / "rm", tmp_path / "theirs"
    shutil.copytree(tiny_reward_model_path, ours)
    write_model_card(
        ours,
        RM_TRAIN,
        base_model="smollm2-135m",
        facts={"Data": "`cs/comparison.jsonl`"},
        hyperparameters={"learning_rate": 1e-3},
        evaluations=[],
    )
    shutil.copytree(tiny_reward_model_path, theirs)
    (theirs / "README.md").write_text("---\nlicense: mit\n---\n# someone else's reward model\n")

    def evaluate(model, out, **kw):
        return run_rm_eval(
            RewardEvalConfig(model_name_or_path=str(model), data_path=str(pairs), output_dir=str(tmp_path / out), plot=False, **kw)
        )

    metrics = evaluate(ours, "eval")
    card = ModelCard.load(ours / "README.md")
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results == {
        "accuracy (agreement with the labels)": metrics["accuracy"],
        "length-balanced accuracy": metrics["length_balanced"]["accuracy"],
        "'prefer the longer answer' baseline": 0.5,
        "Spearman(reward, answer length)": metrics["length_bias"]["spearman_reward_length"],
    }
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and {r.dataset_type for r in card.data.eval_results} == {
        ".../pairs.jsonl"
    }
    low, high = metrics["length_balanced"]["ci95"]
    assert (
        f"| length-balanced accuracy | {metrics['length_balanced']['accuracy']:.3f} | {low:.3f}–{high:.3f} | 4 | `almost rm eval` |"
        in card.text
    )
    # The same data again replaces its rows; switched off, or on a model that is not ours, nothing changes.
    evaluate(ours, "again")
    assert len(ModelCard.load(ours / "README.md").data.eval_results) == 4
    before = {p: p.read_bytes() for p in (ours / "README.md", theirs / "README.md")}
    evaluate(ours, "off", update_model_card=False)
    evaluate(theirs, "theirs")
    evaluate(tiny_reward_model_path, "plain")
    assert {p: p.read_bytes() for p in before} == before and not (Path(tiny_reward_model_path) / "README.md").exists()


def test_cards_show_paths_inside_the_run_only(tmp_path):
    from almost.cards import hub_base_model, shown_path

    run = tmp_path / "run"
    (run / "cs").mkdir(parents=True)
    (run / "cs" / "comparison.jsonl").write_text("{}\n")
    assert shown_path(str(run / "cs" / "comparison.jsonl"), run) == "cs/comparison.jsonl"
    assert shown_path(str(tmp_path / "elsewhere" / "model"), run) == ".../model"
    assert shown_path("hh-harmless-test", run) == "hh-harmless-test" and shown_path("org/model", run) == "org/model"
    assert shown_path("http://user:pw@host:8100", run) == "http://<redacted>@host:8100"
    assert [hub_base_model(m) for m in ("org/model", "smollm2-135m", str(run))] == [
        "org/model",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        None,
    ]
