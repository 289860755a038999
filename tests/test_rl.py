"""almost rl: a few RLOO steps on a tiny policy and tiny RM change the weights and log reward and KL."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from almost.cli import main as cli_main
from almost.policy.rl import make_reward_functions
from almost.stages import RL


def _weights(path) -> dict:
    return load_file(str(path / "model.safetensors"))


def test_rloo_run_changes_weights_and_logs_kl(tmp_path, tiny_model_path, tiny_reward_model_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is the capital of France?\nHow do I boil an egg?\n\nTell me a joke.\nWhy is the sky blue?\n")
    out = tmp_path / "rl"
    argv = ["rl", "--model_name_or_path", tiny_model_path, "--reward_model_name_or_path", tiny_reward_model_path]
    argv += ["--prompts_path", str(prompts), "--output_dir", str(out), "--max_steps", "2", "--max_completion_length", "8"]
    argv += ["--learning_rate", "1e-2", "--length_penalty", "0.01", "--seed", "0"]
    assert cli_main(argv) == 0

    before, after = _weights(Path(tiny_model_path)), _weights(out)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} tensors changed"

    rows = list(csv.DictReader(open(out / "rl_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert {"reward", "rm_reward", "kl", "completion_length"} <= set(rows[0])
    assert all(r["kl"] != "" for r in rows)
    # After one update the policy differs from the reference, so the second step's KL is non-zero.
    assert float(rows[1]["kl"]) != 0.0
    # The length penalty enters the reward: reward = rm_reward - 0.01 * length.
    assert float(rows[0]["reward"]) == pytest.approx(float(rows[0]["rm_reward"]) - 0.01 * float(rows[0]["length_tokens"]), abs=1e-4)
    summary = json.loads((out / RL.outputs.summary_file).read_text())
    assert summary["global_step"] == 2 and summary["beta"] > 0 and summary["prompts"] == 4
    assert set(summary) == RL.outputs.summary_keys
    card = (out / "README.md").read_text()
    assert f"| KL to the reference policy, last logged step | {float(rows[1]['kl']):.3f} |" in card and "| beta | 0.05 |" in card
    assert (out / "tokenizer.json").exists()


def test_reward_function_scores_prompt_plus_completion():
    seen = []

    class Scorer:
        def score(self, conversations):
            seen.extend(conversations)
            return [1.0] * len(conversations)

    funcs, weights = make_reward_functions(Scorer(), 0.5)
    context = json.dumps([{"role": "user", "content": "q"}])
    rewards = funcs[0](prompts=["q"], completions=[[{"role": "assistant", "content": "ans"}]], context=[context])
    assert rewards == [1.0] and seen == [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "ans"}]]
    assert funcs[1](prompts=["q"], completions=["x"], completion_ids=[[1, 2, 3]]) == [3.0]
    assert weights == [1.0, -0.5]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--algorithm", "ppo"], "unknown --algorithm"),
        (["--reward_model_name_or_path", "POLICY"], "not a reward model"),
        (["--prompts_path", "/nonexistent.txt"], "not found"),
    ],
)
def test_rl_bad_input_exits_2(extra, message, tmp_path, tiny_model_path, tiny_reward_model_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi\n")
    out = tmp_path / "rl"
    argv = [
        "rl",
        "--model_name_or_path",
        tiny_model_path,
        "--reward_model_name_or_path",
        tiny_reward_model_path,
        "--prompts_path",
        str(prompts),
        "--output_dir",
        str(out),
    ]
    argv += [tiny_model_path if a == "POLICY" else a for a in extra]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (out / "rl_log.csv").exists()


def test_grpo_config_carries_our_settings(tmp_path):
    from trl import GRPOConfig

    from almost.config import parse
    from almost.policy.rl import RLConfig, trl_config

    (config,) = parse(
        "almost rl",
        [RLConfig],
        ["--algorithm", "grpo", "--output_dir", str(tmp_path), "--beta", "0.1", "--num_generations", "2", "--max_completion_length", "12"],
    )
    args = trl_config(config, [1.0, -0.01])
    assert isinstance(args, GRPOConfig)
    assert (args.beta, args.num_generations, args.max_completion_length, args.reward_weights) == (0.1, 2, 12, [1.0, -0.01])
    # bf16 and checkpointing follow the hardware (auto); what they resolved to must reach the GRPO config unchanged.
    assert (
        args.bf16 is config.bf16
        and args.gradient_checkpointing is config.gradient_checkpointing
        and args.report_to in ("none", [], ["none"])
    )


def test_two_process_cpu_rl_writes_each_output_once(tmp_path, tiny_model_path, tiny_reward_model_path):
    """Under `accelerate launch` only the main process writes rl_log.csv, the policy and the card."""
    import os
    import subprocess
    import sys

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is the capital of France?\nHow do I boil an egg?\nTell me a joke.\nWhy is the sky blue?\n")
    out = tmp_path / "rl-ddp"
    config = Path(__file__).parent.parent / "configs" / "accelerate" / "cpu_ddp.yaml"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--main_process_port",
        "0",
        "-m",
        "almost.cli",
        "rl",
        "--model_name_or_path",
        tiny_model_path,
        "--reward_model_name_or_path",
        tiny_reward_model_path,
        "--prompts_path",
        str(prompts),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--max_completion_length",
        "8",
        "--learning_rate",
        "1e-2",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each process logs every step; two writers would leave each row (and the header) twice.
    lines = (out / "rl_log.csv").read_text().splitlines()
    assert lines[0].startswith("step,") and [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    assert proc.stdout.count("almost rl: 2 steps") == 1, proc.stdout[-2000:]
    assert json.loads((out / RL.outputs.summary_file).read_text())["global_step"] == 2
    assert json.loads((out / "training_status.json").read_text())["status"] == "done"
    before, after = _weights(Path(tiny_model_path)), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_rm_train_sft_and_rl_show_the_same_lora_and_hardware_options(monkeypatch, capsys):
    """One spelling of LoRA (TRL's --use_peft --lora_r ...) and the same hardware switches in all three trainers."""
    from dataclasses import fields

    from almost.lora import LoraArguments
    from almost.training import HardwareArguments

    monkeypatch.setenv("COLUMNS", "200")
    shared = [f"--{f.name}" for kind in (LoraArguments, HardwareArguments) for f in fields(kind)] + ["--use_cpu", "--fp16", "--tf32"]
    options = {}
    for command in (["rl"], ["sft"], ["rm", "train"]):
        with pytest.raises(SystemExit) as exit_code:
            cli_main([*command, "--help"])
        assert exit_code.value.code == 0
        # One block per option: its line and the indented help lines under it.
        blocks = re.split(r"\n(?=  -)", capsys.readouterr().out)
        options[" ".join(command)] = {block.split()[0].rstrip(","): block for block in blocks if block.startswith("  --")}
    for option in shared:
        assert option in options["rl"], option
        assert options["rl"][option] == options["sft"][option] == options["rm train"][option], option
