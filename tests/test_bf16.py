"""The bf16 paths run on any CPU: inference under bf16 autocast (scoring, generation) and a training
step with ``--bf16 true``.

The rest of the suite computes in fp32 on every CPU (conftest.py), so that the floats it compares are
the same computation on every kind of CI machine; these tests ask for bf16 explicitly (emulated on
CPUs without native bf16, native elsewhere) and check that it runs and gives finite, usable results.
They compare no bf16 figure with another.
"""

from __future__ import annotations

import json
import math

import torch

from almost.cli import main as cli_main
from almost.engines import Sampling
from almost.engines.hf import HFEngine
from almost.reward.model import RewardScorer

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [{"role": "user", "content": "How do I boil an egg?"}, {"role": "assistant", "content": "Simmer it for seven minutes."}],
]


def test_scoring_and_generation_run_under_bf16_autocast(tiny_reward_model_path, tiny_model_path):
    scorer = RewardScorer(tiny_reward_model_path, batch_size=2, dtype="bfloat16")
    assert scorer.precision.autocast_bf16 or torch.cuda.is_available()
    rewards = scorer.score(CONVERSATIONS)
    assert len(rewards) == 2 and all(math.isfinite(r) for r in rewards)
    engine = HFEngine(tiny_model_path, dtype="bfloat16")
    samples = engine.generate(["Human: Hi.\n\nAssistant:"], Sampling(max_new_tokens=4, n=2, seed=0))
    assert len(samples) == 1 and len(samples[0]) == 2


def test_a_training_step_runs_in_bf16(tmp_path, tiny_reward_model_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Question {i}?", "chosen": "Sure, here is a careful answer.", "rejected": "No."} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rm"
    argv = ["rm", "train", "--model_name_or_path", tiny_reward_model_path, "--data_path", str(data), "--output_dir", str(out)]
    argv += ["--bf16", "true", "--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_fraction", "0", "--report_to", "none"]
    assert cli_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["bf16"] is True and metrics["train"]["global_step"] == 2
    assert math.isfinite(metrics["train"]["train_loss"])
