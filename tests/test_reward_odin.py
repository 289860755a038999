"""ODIN's length-disentangled reward: the loss terms on a hand-made batch, the pooled position, and
a tiny training run whose checkpoint scores with the quality head alone."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from almost.reward.odin import LENGTH_HEAD_FILE, last_token_index, odin_loss_terms, pearson
from almost.reward.train import main as train_main

FAST = ["--report_to", "none", "--logging_steps", "1", "--disable_tqdm", "true"]


def test_loss_terms_on_a_hand_made_batch():
    # Two pairs: chosen sequences first (lengths 10, 20), then rejected (5, 8).
    lengths = torch.tensor([10.0, 20.0, 5.0, 8.0])
    quality = lengths.clone()  # a quality head that is a pure length meter: corr 1
    length_reward = torch.zeros(4)  # a constant length head: corr 0
    terms = odin_loss_terms(quality, length_reward, lengths, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5, 2.0)
    preference = -(math.log(1 / (1 + math.exp(-5))) + math.log(1 / (1 + math.exp(-12)))) / 2  # margins 10-5, 20-8
    assert terms["preference_loss"].item() == pytest.approx(preference, rel=1e-5)
    assert terms["quality_length_corr"].item() == pytest.approx(1.0, abs=1e-6)
    assert terms["length_head_length_corr"].item() == 0.0 and terms["head_cosine"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(preference + 0.5 * (1.0 - 0.0), rel=1e-5)

    # Swap the roles: the length head tracks length (it is rewarded), the quality head anti-tracks
    # it (penalised all the same: |corr|), and the heads' weights are 45 degrees apart.
    terms = odin_loss_terms(-lengths, lengths, lengths, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), 0.5, 2.0)
    assert terms["quality_length_corr"].item() == pytest.approx(-1.0, abs=1e-6)
    assert terms["head_cosine"].item() == pytest.approx(1 / math.sqrt(2), rel=1e-5)
    # The two heads' rewards add up to 0 for every sequence: the preference loss is log 2.
    assert terms["loss"].item() == pytest.approx(math.log(2) + 0.5 * (1.0 - 1.0) + 2.0 / math.sqrt(2), rel=1e-5)


def test_pearson_and_pooled_position():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1).item() == pytest.approx(1.0) and pearson(x, torch.ones(4)).item() == 0.0
    ids = torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0], [1, 2, 3, 4]])
    assert last_token_index(ids, 0).tolist() == [2, 0, 3] and last_token_index(ids, None).tolist() == [3, 3, 3]


WORDS = "apple river stone cloud music paper green quick table light bread water".split()


def confounded_pairs(path: Path, n: int = 48, seed: int = 0) -> Path:
    """The chosen answer is always the longer one and opens with a polite marker."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            def words(k):
                return " ".join(rng.choice(WORDS) for _ in range(k))

            row = {"prompt": f"Question {i}: tell me about {rng.choice(WORDS)}.",
                   "chosen": "Sure, happy to help! " + words(rng.randint(8, 16)), "rejected": "No. " + words(rng.randint(1, 4))}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    return path


def test_training_with_a_length_head_saves_the_quality_head_as_score(tmp_path, tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    from almost.reward.scorer import RewardScorer

    data = confounded_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "rm"
    args = ["--model_name_or_path", tiny_model_path, "--data_path", str(data), "--output_dir", str(out), "--length_head",
            "--learning_rate", "1e-3", "--max_steps", "6", "--per_device_train_batch_size", "8", "--eval_fraction", "0.25", "--seed", "3"]  # fmt: skip
    assert train_main(args + FAST) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    head = metrics["length_head"]
    assert head["file"] == LENGTH_HEAD_FILE and head["first_log"]["step"] == 1 and head["last_log"]["step"] == 6
    for key in ("preference_loss", "quality_length_corr", "length_head_length_corr", "head_cosine"):
        assert math.isfinite(head["last_log"][key])
    # The length head learned to track length (it starts random).
    assert head["last_log"]["length_head_length_corr"] > head["first_log"]["length_head_length_corr"]
    length_weight = load_file(str(out / LENGTH_HEAD_FILE))["weight"]
    # The checkpoint is a plain one-label reward model whose `score` is the quality head only.
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.score.weight.shape == length_weight.shape
    assert not torch.allclose(model.score.weight, length_weight)
    scorer = RewardScorer(str(out), batch_size=4)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]
    enc = scorer.tokenizer(scorer.texts([conversation]), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        hidden = model.model(**enc).last_hidden_state[0, -1]
    assert scorer.score([conversation])[0] == pytest.approx((hidden @ model.score.weight[0]).item(), rel=1e-3, abs=1e-4)
    assert metrics["heldout"]["n"] == 12
