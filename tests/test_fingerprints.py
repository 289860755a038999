"""Reruns never reuse stale output: every finished output carries the fingerprint of the settings and
input *contents* that made it; a rerun with others stops with one line naming --overwrite (exit 2),
and --overwrite makes it again. Also: content-keyed caches (pairwise answers, GGUF conversions) and
a pipeline fingerprint that leaves out what does not decide a result (the cache folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import build_tiny_model
from scripted_engine import ScriptedEngine
from test_pg import pg_config, scripted_query
from test_rg import echo_engine, write_prompts

from almost import cli
from almost.digests import digest_file, digest_model
from almost.errors import AlmostError
from almost.resumable import output_is_current, record_settings, settings_path


def one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --- io: the sidecar and content digests ---------------------------------------------------------


def test_output_is_current_names_what_changed(tmp_path):
    out = tmp_path / "x.jsonl"
    assert output_is_current(out, {"a": 1}) is False  # nothing there yet
    record_settings(out, {"a": 1, "b": "same"})
    out.write_text("{}\n")
    assert output_is_current(out, {"a": 1, "b": "same"}) is True
    with pytest.raises(AlmostError, match=r"\(a 1 → 2\); pass --overwrite"):
        output_is_current(out, {"a": 2, "b": "same"})
    settings_path(out).unlink()  # an output from before fingerprints: refused, not trusted
    with pytest.raises(AlmostError, match="records no settings.*--overwrite"):
        output_is_current(out, {"a": 1, "b": "same"})


def test_model_digest_follows_weights_and_tokenizer_not_logs_or_checkpoints(tmp_path):
    model = tmp_path / "rm"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama", "num_labels": 1}')
    (model / "tokenizer.json").write_text('{"v": 1}')
    (model / "model.safetensors").write_bytes(b"\x08" + bytes(1000))
    before = digest_model(model)
    # What does not change the model's behaviour: card, logs, markers, intermediate checkpoints.
    (model / "README.md").write_text("card with /home/me/paths")
    (model / "metrics.json").write_text("{}")
    (model / ".almost-step.json").write_text("{}")
    (model / "checkpoint-5").mkdir()
    (model / "checkpoint-5" / "model.safetensors").write_bytes(b"other")
    assert digest_model(model) == before
    # Same size, other weights (retrained in place): another model.
    (model / "model.safetensors").write_bytes(b"\x08" + bytes(999) + b"\x01")
    assert digest_model(model) != before
    after_weights = digest_model(model)
    (model / "tokenizer.json").write_text('{"v": 2}')
    assert digest_model(model) != after_weights
    assert digest_model("owner/hub-model") == "owner/hub-model"  # not local: the name is all we have


def test_large_files_are_sampled_and_still_see_the_last_tensors(tmp_path, monkeypatch):
    import almost.digests as digests

    monkeypatch.setattr(digests, "CONTENT_HASH_LIMIT", 4 * 2**20)
    path = tmp_path / "model.safetensors"
    data = bytearray(16 * 2**20)
    path.write_bytes(data)
    before = digest_file(path)
    data[-10] = 1  # a score head at the end of the file
    path.write_bytes(data)
    assert digest_file(path) != before
    header = digest_file(path)
    data[5] = 1  # the header
    path.write_bytes(data)
    assert digest_file(path) != header


# --- pg --------------------------------------------------------------------------------------------


def test_pg_refuses_a_finished_output_made_with_other_settings(tmp_path):
    from almost.feedback.pg import run_pg

    config = pg_config(tmp_path, num_generation=5)
    run_pg(config, ScriptedEngine(scripted_query))
    first = (tmp_path / "out" / "prompts.txt").read_text()
    config.temperature = 0.5
    with pytest.raises(AlmostError, match=r"prompts\.txt was made with different settings.*temperature 1\.2 → 0\.5.*--overwrite"):
        run_pg(config, ScriptedEngine(scripted_query))
    # More prompts asked for: --num_generation only decides when to stop, so the run goes on from its
    # logged rounds (tests/test_pg.py) and its first prompts stay.
    config.temperature, config.num_generation = 1.2, 6
    run_pg(config, ScriptedEngine(scripted_query))
    assert (tmp_path / "out" / "prompts.txt").read_text().startswith(first)
    config.num_generation = 5
    # The seed file edited in place (same path): its contents are in the fingerprint.
    seeds = Path(config.prompt_file_path)
    seeds.write_text(seeds.read_text() + "How do volcanoes form under the sea floor?\n")
    with pytest.raises(AlmostError, match="seeds"):
        run_pg(config, ScriptedEngine(scripted_query))
    config.overwrite = True
    stats = run_pg(config, ScriptedEngine(scripted_query))
    assert stats.get("skipped") is None and stats["seeds"] == 13
    assert (tmp_path / "out" / "prompts.txt").read_text() != first


# --- rg, merge, cs ---------------------------------------------------------------------------------


def test_rg_refuses_other_settings_and_an_edited_demonstration_file(tmp_path):
    from almost import shipped

    out = tmp_path / "out"
    write_prompts(out)
    demo_file = tmp_path / "mine_prompt.txt"
    shutil.copy(shipped.BETTER_DEMONSTRATIONS, demo_file)
    from almost.feedback.rg import RGArguments, run_rg

    def run(*extra, **overrides):
        args = dict(output_dir=str(out), prompt_file_path=[str(demo_file)], n_shot=[1], model_name_or_path="scripted/echo")
        return run_rg(RGArguments(**{**args, **overrides}), engine=echo_engine())

    run()
    final = out / "echo-mine-1shot.jsonl"
    assert final.exists() and settings_path(final).exists()
    assert run()["echo-mine-1shot"]["skipped"] is True  # same settings: reused
    with pytest.raises(AlmostError, match=r"echo-mine-1shot\.jsonl was made with different settings.*--overwrite"):
        run(temperature=0.5)
    # Edited in place: same path, other dialogues.
    text = demo_file.read_text()
    demo_file.write_text(text.replace("Human:", "Human: Please,", 1))
    with pytest.raises(AlmostError, match="demonstrations"):
        run()
    summary = run(overwrite=True)
    assert summary["echo-mine-1shot"]["rows"] == 5 and "skipped" not in summary["echo-mine-1shot"]


def test_merge_refuses_a_merged_file_older_than_its_shards_and_cs_too(tmp_path, capsys):
    from almost.feedback.merge import MergeArguments, run_merge
    from almost.feedback.rg import RGArguments, run_rg

    write_prompts(tmp_path)
    for i in range(2):
        run_rg(RGArguments(output_dir=str(tmp_path), n_shot=[1], shard=f"{i}/2"), engine=echo_engine())
    name = "smollm2-135m-faithful-1shot"
    assert run_merge(MergeArguments(output_dir=str(tmp_path))) == {name: 5}
    assert run_merge(MergeArguments(output_dir=str(tmp_path))) == {}  # up to date: skipped
    merged = (tmp_path / f"{name}.jsonl").read_text()

    # Shard 1 is made again with another temperature after the merge.
    shard = tmp_path / f"{name}.shard-1-of-2.jsonl"
    rows = [json.loads(line) for line in shard.read_text().splitlines()]
    rows[0]["response"] = "A different answer that is long enough to be a usable one."
    shard.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = one_line_error(capsys, ["merge", "--output_dir", str(tmp_path)])
    assert "was made with different settings" in err and "--overwrite" in err
    # cs does not silently take the old merged rows over the newer shards.
    other = [json.loads(line) for line in merged.splitlines()]
    (tmp_path / "big-faithful-1shot.jsonl").write_text(
        "".join(json.dumps({**r, "config": "big-faithful-1shot", "response": r["response"] + " More."}) + "\n" for r in other)
    )
    err = one_line_error(
        capsys, ["cs", "--output_dir", str(tmp_path / "cs"), "--input_dir", str(tmp_path), "--rubric", "big-faithful-1shot", name]
    )
    assert "not the merge of the shards" in err and "almost merge" in err and "--overwrite" in err
    assert not (tmp_path / "cs" / "comparison.jsonl").exists()

    assert run_merge(MergeArguments(output_dir=str(tmp_path), overwrite=True)) == {name: 5}
    assert "A different answer" in (tmp_path / f"{name}.jsonl").read_text()
    assert cli.main(["cs", "--output_dir", str(tmp_path / "cs"), "--input_dir", str(tmp_path), "--rubric", "big-faithful-1shot", name]) == 0


# --- rmsp and rm score: a reward model retrained in the same folder --------------------------------


def fake_reward_model(path: Path, weights: bytes) -> Path:
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text('{"model_type": "llama", "num_labels": 1}')
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_rmsp_refuses_a_changed_reward_model_at_the_same_path(tmp_path, tiny_model_path):
    from test_selfplay import ANSWERS, DEMOS, LengthScorer, follow_up

    from almost.policy.selfplay import RMSPArguments, run_rmsp

    (tmp_path / "demos.txt").write_text(DEMOS)
    (tmp_path / "prompts.txt").write_text("How do plants grow?\nWhy is the sea salty?\n")
    rm = fake_reward_model(tmp_path / "rm", b"weights-1")
    config = RMSPArguments(
        output_dir=str(tmp_path / "out"),
        prompts_path=str(tmp_path / "prompts.txt"),
        reward_model_name_or_path=str(rm),
        model_name_or_path=tiny_model_path,
        prompt_file_path=str(tmp_path / "demos.txt"),
        n_shot=2,
        num_candidates=2,
        max_turns=1,
    )

    def play():
        return run_rmsp(config, policy=ScriptedEngine(lambda p, i: ANSWERS[1 + i]), user=ScriptedEngine(follow_up), scorer=LengthScorer())

    play()
    final = tmp_path / "out" / "demonstrations.jsonl"
    assert final.exists()
    play()  # unchanged: reused
    config.reward_batch_size = 1  # memory knob only: still reused
    play()
    fake_reward_model(rm, b"weights-2")  # retrained in place
    with pytest.raises(
        AlmostError, match=r"demonstrations\.jsonl was made with different settings or inputs \(reward_model '.*--overwrite"
    ):
        play()
    config.overwrite = True
    play()
    assert json.loads(settings_path(final).read_text())["settings"]["reward_model"] == digest_model(rm)


def test_rm_score_refuses_a_retrained_reward_model_at_the_same_path(tmp_path, tiny_reward_model_path, capsys):
    rm = tmp_path / "rm"
    shutil.copytree(tiny_reward_model_path, rm)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}?", "response": "word " * (i + 1)}) + "\n" for i in range(3)))
    args = ["rm", "score", "--model_name_or_path", str(rm), "--data_path", str(data), "--output_dir", str(tmp_path / "s")]
    assert cli.main(args) == 0
    scored = tmp_path / "s" / "scored.jsonl"
    first = [json.loads(line)["reward"] for line in scored.read_text().splitlines()]
    assert cli.main([*args, "--batch_size", "1"]) == 0  # batch size does not change rewards: reused

    build_tiny_model(rm, kind="reward-model", seed=1)  # retrained in place: same path, same sizes
    err = one_line_error(capsys, args)
    assert "scored.jsonl was made with different settings or inputs (model '" in err and "--overwrite" in err
    # The rows edited in place are another input too.
    assert cli.main([*args, "--overwrite", "true"]) == 0
    second = [json.loads(line)["reward"] for line in scored.read_text().splitlines()]
    assert second != pytest.approx(first)
    data.write_text(data.read_text().replace("Question 0?", "Question zero?"))
    assert "(data '" in one_line_error(capsys, args)


# --- pairwise answer cache ------------------------------------------------------------------------


def test_pairwise_answers_are_cached_by_question_text_not_only_id(tmp_path, tiny_model_path):
    from test_eval_pairwise import ScriptedJudge

    from almost.evaluate.pairwise import PairwiseConfig, run_pairwise

    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "text": "What is two plus two?"}) + "\n")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text('{"model_type": "llama"}')
    config = PairwiseConfig(
        model_name_or_path=tiny_model_path,
        baseline_model_name_or_path=str(tmp_path / "base"),
        data_path=str(questions),
        output_dir=str(tmp_path / "e"),
        max_new_tokens=8,
    )
    judged = []
    judge = ScriptedJudge(lambda q, a, b: judged.append((q, a, b)) or (1.0, 0.0))

    def answering(prompt, i):
        return "about " + prompt.split("?")[0].split()[-1]

    def baseline_answering(prompt, i):  # another answer: identical answers are a tie, not judged
        return "not " + answering(prompt, i)

    run_pairwise(config, ScriptedEngine(answering), ScriptedEngine(baseline_answering), judge)
    assert judged[0] == ("What is two plus two?", "about two", "not about two")
    # Same id, another question: answered again, not served the old question's answer.
    questions.write_text(json.dumps({"question_id": 1, "text": "What is the capital of Peru?"}) + "\n")
    judged.clear()
    run_pairwise(config, ScriptedEngine(answering), ScriptedEngine(baseline_answering), judge)
    assert judged[0] == ("What is the capital of Peru?", "about Peru", "not about Peru")


# --- GGUF conversion cache ------------------------------------------------------------------------


def test_gguf_conversion_is_keyed_by_content(tmp_path, monkeypatch):
    from almost import models

    targets = []
    monkeypatch.setattr(models, "convert_gguf", lambda gguf, target: targets.append(target) or target)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    models.resolve_model(str(gguf), cache_dir=str(tmp_path / "cache"))
    models.resolve_model(str(gguf), cache_dir=str(tmp_path / "cache"))
    gguf.write_bytes(b"GGUF" + bytes(99) + b"\x01")  # another file, same path and size
    models.resolve_model(str(gguf), cache_dir=str(tmp_path / "cache"))
    assert targets[0] == targets[1] and targets[2] != targets[0]


# --- the pipeline: what decides a step's result, and only that ----------------------------------


def test_pipeline_ignores_the_cache_folder_and_a_model_folder_s_logs(tmp_path, tiny_model_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_path, model)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("How do I boil an egg?\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    config = {
        "in_process": True,
        "shared": {"cache_dir": str(cache)},
        "rg": {
            "prompts_path": str(prompts),
            "model_name_or_path": str(model),
            "max_new_tokens": 2,
            "batch_size": 1,
            "backend": "hf",
            "configurations": [{"prompt_file_path": "basic_prompt.txt", "n_shot": 0}],
        },
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert cli.main(["pipeline", str(path), "--output_dir", str(out), "--no_report"]) == 0
    capsys.readouterr()
    (cache / "downloaded-meanwhile.bin").write_bytes(b"x")  # the cache changes by itself
    # The model's folder gains a card and a log: not what the model computes.
    (model / "README.md").write_text("a model card")
    (model / "metrics.json").write_text("{}")
    assert cli.main(["pipeline", str(path), "--output_dir", str(out), "--no_report"]) == 0
    printed = capsys.readouterr().out
    assert "unchanged, skipped" in printed and "starting it again" not in printed
    # The prompts edited: the step runs again.
    prompts.write_text("How do I boil two eggs?\n")
    assert cli.main(["pipeline", str(path), "--output_dir", str(out), "--no_report"]) == 0
    assert "starting it again" in capsys.readouterr().out
