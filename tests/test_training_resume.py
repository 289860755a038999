"""Training stages survive a crash: `rm train`, `sft`, `dpo` and `rl` are killed with SIGKILL after a
checkpoint, rerun with the same command, and must end with the weights of an uninterrupted run.

Tolerance: both runs are fp32 on CPU with the same data order, RNG state and thread count, so the
weights come out identical in practice; the comparison allows 1e-6 (absolute) for a different
reduction order between processes. A resume that lost the optimizer, scheduler, RNG or data
position, or restarted at step 0 with another schedule, moves weights by ~1e-3 at these learning
rates. A rerun that silently trained from step 0 would match too, so each test also checks that
the rerun announced the checkpoint and trained only the remaining steps."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from almost.cli import main as cli_main
from almost.contracts import TRAINING_STATUS
from almost.errors import AlmostError
from almost.lora import load_merged_adapter
from almost.models import resolve_model
from almost.stages import RL, SFT
from almost.training import last_complete_checkpoint

STALL_AT_STEP = Path(__file__).with_name("stall_at_step.py")
QUIET = ["--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1"]


def comparison_file(tmp_path: Path, n: int) -> Path:
    """``n`` distinct pairs a tiny model learns to tell apart in a few steps (the chosen answer is the longer, polite one)."""
    data = tmp_path / "comparison.jsonl"
    rows = [{"prompt": f"Question {i}?", "chosen": f"Sure, happy to help with {i}.", "rejected": f"No. {i}"} for i in range(n)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def rm_train_argv(tiny_model_path: str, data: Path, max_steps: int) -> list[str]:
    """``almost rm train`` on the tiny model, as the resume and FSDP tests run it."""
    return [
        "rm",
        "train",
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(data),
        "--max_steps",
        str(max_steps),
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--eval_fraction",
        "0.2",
        *QUIET,
    ]


def kill_after_checkpoint(argv: list[str], out: Path, stall_at: int, timeout: float = 240) -> str:
    """Run ``almost ARGV`` until it stalls before step ``stall_at + 1`` (checkpoints and logs of the
    earlier steps written), then SIGKILL it. Returns what it printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(STALL_AT_STEP), str(stall_at), *argv]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    timer = threading.Timer(timeout, proc.kill)  # a run that never reaches the stall fails the test, not the suite
    timer.start()
    printed = []
    try:
        for line in proc.stdout:
            printed.append(line)
            if line.startswith(f"stalling at step {stall_at}"):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
    finally:
        timer.cancel()
    assert proc.returncode == -signal.SIGKILL and any(p.startswith("stalling") for p in printed), "".join(printed)[-3000:]
    return "".join(printed)


def trained_steps(printed: str) -> int:
    """Optimizer steps a run logged (Trainer prints one dict per step with --disable_tqdm true)."""
    return sum(1 for line in printed.splitlines() if line.startswith("{") and "'loss'" in line)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-6, rtol=0, msg=name)


def killed_resumed_and_reference(tmp_path, capsys, argv: list[str], max_steps: int, stall_at: int) -> tuple[Path, Path, str]:
    """The crash test every trainer shares: kill, check the folder is refused, rerun, run uninterrupted."""
    out, ref = tmp_path / "resumed", tmp_path / "reference"
    kill_after_checkpoint([*argv, "--output_dir", str(out)], out, stall_at)
    checkpoint = last_complete_checkpoint(out)
    assert checkpoint is not None and checkpoint.name == "checkpoint-2"
    assert json.loads((out / TRAINING_STATUS).read_text())["status"] == "running"

    capsys.readouterr()
    assert cli_main([*argv, "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "resuming from step 2" in printed
    assert trained_steps(printed) == max_steps - 2, printed[-2000:]
    status = json.loads((out / TRAINING_STATUS).read_text())
    assert status["status"] == "done" and status["final_step"] == max_steps
    assert not list(out.glob("checkpoint-*")), "checkpoints are removed once the final model is saved"

    assert cli_main([*argv, "--output_dir", str(ref)]) == 0
    assert trained_steps(capsys.readouterr().out) == max_steps
    assert_same_weights(out, ref)
    return out, ref, printed


def test_sft_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path, tiny_model_path, capsys):
    rows = [
        {"messages": [{"role": "user", "content": f"Tell me fact {i}."}, {"role": "assistant", "content": f"Fact number {i} is short."}]}
        for i in range(12)
    ]
    data = tmp_path / "demonstrations.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = [
        "sft",
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(data),
        "--max_steps",
        "6",
        "--save_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "1e-3",
        *QUIET,
    ]
    out, ref, _ = killed_resumed_and_reference(tmp_path, capsys, argv, max_steps=6, stall_at=3)
    # The loss curve in metrics.json spans the whole run, both halves of it.
    losses = json.loads((out / "metrics.json").read_text())["train"]["losses"]
    assert len(losses) == 6 and losses == pytest.approx(json.loads((ref / "metrics.json").read_text())["train"]["losses"], abs=1e-6)

    # A rerun of the finished command trains nothing.
    assert cli_main([*argv, "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nothing to do" in printed and trained_steps(printed) == 0


def test_rm_train_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path, tiny_model_path, capsys):
    argv = [*rm_train_argv(tiny_model_path, comparison_file(tmp_path, 24), 5), "--save_steps", "2"]
    out, ref, _ = killed_resumed_and_reference(tmp_path, capsys, argv, max_steps=5, stall_at=3)
    metrics, ref_metrics = (json.loads((d / "metrics.json").read_text()) for d in (out, ref))
    assert metrics["heldout"]["accuracy"] == ref_metrics["heldout"]["accuracy"]


def test_dpo_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path, tiny_model_path, capsys):
    argv = [
        "dpo",
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(comparison_file(tmp_path, 12)),
        "--max_steps",
        "5",
        "--save_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "1e-3",
        *QUIET,
    ]
    out, ref, _ = killed_resumed_and_reference(tmp_path, capsys, argv, max_steps=5, stall_at=3)
    # The logged DPO figures span the whole run, both halves of it.
    train, ref_train = (json.loads((d / "metrics.json").read_text())["train"] for d in (out, ref))
    assert len(train["losses"]) == 5 and train["losses"] == pytest.approx(ref_train["losses"], abs=1e-6)
    assert train["last_log"]["rewards/margins"] == pytest.approx(ref_train["last_log"]["rewards/margins"], abs=1e-6)


def test_rl_killed_after_a_checkpoint_resumes_to_the_same_weights_and_log(tmp_path, tiny_model_path, tiny_reward_model_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is the capital of France?\nHow do I boil an egg?\nTell me a joke.\nWhy is the sky blue?\n")
    argv = [
        "rl",
        "--model_name_or_path",
        tiny_model_path,
        "--reward_model_name_or_path",
        tiny_reward_model_path,
        "--prompts_path",
        str(prompts),
        "--max_steps",
        "5",
        "--save_steps",
        "2",
        "--max_completion_length",
        "8",
        "--learning_rate",
        "1e-2",
        "--seed",
        "0",
        *QUIET,
    ]
    out, ref, _ = killed_resumed_and_reference(tmp_path, capsys, argv, max_steps=5, stall_at=3)
    # The killed run had logged step 3 after its last checkpoint; the rerun logs it again, once.
    rows, ref_rows = (list(csv.DictReader(open(d / "rl_log.csv"))) for d in (out, ref))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    for row, ref_row in zip(rows, ref_rows):
        assert float(row["reward"]) == pytest.approx(float(ref_row["reward"]), abs=1e-6)
        assert float(row["kl"]) == pytest.approx(float(ref_row["kl"]), abs=1e-6)
    summary = json.loads((out / RL.outputs.summary_file).read_text())
    assert summary["global_step"] == 5 and summary["first_log"]["step"] == 1


def test_rerun_with_other_settings_stops_unless_overwrite(tmp_path, tiny_model_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Hi?", "completion": "Hello, nice to meet you."}) + "\n")
    out = tmp_path / "sft"
    argv = ["sft", "--model_name_or_path", tiny_model_path, "--data_path", str(data), "--output_dir", str(out), "--max_steps", "1", *QUIET]
    assert cli_main(argv) == 0
    before = (out / TRAINING_STATUS).read_text()
    capsys.readouterr()
    assert cli_main([*argv, "--learning_rate", "1e-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings (learning_rate)" in err[0] and "--overwrite" in err[0]
    assert (out / TRAINING_STATUS).read_text() == before, "a refused rerun writes nothing"
    # Logging and saving settings may change: the finished run is recognised.
    assert cli_main([*argv, "--logging_steps", "5", "--save_steps", "9"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli_main([*argv, "--learning_rate", "1e-3", "--overwrite", "true"]) == 0
    assert json.loads((out / TRAINING_STATUS).read_text())["settings"]["learning_rate"] == 1e-3

    # Checkpoints that no run of ours made (no status file) are neither resumed nor deleted.
    foreign = tmp_path / "foreign"
    (foreign / "checkpoint-3").mkdir(parents=True)
    capsys.readouterr()
    assert cli_main([*argv, "--output_dir", str(foreign)]) == 2  # the last --output_dir wins
    assert "checkpoint folders of another program's run" in capsys.readouterr().err
    assert (foreign / "checkpoint-3").is_dir() and not (foreign / TRAINING_STATUS).exists()


def test_lora_spellings_give_the_same_settings(tmp_path):
    """--use_peft (TRL's spelling), the seed's --lora, and `lora:` in a YAML config are one setting: a
    rerun may switch spellings and still resume."""
    from almost.config import parse
    from almost.policy.sft import SFTArguments
    from almost.training import run_settings

    config_file = tmp_path / "sft.yaml"
    config_file.write_text("lora: true\nlora_r: 8\n")
    spelled = {
        "use_peft": ["--use_peft", "--lora_r", "8"],
        "lora": ["--lora", "--lora_r", "8"],
        "yaml": ["--config", str(config_file)],
    }
    settings = {}
    for name, argv in spelled.items():
        (config,) = parse("almost sft", [SFTArguments], [*argv, "--output_dir", str(tmp_path / name)])
        assert config.use_peft and config.lora_r == 8
        settings[name] = run_settings(config)
    assert settings["use_peft"] == settings["lora"] == settings["yaml"]


def test_a_half_saved_model_is_refused_by_every_reader(tmp_path, tiny_model_path):
    """A crash while the final model is saved leaves config.json beside partial weights: no reader
    may take it for a model until the status file says done."""
    import shutil

    from almost.run.fingerprints import is_done
    from almost.run.plan import Step
    from almost.writes import write_json_atomic

    out = tmp_path / "sft"
    shutil.copytree(tiny_model_path, out)
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_config.json").write_text("{}")
    write_json_atomic(out / TRAINING_STATUS, {"stage": "sft", "status": "running", "settings": {}})
    with pytest.raises(AlmostError, match="unfinished `almost sft` run"):
        resolve_model(str(out))
    with pytest.raises(AlmostError, match="unfinished"):
        load_merged_adapter(out / "adapter", "CAUSAL_LM")
    step = Step(SFT, "sft", {}, (), out, out / "config.json")
    write_json_atomic(step.marker, {"status": "done"})
    assert not is_done(step)

    write_json_atomic(out / TRAINING_STATUS, {"stage": "sft", "status": "done", "settings": {}})
    assert resolve_model(str(out)).path == str(out) and is_done(step)
    # A checkpoint without a status file (from the hub, another tool) is read as it is.
    (out / TRAINING_STATUS).unlink()
    assert resolve_model(str(out)).path == str(out)
