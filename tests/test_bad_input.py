"""Every class of bad input (docs/inputs.md): one line on stderr, exit status 2, nothing written.

Each case builds its bad input in a fresh folder and runs the real CLI in process. The check is the
same for all: exit 2, exactly one line on stderr (``almost ...: error: ...``), no traceback, and not
one file or folder added, changed or removed anywhere under the test's folder (the output directory
included, which must not even be created).
"""

from __future__ import annotations

import bz2
import gzip
import json
import shutil
from pathlib import Path

import pytest

from almost.cli import main as cli_main
from almost.shipped import ASSETS, HHH_SAMPLE, TRUTHFULQA_SAMPLE

QUESTIONS = ASSETS / "eval" / "questions.jsonl"
LATIN1 = "caf\xe9 au lait?\n".encode("latin-1")  # not UTF-8


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root`` with (size, mtime) for files: what "nothing written" compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in sorted(root.rglob("*"))}


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def broken_template_model(src: str, tmp: Path) -> str:
    """A copy of the tiny model whose tokenizer's chat template does not compile."""
    target = tmp / "broken-template-model"
    shutil.copytree(src, target)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }"  # unclosed tag
    config_path.write_text(json.dumps(config))
    (target / "chat_template.jinja").unlink(missing_ok=True)
    return str(target)


def model_folder(tmp: Path, config: dict, tokenizer_of: str | None = None) -> str:
    """A folder that looks like a checkpoint: this config.json, no weights, and the tokenizer files of
    the model at ``tokenizer_of`` if given."""
    target = tmp / "model"
    if tokenizer_of:
        shutil.copytree(tokenizer_of, target, ignore=shutil.ignore_patterns("*.safetensors", "config.json", "generation_config.json"))
    write(target / "config.json", json.dumps(config))
    return str(target)


def sft_data(tmp: Path) -> str:
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    return str(write(tmp / "d.jsonl", json.dumps(row) + "\n"))


def pairs_file(tmp: Path, row: dict) -> str:
    return str(write(tmp / "pairs.jsonl", json.dumps(row) + "\n"))


def dpo(tmp: Path, models: dict, data: str) -> list[str]:
    return ["dpo", "--model_name_or_path", models["lm"], "--data_path", data, "--output_dir", str(tmp / "out"), "--max_steps", "1"]


def other_vocabulary(src: str, tmp: Path) -> str:
    """A copy of the tiny model whose tokenizer has one token more."""
    from transformers import AutoTokenizer

    target = tmp / "other-vocabulary"
    shutil.copytree(src, target)
    tokenizer = AutoTokenizer.from_pretrained(src)
    tokenizer.add_tokens(["<an_extra_token>"])
    tokenizer.save_pretrained(target)
    return str(target)


def prompts(tmp: Path) -> str:
    return str(write(tmp / "prompts.txt", "What is a prime number?\nWhy is the sky blue?\n"))


def rg_file(tmp: Path, name: str) -> Path:
    rows = [{"index": 0, "prompt": "p", "response": "r", "bad": False, "bad_reasons": [], "config": name}]
    return write(tmp / "rg" / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def pipeline_yaml(tmp: Path, text: str) -> list[str]:
    return ["pipeline", str(write(tmp / "pipeline.yaml", text)), "--output_dir", str(tmp / "out")]


# name → builder(tmp, models) → argv. ``models`` holds the tiny causal LM and reward model paths.
CASES = {
    # --- command line and --config YAML ---------------------------------------------------------
    "unknown command": lambda t, m: ["frobnicate"],
    "unknown rm subcommand": lambda t, m: ["rm", "frobnicate"],
    "unknown flag": lambda t, m: ["pg", "--output_dir", str(t / "out"), "--no_such_flag", "1"],
    "flag value of the wrong type": lambda t, m: ["pg", "--output_dir", str(t / "out"), "--top_p", "high"],
    "--config without a value": lambda t, m: ["pg", "--output_dir", str(t / "out"), "--config"],
    "--config file missing": lambda t, m: ["pg", "--output_dir", str(t / "out"), "--config", str(t / "nope.yaml")],
    "--config bad YAML": lambda t, m: ["pg", "--config", str(write(t / "c.yaml", "output_dir: [1\n")), "--output_dir", str(t / "out")],
    "--config YAML is a list": lambda t, m: ["pg", "--config", str(write(t / "c.yaml", "- top_p\n")), "--output_dir", str(t / "out")],
    "--config list where a number belongs": lambda t, m: [
        "pg",
        "--config",
        str(write(t / "c.yaml", "top_p: [1, 2]\n")),
        "--output_dir",
        str(t / "out"),
    ],
    "--config text where a number belongs": lambda t, m: [
        "rg",
        "--config",
        str(write(t / "c.yaml", "batch_size: many\n")),
        "--output_dir",
        str(t / "out"),
    ],
    "--config not UTF-8": lambda t, m: [
        "pg",
        "--config",
        str(write(t / "c.yaml", b"top_p: 0.5 # " + LATIN1)),
        "--output_dir",
        str(t / "out"),
    ],
    "--config mapping where a list belongs": lambda t, m: [
        "rg",
        "--config",
        str(write(t / "c.yaml", "n_shot: {a: 1}\n")),
        "--output_dir",
        str(t / "out"),
    ],
    "--config unknown key": lambda t, m: ["pg", "--config", str(write(t / "c.yaml", "no_such_key: 1\n")), "--output_dir", str(t / "out")],
    # --- values out of range -------------------------------------------------------------------
    "--top_p 5": lambda t, m: ["pg", "--output_dir", str(t / "out"), "--top_p", "5"],
    "--temperature -1": lambda t, m: ["rg", "--output_dir", str(t / "out"), "--prompts_path", prompts(t), "--temperature", "-1"],
    "--batch_size 0": lambda t, m: ["rmsp", "--output_dir", str(t / "out"), "--batch_size", "0"],
    "--max_model_len 0": lambda t, m: ["rg", "--output_dir", str(t / "out"), "--prompts_path", prompts(t), "--max_model_len", "0"],
    "--max_new_tokens 0": lambda t, m: ["rg", "--output_dir", str(t / "out"), "--prompts_path", prompts(t), "--max_new_tokens", "0"],
    "rl --num_generations 0": lambda t, m: ["rl", "--output_dir", str(t / "out"), "--num_generations", "0"],
    "truthfulqa --max_questions 0": lambda t, m: [
        "eval",
        "truthfulqa",
        "--data_path",
        str(TRUTHFULQA_SAMPLE),
        "--output_dir",
        str(t / "out"),
        "--max_questions",
        "0",
    ],
    "rg --shard 3/2": lambda t, m: [
        "rg",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        prompts(t),
        "--shard",
        "3/2",
        "--model_name_or_path",
        m["lm"],
    ],
    # --- output and run directories ------------------------------------------------------------
    "--output_dir is a file": lambda t, m: ["pg", "--output_dir", str(write(t / "out", "x"))],
    "report run directory is a file": lambda t, m: ["report", str(write(t / "run", "x"))],
    "pipeline --output_dir is a file": lambda t, m: [
        "pipeline",
        str(write(t / "p.yaml", f"cs: {{input_dir: {t}, rubric: [a, b]}}\n")),
        "--output_dir",
        str(write(t / "run", "x")),
    ],
    # --- data files --------------------------------------------------------------------------
    "prompts file not UTF-8": lambda t, m: [
        "rg",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        str(write(t / "p.txt", b"ok\n" + LATIN1)),
        "--model_name_or_path",
        m["lm"],
    ],
    "prompts file empty": lambda t, m: [
        "rg",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        str(write(t / "p.txt", "\n\n")),
        "--model_name_or_path",
        m["lm"],
    ],
    "prompts file missing": lambda t, m: [
        "rg",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        str(t / "none.txt"),
        "--model_name_or_path",
        m["lm"],
    ],
    "JSONL malformed line": lambda t, m: [
        "rm",
        "score",
        "--model_name_or_path",
        m["rm"],
        "--data_path",
        str(write(t / "d.jsonl", '{"prompt": "a", "response": "b"}\n{"prompt": \n')),
        "--output_dir",
        str(t / "out"),
    ],
    "JSONL not UTF-8": lambda t, m: [
        "rm",
        "score",
        "--model_name_or_path",
        m["rm"],
        "--data_path",
        str(write(t / "d.jsonl", b'{"prompt": "' + LATIN1.strip() + b'"}\n')),
        "--output_dir",
        str(t / "out"),
    ],
    "JSONL row not an object": lambda t, m: [
        "rm",
        "score",
        "--model_name_or_path",
        m["rm"],
        "--data_path",
        str(write(t / "d.jsonl", "[1, 2]\n")),
        "--output_dir",
        str(t / "out"),
    ],
    "JSONL.gz damaged": lambda t, m: [
        "rm",
        "score",
        "--model_name_or_path",
        m["rm"],
        "--data_path",
        str(write(t / "d.jsonl.gz", b"\x1f\x8b\x08\x00garbage")),
        "--output_dir",
        str(t / "out"),
    ],
    "JSONL.gz not UTF-8 inside": lambda t, m: [
        "rm",
        "score",
        "--model_name_or_path",
        m["rm"],
        "--data_path",
        str(write(t / "d.jsonl.gz", gzip.compress(LATIN1))),
        "--output_dir",
        str(t / "out"),
    ],
    "text.bz2 not UTF-8 inside": lambda t, m: [
        "rg",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        str(write(t / "p.txt.bz2", bz2.compress(LATIN1))),
        "--model_name_or_path",
        m["lm"],
    ],
    "JSON not a list of objects": lambda t, m: [
        "rm",
        "score",
        "--model_name_or_path",
        m["rm"],
        "--data_path",
        str(write(t / "d.json", '{"a": 1}')),
        "--output_dir",
        str(t / "out"),
    ],
    "demonstration file without dialogues": lambda t, m: [
        "rg",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        prompts(t),
        "--prompt_file_path",
        str(write(t / "demo_prompt.txt", "A header only.\n")),
        "--model_name_or_path",
        m["lm"],
    ],
    "demonstration file not UTF-8": lambda t, m: [
        "rg",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        prompts(t),
        "--prompt_file_path",
        str(write(t / "demo_prompt.txt", LATIN1)),
        "--model_name_or_path",
        m["lm"],
    ],
    "simulator file not UTF-8": lambda t, m: [
        "rmsp",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        prompts(t),
        "--model_name_or_path",
        m["lm"],
        "--reward_model_name_or_path",
        m["rm"],
        "--user_prompt_file_path",
        str(write(t / "sim.txt", LATIN1)),
    ],
    "question file without question text": lambda t, m: [
        "eval",
        "pairwise",
        "--model_name_or_path",
        m["lm"],
        "--baseline_model_name_or_path",
        m["lm"],
        "--judge",
        f"rm:{m['rm']}",
        "--data_path",
        str(write(t / "q.jsonl", '{"question_id": 1}\n')),
        "--output_dir",
        str(t / "out"),
    ],
    "BIG-bench mixed score types": lambda t, m: [
        "eval",
        "hhh",
        "--model_name_or_path",
        m["lm"],
        "--data_path",
        str(write(t / "task.json", json.dumps({"examples": [{"input": "Hi?", "target_scores": {"Hello.": 1, "Go away.": "0"}}]}))),
        "--output_dir",
        str(t / "out"),
    ],
    "TruthfulQA mixed label types": lambda t, m: [
        "eval",
        "truthfulqa",
        "--model_name_or_path",
        m["lm"],
        "--data_path",
        str(write(t / "tq.jsonl", json.dumps({"question": "Q?", "mc1_targets": {"choices": ["a", "b"], "labels": ["1", 0]}}) + "\n")),
        "--output_dir",
        str(t / "out"),
    ],
    # --- rubric, shards, models ----------------------------------------------------------------
    "rubric given as an absolute path": lambda t, m: [
        "cs",
        "--input_dir",
        str(rg_file(t, "a").parent),
        "--output_dir",
        str(t / "out"),
        "--rubric",
        "/etc/passwd",
        "a",
    ],
    "rubric names a missing configuration": lambda t, m: [
        "cs",
        "--input_dir",
        str(rg_file(t, "a").parent),
        "--output_dir",
        str(t / "out"),
        "--rubric",
        "a",
        "nope",
    ],
    "shard named -of-0": lambda t, m: ["merge", "--output_dir", str(rg_file(t, "a.shard-0-of-0").parent)],
    "model name typo (rg writes no .partial)": lambda t, m: [
        "rg",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        prompts(t),
        "--model_name_or_path",
        "no-such-org/no-such-model",
    ],
    "reward model that is a causal LM": lambda t, m: [
        "rm",
        "score",
        "--model_name_or_path",
        m["lm"],
        "--data_path",
        str(HHH_SAMPLE),
        "--output_dir",
        str(t / "out"),
    ],
    "chat template with a Jinja syntax error": lambda t, m: [
        "eval",
        "hhh",
        "--model_name_or_path",
        broken_template_model(m["lm"], t),
        "--data_path",
        str(HHH_SAMPLE),
        "--output_dir",
        str(t / "out"),
    ],
    "sft --chat_template_path with a Jinja syntax error": lambda t, m: [
        "sft",
        "--model_name_or_path",
        m["lm"],
        "--data_path",
        str(
            write(
                t / "d.jsonl",
                json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n",
            )
        ),
        "--chat_template_path",
        str(write(t / "t.jinja", "{% if %}")),
        "--output_dir",
        str(t / "out"),
        "--max_steps",
        "1",
        "--report_to",
        "none",
    ],
    "model folder whose config.json has no model_type": lambda t, m: [
        "rg",
        "--output_dir",
        str(t / "out"),
        "--prompts_path",
        prompts(t),
        "--model_name_or_path",
        model_folder(t, {"hidden_size": 64}, tokenizer_of=m["lm"]),
    ],
    "model folder whose config.json is {} (no tokenizer files)": lambda t, m: [
        "sft",
        "--model_name_or_path",
        model_folder(t, {}),
        "--data_path",
        sft_data(t),
        "--output_dir",
        str(t / "out"),
        "--max_steps",
        "1",
        "--report_to",
        "none",
    ],
    "model folder without tokenizer files": lambda t, m: [
        "eval",
        "hhh",
        "--model_name_or_path",
        model_folder(t, {"model_type": "llama"}),
        "--data_path",
        str(HHH_SAMPLE),
        "--output_dir",
        str(t / "out"),
    ],
    "dpo pairs file with no rows": lambda t, m: dpo(t, m, str(write(t / "pairs.jsonl", ""))),
    "dpo pairs whose prompt is empty": lambda t, m: dpo(t, m, pairs_file(t, {"prompt": " ", "chosen": "Sure, gladly.", "rejected": "No."})),
    "dpo pairs of conversations without a user turn": lambda t, m: dpo(
        t, m, pairs_file(t, {"chosen": [{"role": "assistant", "content": "Sure."}], "rejected": [{"role": "assistant", "content": "No."}]})
    ),
    "dpo reference model with another vocabulary": lambda t, m: [
        *dpo(t, m, pairs_file(t, {"prompt": "hi", "chosen": "hello there", "rejected": "go away"})),
        "--ref_model",
        other_vocabulary(m["lm"], t),
    ],
    "LoRA target that names no module": lambda t, m: [
        "sft",
        "--model_name_or_path",
        m["lm"],
        "--data_path",
        sft_data(t),
        "--use_peft",
        "--lora_target_modules",
        "q_proj",
        "qkv_proj",
        "--output_dir",
        str(t / "out"),
        "--max_steps",
        "1",
        "--report_to",
        "none",
    ],
    "LoRA target of a module LoRA cannot adapt": lambda t, m: [
        "rm",
        "train",
        "--model_name_or_path",
        m["lm"],
        "--data_path",
        str(write(t / "pairs.jsonl", json.dumps({"prompt": "hi", "chosen": "hello there", "rejected": "go away"}) + "\n")),
        "--use_peft",
        "--lora_target_modules",
        "self_attn",
        "--output_dir",
        str(t / "out"),
        "--max_steps",
        "1",
        "--report_to",
        "none",
    ],
    # --- the pipeline YAML ---------------------------------------------------------------------
    "pipeline bad YAML": lambda t, m: pipeline_yaml(t, "cs: {rubric: [a\n"),
    "pipeline not UTF-8": lambda t, m: ["pipeline", str(write(t / "p.yaml", b"cs: {} # " + LATIN1)), "--output_dir", str(t / "out")],
    "pipeline is a list": lambda t, m: pipeline_yaml(t, "- cs\n- rm\n"),
    "pipeline stage given a list": lambda t, m: pipeline_yaml(t, "cs: [a, b]\n"),
    "pipeline rm.train given a list": lambda t, m: pipeline_yaml(t, "rm: {train: [1]}\n"),
    "pipeline eval.models given a list": lambda t, m: pipeline_yaml(t, f"eval: {{models: [{m['lm']}], hhh: {{}}}}\n"),
    "pipeline eval.hhh given a number": lambda t, m: pipeline_yaml(t, f"eval: {{models: {{a: {m['lm']}}}, hhh: 3}}\n"),
    "pipeline output_dir an int": lambda t, m: ["pipeline", str(write(t / "p.yaml", "output_dir: 5\ncs: {rubric: [a, b]}\n"))],
    "pipeline eval model an int": lambda t, m: pipeline_yaml(t, "eval: {models: {a: 5}, hhh: {}}\n"),
    "pipeline eval label ../..": lambda t, m: pipeline_yaml(
        t, f"eval: {{models: {{'../..': {m['lm']}}}, hhh: {{data_path: {HHH_SAMPLE}}}}}\n"
    ),
    "pipeline eval label an absolute path": lambda t, m: pipeline_yaml(
        t, f"eval: {{models: {{'{t}/elsewhere': {m['lm']}}}, hhh: {{data_path: {HHH_SAMPLE}}}}}\n"
    ),
    "pipeline launcher with an open quote": lambda t, m: pipeline_yaml(
        t, f'cs: {{input_dir: {rg_file(t, "a").parent}, rubric: [a, a2], launcher: "accelerate launch --config_file \'my config.yaml"}}\n'
    ),
    "pipeline rubric given a number": lambda t, m: pipeline_yaml(
        t, f"rg: {{configurations: [{{model_name_or_path: {m['lm']}}}]}}\ncs: {{rubric: 3}}\n"
    ),
    "pipeline list option given a number": lambda t, m: pipeline_yaml(
        t, f"rg: {{configurations: [{{model_name_or_path: {m['lm']}, prompt_file_path: 5}}]}}\n"
    ),
    "pipeline shared list option given a mapping": lambda t, m: pipeline_yaml(
        t, f"shared: {{lora_target_modules: {{q_proj: 1}}}}\nsft: {{model_name_or_path: {m['lm']}, data_path: {sft_data(t)}}}\n"
    ),
    "pipeline unknown stage": lambda t, m: pipeline_yaml(t, "frobnicate: {}\n"),
    "pipeline unknown stage key": lambda t, m: pipeline_yaml(t, f"cs: {{input_dir: {t}, rubric: [a, b], no_such_key: 1}}\n"),
}


@pytest.fixture(scope="module")
def models(tiny_model_path, tiny_reward_model_path) -> dict[str, str]:
    return {"lm": tiny_model_path, "rm": tiny_reward_model_path}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(case, tmp_path, models, capsys):
    work = tmp_path / "work"
    work.mkdir()
    argv = CASES[case](work, models)
    before = snapshot(work)
    capsys.readouterr()
    rc = cli_main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, (case, rc, captured.err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("almost") and ": error: " in lines[0], (case, captured.err[-2000:])
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(work) == before, f"{case}: wrote {set(snapshot(work)) ^ set(before)}"
