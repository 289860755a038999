"""RG: answer rules, prompt building, naming, resume after a kill, shards and merge, the real model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import SMOLLM2_FILES
from scripted_engine import ScriptedEngine

from almost import cli, shipped
from almost.config import stage_parser
from almost.engines import Sampling
from almost.engines.hf import HFEngine
from almost.errors import AlmostError
from almost.feedback import demos
from almost.feedback.merge import MergeArguments, run_merge
from almost.feedback.rg import RGArguments, _resume_settings, answer_row, configurations, run_rg
from almost.models import load_tokenizer
from almost.readers import read_jsonl
from almost.reward.formats import parse_transcript

PROMPTS = ["How do I boil an egg?", "Why is the sea salty?", "Name a prime number.", "What is rain?", "Tell me a joke."]
GOOD = "This is a perfectly reasonable answer that is long enough to count as usable."


def write_prompts(directory: Path, prompts=PROMPTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prompts.txt"
    path.write_text("".join(p + "\n" for p in prompts))
    return path


def rows_of(path: Path) -> list[dict]:
    return read_jsonl(path)


def echo_engine() -> ScriptedEngine:
    """Answers with the question it was asked, then runs on into the next turn (which must be cut)."""

    def respond(prompt: str, i: int) -> str:
        question = prompt.rsplit("Human: ", 1)[1].split("\n", 1)[0]
        return f" You asked: {question} {GOOD}\n\nHuman: and another thing"

    return ScriptedEngine(respond)


# --- answer rules and prompts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, reasons",
    [
        (GOOD, []),
        ("Too short.", ["too_short"]),
        (GOOD[:-1] + "?", ["ends_with_question_or_colon", "no_final_period"]),
        (GOOD[:-1] + ":", ["ends_with_question_or_colon", "no_final_period"]),
        ("Well, " + GOOD, ["starts_with_well"]),
        (GOOD[:-1], ["no_final_period"]),
        (GOOD + " Wow!", []),
        ("I don't know much about this, but " + GOOD, ["dont_know"]),
        ("I do not know much about this, but " + GOOD, ["dont_know"]),
        (GOOD + " Human: hi.", ["echoes_human"]),
        ("<Image> " + GOOD, ["mentions_image"]),
        ("", ["too_short"]),
        # A short answer that declines is an answer: the minimum length for one is 20 characters.
        ("I'm sorry, but I can't assist with that.", []),
        ("I cannot help with that.", []),
        ("I’m sorry, I won’t do that.", []),
        ("Sorry, no.", ["too_short"]),
        ("I'm sorry, but I can't help with", ["no_final_period"]),
        ("Sure, I can do that.", ["too_short"]),
    ],
)
def test_bad_answer_rules(answer, reasons):
    assert demos.bad_answer_reasons(answer) == reasons


def test_cut_answer_at_separator_and_next_turn():
    assert demos.cut_answer(" Fine answer.\n\nHuman: next") == "Fine answer."
    assert demos.cut_answer(" Fine answer.\n-----\nHuman: x") == "Fine answer."
    assert demos.cut_answer("No stop at all.") == "No stop at all."


def test_answer_row_cuts_and_marks():
    row = answer_row(3, "q", f" {GOOD}\nHuman: more", "cfg")
    assert row == {"index": 3, "prompt": "q", "response": GOOD, "bad": False, "bad_reasons": [], "config": "cfg"}
    assert answer_row(0, "q", " Well", "cfg")["bad"] is True


def test_project_demonstration_files_parse_and_differ_in_quality():
    better = demos.load_demonstrations(shipped.BETTER_DEMONSTRATIONS)
    worse = demos.load_demonstrations(shipped.WORSE_DEMONSTRATIONS)
    assert (better.name, worse.name) == ("faithful", "basic")
    assert len(better.dialogues) >= 5 and len(worse.dialogues) >= 5
    assert any(d.count("Human:") > 1 for d in better.dialogues)
    # The contrast is real: the better file's answers are several times longer.
    assert sum(map(len, better.dialogues)) > 4 * sum(map(len, worse.dialogues))
    for d in (*better.dialogues, *worse.dialogues):  # every demonstrated answer passes the answer rules
        for turn in d.split("\n\nHuman:"):
            assert demos.bad_answer_reasons(turn.split("Assistant:", 1)[1]) == []


def test_harmless_assets_are_selectable_by_name_and_decline_with_a_reason(tmp_path):
    from almost.feedback.pg import read_prompt_file

    config = RGArguments(output_dir=str(tmp_path), prompt_file_path=["harmless_prompt.txt"], n_shot=[2])
    (c,) = configurations(config)
    assert c.name == "smollm2-135m-harmless-2shot" and c.demos == demos.load_demonstrations(shipped.HARMLESS_DEMONSTRATIONS)
    answers = [d.split("\n\nAssistant:", 1)[1].strip() for d in c.demos.dialogues]
    declines = [a for a in answers if a.startswith(("I won't", "I can't"))]
    # Declines and full answers alternate, so even 2 shots show both (a file of refusals would teach refusing).
    assert 3 <= len(declines) < len(answers) and answers[0] in declines and answers[1] not in declines
    for answer in declines:  # the decline and its reason in the first paragraph, then a safe alternative
        first, *rest = answer.split("\n\n")
        assert first.count(". ") >= 1 and rest and sum(map(len, rest)) > len(first)
    for d in c.demos.dialogues:  # every demonstrated answer passes the answer rules
        for turn in d.split("\n\nHuman:"):
            assert demos.bad_answer_reasons(turn.split("Assistant:", 1)[1]) == []
    seeds = read_prompt_file("seed_prompts_harmless.txt")
    assert seeds == read_prompt_file(shipped.HARMLESS_SEED_PROMPTS) and len(seeds.seeds) >= 30
    # The harmful requests are new; some everyday seeds are shared with the default file.
    assert "harmful" in seeds.instruction and len(set(seeds.seeds) - set(read_prompt_file(shipped.SEED_PROMPTS).seeds)) >= 15
    # The defaults are untouched: a local file of the same name still wins over the asset.
    (tmp_path / "harmless_prompt.txt").write_text("Header.\n-----\nHuman: hi\n\nAssistant: Hello there, how can I help you today?\n")

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert demos.load_demonstrations("harmless_prompt.txt").header == "Header."
    finally:
        os.chdir(cwd)


def test_prompt_is_header_first_n_dialogues_then_the_question(tmp_path):
    config = RGArguments(output_dir=str(tmp_path), n_shot=[2])
    (c,) = configurations(config)
    prompt = c.prompt("What is rain?")
    d = c.demos
    assert prompt.startswith(d.header + "\n-----\n" + d.dialogues[0] + "\n-----\n" + d.dialogues[1] + "\n-----")
    assert d.dialogues[2] not in prompt
    assert prompt.endswith("-----\n\nHuman: What is rain?\n\nAssistant:")


def test_configuration_names_cartesian_product(tmp_path):
    config = RGArguments(
        output_dir=str(tmp_path),
        model_name_or_path="meta-llama/Llama-2-7b-hf",
        prompt_file_path=[str(shipped.BETTER_DEMONSTRATIONS), str(shipped.WORSE_DEMONSTRATIONS)],
        n_shot=[1, 3],
    )
    assert [c.name for c in configurations(config)] == [
        "llama-2-7b-hf-faithful-1shot",
        "llama-2-7b-hf-faithful-3shot",
        "llama-2-7b-hf-basic-1shot",
        "llama-2-7b-hf-basic-3shot",
    ]
    assert configurations(RGArguments(output_dir="d"))[0].name == "smollm2-135m-faithful-3shot"


def test_a_config_file_value_for_a_list_option_is_one_entry(tmp_path):
    """As on the command line (``--n_shot 3``): not a number to iterate over, nor a path's letters."""
    config = tmp_path / "c.yaml"
    config.write_text(f"n_shot: 1\nprompt_file_path: {shipped.WORSE_DEMONSTRATIONS}\n")
    parser = stage_parser([RGArguments], "almost rg")
    (parsed,) = parser.parse_args_and_config(["--config", str(config), "--output_dir", str(tmp_path / "out")])
    assert parsed.n_shot == [1] and parsed.prompt_file_path == [str(shipped.WORSE_DEMONSTRATIONS)]
    assert [c.name for c in configurations(parsed)] == ["smollm2-135m-basic-1shot"]


def test_too_many_shots_and_duplicate_configurations_are_errors(tmp_path):
    with pytest.raises(AlmostError, match="asked for 99 demonstrations"):
        configurations(RGArguments(output_dir=str(tmp_path), n_shot=[99]))
    with pytest.raises(AlmostError, match="twice"):
        configurations(RGArguments(output_dir=str(tmp_path), n_shot=[1, 1]))


# --- the stage with a scripted engine --------------------------------------------------------------


def test_rg_writes_one_row_per_prompt_with_seed_sampling(tmp_path):
    write_prompts(tmp_path)
    engine = echo_engine()
    summary = run_rg(RGArguments(output_dir=str(tmp_path), n_shot=[0, 1], chunk_size=2), engine=engine)
    assert set(summary) == {"smollm2-135m-faithful-0shot", "smollm2-135m-faithful-1shot"}
    rows = rows_of(tmp_path / "smollm2-135m-faithful-1shot.jsonl")
    assert [r["index"] for r in rows] == list(range(len(PROMPTS)))
    assert [r["prompt"] for r in rows] == PROMPTS
    assert rows[1]["response"] == f"You asked: {PROMPTS[1]} {GOOD}"
    assert all(not r["bad"] and r["config"] == "smollm2-135m-faithful-1shot" for r in rows)
    _, sampling = engine.calls[0]
    assert (sampling.temperature, sampling.top_p, sampling.max_new_tokens, sampling.stop) == (1.0, 0.9, 256, demos.ANSWER_STOP)
    assert len(engine.calls) == 2 * 3  # 2 configurations x 3 chunks of at most 2 prompts
    assert not list(tmp_path.glob("*.partial*"))
    # Finished outputs make a rerun a no-op.
    again = echo_engine()
    run_rg(RGArguments(output_dir=str(tmp_path), n_shot=[0, 1], chunk_size=2), engine=again)
    assert again.calls == []


def test_unicode_line_separators_stay_inside_their_prompt_and_answer(tmp_path):
    """JSON leaves U+2028, U+2029 and U+0085 raw: a 1,000-prompt run died reading back an answer that
    held one (its dataset card split the line). Prompts and rows are split at "\\n" only."""
    prompts = ["Two lines\u2028in one prompt?", "And\x85this one?", *PROMPTS]
    write_prompts(tmp_path, prompts)
    summary = run_rg(RGArguments(output_dir=str(tmp_path), n_shot=[1]), engine=ScriptedEngine(lambda p, i: f" {GOOD}\u2029{GOOD}"))
    rows = read_jsonl(tmp_path / "smollm2-135m-faithful-1shot.jsonl")
    assert [r["prompt"] for r in rows] == prompts and summary["smollm2-135m-faithful-1shot"]["rows"] == len(prompts)
    assert all("\u2029" in r["response"] for r in rows)


def test_bad_rows_are_kept(tmp_path):
    write_prompts(tmp_path)
    run_rg(RGArguments(output_dir=str(tmp_path)), engine=ScriptedEngine(lambda p, i: " Well, maybe?"))
    rows = rows_of(tmp_path / "smollm2-135m-faithful-3shot.jsonl")
    assert len(rows) == len(PROMPTS) and all(r["bad"] for r in rows)
    assert "starts_with_well" in rows[0]["bad_reasons"]


@pytest.mark.parametrize("content, message", [(None, "prompts file not found"), ("\n\n", "is empty")])
def test_missing_or_empty_prompts_are_errors(tmp_path, content, message):
    if content is not None:
        (tmp_path / "prompts.txt").write_text(content)
    with pytest.raises(AlmostError, match=message):
        run_rg(RGArguments(output_dir=str(tmp_path)), engine=echo_engine())
    assert not list(tmp_path.glob("*.jsonl*"))


class KilledAfter:
    """Delegates to an engine and dies (like a kill) on call number ``calls + 1``."""

    name = "killed"

    def __init__(self, engine, calls: int):
        self.engine, self.left = engine, calls

    def generate(self, prompts, sampling: Sampling, desc=None):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.engine.generate(prompts, sampling, desc)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_path):
    """A real (tiny, random) model samples, so every row depends on the seeding of its chunk."""
    engine = HFEngine(tiny_model_path, batch_size=2)
    settings = dict(
        model_name_or_path=tiny_model_path,
        prompt_file_path=[str(shipped.WORSE_DEMONSTRATIONS)],
        n_shot=[1],
        max_new_tokens=8,
        chunk_size=2,
        seed=7,
    )
    name = f"{Path(tiny_model_path).name.lower()}-basic-1shot"

    whole = tmp_path / "whole"
    write_prompts(whole)
    run_rg(RGArguments(output_dir=str(whole), **settings), engine=engine)
    expected = (whole / f"{name}.jsonl").read_text()

    resumed = tmp_path / "resumed"
    write_prompts(resumed)
    with pytest.raises(KeyboardInterrupt):
        run_rg(RGArguments(output_dir=str(resumed), **settings), engine=KilledAfter(engine, calls=2))
    partial = resumed / f"{name}.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 4 and not (resumed / f"{name}.jsonl").exists()
    # Also tear the last chunk apart, as a kill in the middle of writing it would.
    lines = partial.read_text().splitlines(keepends=True)
    partial.write_text(lines[0] + lines[1] + lines[2] + lines[3][:10])
    run_rg(RGArguments(output_dir=str(resumed), **settings), engine=engine)
    assert (resumed / f"{name}.jsonl").read_text() == expected
    assert not partial.exists()

    # A different seed is a different run: resuming its partial output with this one is refused.
    other = tmp_path / "other"
    write_prompts(other)
    with pytest.raises(KeyboardInterrupt):
        run_rg(RGArguments(output_dir=str(other), **settings), engine=KilledAfter(engine, calls=1))
    with pytest.raises(AlmostError, match="different settings"):
        run_rg(RGArguments(output_dir=str(other), **{**settings, "seed": 8}), engine=engine)
    run_rg(RGArguments(output_dir=str(other), overwrite=True, **{**settings, "seed": 8}), engine=engine)
    assert (other / f"{name}.jsonl").read_text() != expected


# --- shards and merge ------------------------------------------------------------------------------


def test_shards_are_disjoint_and_merge_to_the_whole(tmp_path):
    write_prompts(tmp_path)
    for i in range(3):
        run_rg(RGArguments(output_dir=str(tmp_path), n_shot=[1], shard=f"{i}/3"), engine=echo_engine())
    name = "smollm2-135m-faithful-1shot"
    shard_indices = [[r["index"] for r in rows_of(tmp_path / f"{name}.shard-{i}-of-3.jsonl")] for i in range(3)]
    assert shard_indices == [[0, 3], [1, 4], [2]]
    assert run_merge(MergeArguments(output_dir=str(tmp_path))) == {name: len(PROMPTS)}

    whole = tmp_path / "whole"
    write_prompts(whole)
    run_rg(RGArguments(output_dir=str(whole), n_shot=[1]), engine=echo_engine())
    assert (tmp_path / f"{name}.jsonl").read_text() == (whole / f"{name}.jsonl").read_text()


def merge_error(capsys, directory) -> str:
    from almost import cli

    capsys.readouterr()  # progress bars of the runs before
    assert cli.main(["merge", "--output_dir", str(directory)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_merge_refuses_incomplete_overlapping_or_foreign_shards(tmp_path, capsys):
    write_prompts(tmp_path)
    name = "smollm2-135m-faithful-1shot"
    run_rg(RGArguments(output_dir=str(tmp_path), n_shot=[1], shard="0/2"), engine=echo_engine())
    assert "shard(s) 1 of 2 are missing" in merge_error(capsys, tmp_path)

    run_rg(RGArguments(output_dir=str(tmp_path), n_shot=[1], shard="1/2"), engine=echo_engine())
    shard1 = tmp_path / f"{name}.shard-1-of-2.jsonl"
    good = shard1.read_text()
    first = json.loads(good.splitlines()[0])
    shard1.write_text(good + json.dumps({**first, "index": 0}) + "\n")
    assert "does not belong to shard 1/2" in merge_error(capsys, tmp_path)

    shard1.write_text(good.splitlines(keepends=True)[0])  # drops index 3
    assert "expected 5" in merge_error(capsys, tmp_path)

    shard1.write_text(good)
    write_prompts(tmp_path, [*PROMPTS[:3], "A different question?", PROMPTS[4]])
    assert "prompt 3 differs from prompts.txt" in merge_error(capsys, tmp_path)
    assert not (tmp_path / f"{name}.jsonl").exists()


def test_select_makes_only_the_named_configurations(tmp_path):
    write_prompts(tmp_path)
    files = [str(shipped.BETTER_DEMONSTRATIONS), str(shipped.WORSE_DEMONSTRATIONS)]
    config = RGArguments(
        output_dir=str(tmp_path), prompt_file_path=files, n_shot=[1, 0], select=["smollm2-135m-faithful-1shot", "smollm2-135m-basic-0shot"]
    )
    summary = run_rg(config, engine=echo_engine())
    assert sorted(summary) == ["smollm2-135m-basic-0shot", "smollm2-135m-faithful-1shot"]
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["smollm2-135m-basic-0shot.jsonl", "smollm2-135m-faithful-1shot.jsonl"]
    with pytest.raises(AlmostError, match="--select names 'smollm2-135m-basic-3shot'"):
        configurations(RGArguments(output_dir=str(tmp_path), prompt_file_path=files, n_shot=[1], select=["smollm2-135m-basic-3shot"]))


# --- --chat_format: the demonstrations as chat turns in the model's template ----------------------


def chat_config(tmp_path, **settings) -> RGArguments:
    """The fixture checkpoint's tokenizer (SmolLM2-135M-Instruct's, with its chat template)."""
    return RGArguments(output_dir=str(tmp_path), model_name_or_path=str(SMOLLM2_FILES), chat_format=True, **settings)


def test_chat_prompt_is_header_as_system_then_the_demonstrations_then_the_question(tmp_path):
    (c,) = configurations(chat_config(tmp_path, prompt_file_path=["harmless_prompt.txt"], n_shot=[2]))
    prompt = c.prompt("What is rain?", load_tokenizer(str(SMOLLM2_FILES)))
    d = c.demos
    assert prompt.startswith(f"<|im_start|>system\n{d.header}<|im_end|>\n")
    turns = [m for dialogue in d.dialogues[:2] for m in parse_transcript(dialogue)]
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant"]
    positions = [prompt.index(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>") for m in turns]
    assert positions == sorted(positions)
    assert parse_transcript(d.dialogues[2])[0]["content"] not in prompt
    assert "Human:" not in prompt and "-----" not in prompt
    assert prompt.endswith("<|im_start|>user\nWhat is rain?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_configurations_are_named_apart_and_default_prompts_are_unchanged(tmp_path):
    files = ["harmless_prompt.txt", str(shipped.WORSE_DEMONSTRATIONS)]
    chat = configurations(chat_config(tmp_path, prompt_file_path=files, n_shot=[2, 0]))
    assert [c.name for c in chat] == [
        "smollm2-135m-harmless-2shot-chat",
        "smollm2-135m-harmless-0shot-chat",
        "smollm2-135m-basic-2shot-chat",
        "smollm2-135m-basic-0shot-chat",
    ]
    assert [
        c.name for c in configurations(chat_config(tmp_path, prompt_file_path=files, n_shot=[2], select=["smollm2-135m-basic-2shot-chat"]))
    ] == ["smollm2-135m-basic-2shot-chat"]
    with pytest.raises(AlmostError, match="--select names 'smollm2-135m-basic-2shot'"):
        configurations(chat_config(tmp_path, prompt_file_path=files, n_shot=[2], select=["smollm2-135m-basic-2shot"]))
    (plain,) = configurations(RGArguments(output_dir=str(tmp_path), prompt_file_path=["harmless_prompt.txt"], n_shot=[2]))
    assert plain.name == "smollm2-135m-harmless-2shot"
    assert plain.prompt("What is rain?") == plain.demos.static_prompt(2) + "\n\nHuman: What is rain?\n\nAssistant:"


def test_chat_format_is_part_of_the_resume_fingerprint(tmp_path):
    plain_config = RGArguments(output_dir=str(tmp_path), n_shot=[1])
    chat = chat_config(tmp_path, n_shot=[1])
    (c,) = configurations(chat)
    plain = _resume_settings(plain_config, c, PROMPTS, None, "m")
    assert "chat_format" not in plain  # outputs made before the option stay current
    assert _resume_settings(chat, c, PROMPTS, None, "m") == {**plain, "chat_format": True}


def test_chat_run_sends_templated_prompts_and_keeps_the_answer_rules(tmp_path):
    write_prompts(tmp_path)
    engine = ScriptedEngine(lambda prompt, i: f"{GOOD}\n\nHuman: and another thing")
    summary = run_rg(chat_config(tmp_path, n_shot=[1], chunk_size=2), engine=engine)
    name = "smollm2-135m-faithful-1shot-chat"
    assert list(summary) == [name]
    prompts, sampling = engine.calls[0]
    assert prompts[0].startswith("<|im_start|>system\n") and prompts[0].endswith(
        f"<|im_start|>user\n{PROMPTS[0]}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert sampling.stop == demos.ANSWER_STOP
    rows = rows_of(tmp_path / f"{name}.jsonl")
    assert [r["prompt"] for r in rows] == PROMPTS
    assert all(r["response"] == GOOD and not r["bad"] and r["config"] == name for r in rows)


def test_chat_format_without_a_chat_template_is_one_error_line(tmp_path, capsys):
    model = tmp_path / "no-template"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SMOLLM2_FILES / name, model / name)
    out = tmp_path / "rg"
    write_prompts(out)
    capsys.readouterr()
    argv = ["rg", "--output_dir", str(out), "--model_name_or_path", str(model), "--backend", "hf", "--chat_format"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"almost rg: error: --chat_format renders prompts with the model's chat template, and {model} has none"], err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["prompts.txt"]


def test_almost_rg_chat_format_on_a_tiny_model(tmp_path, tiny_model_path):
    out = tmp_path / "rg"
    write_prompts(out)
    argv = [
        "rg",
        "--output_dir",
        str(out),
        "--model_name_or_path",
        tiny_model_path,
        "--backend",
        "hf",
        "--chat_format",
        "--prompt_file_path",
        "harmless_prompt.txt",
        "--n_shot",
        "1",
        "--max_new_tokens",
        "8",
        "--batch_size",
        "2",
    ]
    assert cli.main(argv) == 0
    rows = rows_of(out / f"{Path(tiny_model_path).name.lower()}-harmless-1shot-chat.jsonl")
    assert [r["index"] for r in rows] == list(range(len(PROMPTS)))
    assert all(isinstance(r["response"], str) for r in rows)


def test_chat_format_refuses_a_served_model(tmp_path):
    with pytest.raises(ValueError, match="--chat_format needs the model's tokenizer"):
        RGArguments(output_dir=str(tmp_path), chat_format=True, backend="openai", base_url=["http://127.0.0.1:8000/v1"])
