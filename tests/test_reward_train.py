"""`almost rm train` on a tiny model: it must learn an easy preference, save a loadable checkpoint
(full and LoRA), and run under `accelerate launch` with 2 CPU processes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from almost.cli import main as cli
from almost.reward.evaluate import evaluate_pairs
from almost.reward.formats import load_pairs
from almost.reward.model import RewardScorer
from almost.stages import RM_TRAIN

WORDS = "apple river stone cloud music paper green quick table light bread water".split()
FAST = ["--report_to", "none", "--logging_steps", "50", "--disable_tqdm", "true"]


def easy_pairs(path: Path, n: int = 64, seed: int = 0) -> Path:
    """Chosen answers open with a polite marker, rejected ones with a curt one; the rest is noise."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):

            def words():
                return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))

            row = {
                "prompt": f"Question {i}: tell me about {rng.choice(WORDS)}.",
                "chosen": "Sure, happy to help! " + words(),
                "rejected": "No. " + words(),
            }
            f.write(json.dumps(row) + "\n")
    return path


def backbone_weight(model_dir: str) -> dict:
    weights = load_file(str(Path(model_dir) / "model.safetensors"))
    return {k: v for k, v in weights.items() if "layers.0.mlp.down_proj" in k}


def test_training_beats_chance_on_held_out_pairs(tmp_path, tiny_model_path):
    data = easy_pairs(tmp_path / "comparison.jsonl", n=48)
    out = tmp_path / "rm"
    args = [
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(data),
        "--output_dir",
        str(out),
        "--learning_rate",
        "1e-3",
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--eval_fraction",
        "0.25",
    ]
    assert cli(["rm", "train", *args, *FAST]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["heldout_pairs"] == 12 and metrics["data"]["train_pairs"] == 36
    assert metrics["heldout"]["accuracy"] >= 0.8, metrics["heldout"]
    assert metrics["train"]["num_processes"] == 1
    (before,), (after,) = backbone_weight(tiny_model_path).values(), backbone_weight(str(out)).values()
    assert not before.equal(after), "full fine-tuning left the backbone unchanged"
    card = (out / "README.md").read_text()
    assert f"| rubric agreement | {metrics['heldout']['accuracy']:.3f} |" in card and "learning_rate | 0.001" in card
    from huggingface_hub import ModelCard

    results = {r.metric_name: r.metric_value for r in ModelCard.load(out / "README.md").data.eval_results}
    assert results["rubric agreement"] == metrics["heldout"]["accuracy"]
    assert results["'prefer the longer answer' baseline"] == metrics["heldout"]["length_bias"]["length_only_accuracy"]
    assert (out / "tokenizer.json").exists() and not (out / "training_args.bin").exists()


def test_long_pairs_are_counted_and_truncated_from_the_chosen_side(tmp_path, tiny_model_path):
    from almost.models import load_tokenizer
    from almost.reward.train import encode_pairs

    tokenizer = load_tokenizer(tiny_model_path, padding_side="right")
    pairs = load_pairs(easy_pairs(tmp_path / "c.jsonl", n=6)).pairs
    full = encode_pairs(tokenizer, pairs, None, "left")
    limit = min(map(len, full.chosen_ids)) - 1  # every pair is over the limit
    left = encode_pairs(tokenizer, pairs, limit, "left")
    assert left.truncated == 6 and all(c[-3:] == f[-3:] for c, f in zip(left.chosen_ids, full.chosen_ids))
    right = encode_pairs(tokenizer, pairs, limit, "right")
    assert all(c == f[:limit] for c, f in zip(right.chosen_ids, full.chosen_ids))
    # Right truncation cuts the answers away when the shared prompt is long: such pairs are dropped.
    assert right.identical_after_truncation + len(right.chosen_ids) == 6
    dropped = encode_pairs(tokenizer, pairs, limit, "drop")
    assert dropped.dropped_long == 6 and not dropped.chosen_ids


def test_lora_saves_adapter_with_score_head_and_both_load(tmp_path, tiny_model_path):
    data = easy_pairs(tmp_path / "comparison.jsonl", n=24)
    out = tmp_path / "rm-lora"
    args = [
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(data),
        "--output_dir",
        str(out),
        "--lora",
        "--learning_rate",
        "5e-3",
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
    ]
    assert cli(["rm", "train", *args, *FAST]) == 0
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any("score" in k for k in saved) and any("lora_A" in k for k in saved)

    pairs = load_pairs(data).pairs[:6]
    merged, _ = evaluate_pairs(RewardScorer(str(out)), pairs, progress=False)
    from_adapter, _ = evaluate_pairs(RewardScorer(str(out / "adapter")), pairs, progress=False)
    # fp32 on CPU agrees to rounding; on a GPU the scorer runs in bf16 and merging rounds differently.
    tolerance = 1e-2 if torch.cuda.is_available() else 1e-4
    assert merged["mean_margin"] == pytest.approx(from_adapter["mean_margin"], abs=tolerance)
    assert merged["mean_margin"] != 0.0

    # --merge_lora false: the same training saves the adapter alone, which the held-out check still reads.
    alone = tmp_path / "rm-adapter-alone"
    assert cli(["rm", "train", *args, "--output_dir", str(alone), "--merge_lora", "false", *FAST]) == 0
    assert json.loads((alone / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    assert not (alone / "config.json").exists() and not (alone / "adapter").exists()
    metrics, alone_metrics = (json.loads((d / RM_TRAIN.outputs.summary_file).read_text()) for d in (out, alone))
    assert set(metrics) <= RM_TRAIN.outputs.summary_keys and alone_metrics["heldout"]["n"] == metrics["heldout"]["n"] > 0
    assert alone_metrics["heldout"]["mean_margin"] == pytest.approx(metrics["heldout"]["mean_margin"], abs=tolerance)
    from_alone, _ = evaluate_pairs(RewardScorer(str(alone)), pairs, progress=False)
    assert from_alone["mean_margin"] == pytest.approx(merged["mean_margin"], abs=tolerance)


def test_two_process_cpu_training_under_accelerate(tmp_path, tiny_model_path):
    data = easy_pairs(tmp_path / "comparison.jsonl", n=24)
    out = tmp_path / "rm-ddp"
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
        "rm",
        "train",
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(data),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-3",
        *FAST,
    ]
    # CUDA hidden: this is the CPU (gloo) launch, which must not grab a GPU on machines that have one.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["num_processes"] == 2 and metrics["train"]["global_step"] == 2
    assert metrics["heldout"]["n"] > 0
    (before,), (after,) = backbone_weight(tiny_model_path).values(), backbone_weight(str(out)).values()
    assert not before.equal(after)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
