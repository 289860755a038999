"""FSDP2 on two CPU processes (gloo): `rm train`, `sft` and `dpo` under `accelerate launch` with
configs/accelerate/cpu_fsdp.yaml each write one model (the full state dict gathered on the main
process), one metrics.json and one model card; `rm train` killed with SIGKILL mid-run resumes.

accelerate (1.15) does not apply an FSDP config to CPU processes (it runs them as DDP; the first
test checks that almost says so), so the other tests launch through tests/fsdp_on_cpu.py, which
switches accelerate's state to FSDP: from there on Trainer, TRL and accelerate take the same FSDP2
paths as on GPUs (sharded parameters, FULL_STATE_DICT at save, FSDP checkpoints and their resume),
and the wrapper reports per process that the embedding was sharded. docs/reward.md has the details.

Weights after kill and resume: both runs are fp32 on CPU with the same data order and shards, so
they agree bitwise in practice; the comparison allows 1e-6 as tests/test_training_resume.py does."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file
from test_training_resume import QUIET, assert_same_weights, comparison_file, rm_train_argv, trained_steps

from almost.contracts import TRAINING_STATUS
from almost.training import last_complete_checkpoint

CONFIG = Path(__file__).parent.parent / "configs" / "accelerate" / "cpu_fsdp.yaml"
FSDP_ON_CPU = Path(__file__).with_name("fsdp_on_cpu.py")
# CUDA hidden: this is the CPU (gloo) launch, which must not grab a GPU on machines that have one.
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def launch_command(argv: list[str], wrapper: bool = True) -> list[str]:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--main_process_port", "0"]
    return [*launch, *([str(FSDP_ON_CPU)] if wrapper else ["-m", "almost.cli"]), *argv]


def launch(argv: list[str], wrapper: bool = True) -> str:
    """Run ``almost ARGV`` on two processes; returns what they printed."""
    proc = subprocess.run(launch_command(argv, wrapper), capture_output=True, text=True, env={**os.environ, **ENV}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def assert_sharded_by_fsdp(printed: str, vocabulary: int = 49152) -> None:
    """Both processes trained an FSDP2 module holding half of the embedding each."""
    reports = re.findall(r"fsdp_on_cpu: rank (\d) trained (\w+) as (\w+), embedding rows (\d+) of (\d+)", printed)
    assert sorted(r[0] for r in reports) == ["0", "1"], printed[-2000:]
    for _, module, distributed_type, rows, total in reports:
        assert module.startswith("FSDP") and distributed_type == "FSDP", printed[-2000:]
        assert (int(rows), int(total)) == (vocabulary // 2, vocabulary)


def assert_one_model(out: Path, base: str, stage: str) -> dict:
    """One full checkpoint (every weight of the base, trained), one metrics.json, one card; no
    checkpoints or partial files left. Returns metrics.json."""
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(out.glob("*.bin")) and not list(out.glob("checkpoint-*")) and not list(out.glob("*.tmp"))
    assert f"\n  stage: {stage}\n" in (out / "README.md").read_text()  # the card, of this stage
    status = json.loads((out / TRAINING_STATUS).read_text())
    assert status["status"] == "done"
    trained, before = load_file(str(out / "model.safetensors")), load_file(str(Path(base) / "model.safetensors"))
    assert set(before) - set(trained) <= {"lm_head.weight"}  # tied to the embedding in SmolLM2
    assert all(trained[k].shape == before[k].shape for k in before if k in trained)
    assert any(not trained[k].equal(before[k]) for k in before if k in trained)
    return json.loads((out / "metrics.json").read_text())


def load_with_transformers(out: Path, reward_model: bool):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    model = (AutoModelForSequenceClassification if reward_model else AutoModelForCausalLM).from_pretrained(out)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_an_fsdp_launch_on_cpu_trains_as_ddp_and_says_so(tmp_path, tiny_model_path):
    out = tmp_path / "rm"
    printed = launch([*rm_train_argv(tiny_model_path, comparison_file(tmp_path, 12), 2), "--output_dir", str(out)], wrapper=False)
    assert "almost rm train: the FSDP launch config is not in effect: accelerate runs these processes as MULTI_CPU" in printed
    metrics = assert_one_model(out, tiny_model_path, "rm train")
    assert metrics["train"]["num_processes"] == 2 and metrics["train"]["global_step"] == 2


def test_sft_under_fsdp(tmp_path, tiny_model_path):
    rows = [
        {"messages": [{"role": "user", "content": f"Tell me fact {i}."}, {"role": "assistant", "content": f"Fact number {i} is short."}]}
        for i in range(8)
    ]
    data = tmp_path / "demonstrations.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft"
    argv = ["sft", "--model_name_or_path", tiny_model_path, "--data_path", str(data), "--output_dir", str(out)]
    printed = launch([*argv, "--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", *QUIET])
    assert_sharded_by_fsdp(printed)
    metrics = assert_one_model(out, tiny_model_path, "sft")
    assert metrics["train"]["global_step"] == 2 and len(metrics["train"]["losses"]) == 2
    load_with_transformers(out, reward_model=False)


def test_dpo_under_fsdp(tmp_path, tiny_model_path):
    out = tmp_path / "dpo"
    argv = ["dpo", "--model_name_or_path", tiny_model_path, "--data_path", str(comparison_file(tmp_path, 8)), "--output_dir", str(out)]
    printed = launch([*argv, "--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", *QUIET])
    assert_sharded_by_fsdp(printed)
    metrics = assert_one_model(out, tiny_model_path, "dpo")
    assert metrics["train"]["global_step"] == 2 and len(metrics["train"]["losses"]) == 2
    load_with_transformers(out, reward_model=False)


def kill_job_after_checkpoint(argv: list[str], stall_at: int, timeout: float = 240) -> str:
    """Launch ``almost ARGV`` on two processes until they stall before step ``stall_at + 1``, then
    SIGKILL the launcher and both workers (torchrun starts each worker in a session of its own)."""
    env = {**os.environ, **ENV, "ALMOST_TEST_STALL_AT": str(stall_at)}
    proc = subprocess.Popen(launch_command(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    launcher = psutil.Process(proc.pid)

    def kill_job():
        for process in [launcher, *launcher.children(recursive=True)]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass

    timer = threading.Timer(timeout, kill_job)  # a run that never reaches the stall fails the test, not the suite
    timer.start()
    printed = []
    try:
        for line in proc.stdout:
            printed.append(line)
            if line.startswith(f"stalling at step {stall_at}"):
                kill_job()
                break
        proc.wait()
    finally:
        timer.cancel()
    assert proc.returncode == -signal.SIGKILL and any(p.startswith("stalling") for p in printed), "".join(printed)[-3000:]
    return "".join(printed)


def test_rm_train_under_fsdp_killed_mid_run_resumes_to_the_same_weights(tmp_path, tiny_model_path):
    argv = [*rm_train_argv(tiny_model_path, comparison_file(tmp_path, 24), 4), "--save_steps", "2"]
    out, ref = tmp_path / "resumed", tmp_path / "reference"
    kill_job_after_checkpoint([*argv, "--output_dir", str(out)], stall_at=3)
    checkpoint = last_complete_checkpoint(out)
    assert checkpoint is not None and checkpoint.name == "checkpoint-2"
    assert list(checkpoint.glob("pytorch_model_fsdp*")), "an FSDP checkpoint: weights and optimizer saved by FSDP"
    assert json.loads((out / TRAINING_STATUS).read_text())["status"] == "running"

    printed = launch([*argv, "--output_dir", str(out)])
    assert "resuming from step 2" in printed and trained_steps(printed) == 2, printed[-2000:]
    assert_sharded_by_fsdp(printed)
    assert json.loads((out / TRAINING_STATUS).read_text())["final_step"] == 4
    metrics = assert_one_model(out, tiny_model_path, "rm train")

    # The uninterrupted run is also the plain FSDP run of `rm train`: sharded, gathered, read back.
    printed = launch([*argv, "--output_dir", str(ref)])
    assert trained_steps(printed) == 4 and "not in effect" not in printed
    assert_sharded_by_fsdp(printed)
    ref_metrics = assert_one_model(ref, tiny_model_path, "rm train")
    assert ref_metrics["train"]["num_processes"] == 2
    assert ref_metrics["heldout"]["n"] > 0  # the main process read the gathered checkpoint back
    load_with_transformers(ref, reward_model=True)
    assert metrics["train"]["global_step"] == ref_metrics["train"]["global_step"] == 4
    assert_same_weights(out, ref)
    assert metrics["heldout"]["accuracy"] == ref_metrics["heldout"]["accuracy"]
