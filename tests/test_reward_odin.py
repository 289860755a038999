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

from almost.cli import main as cli
from almost.reward.odin import LENGTH_HEAD_FILE, last_token_index, odin_loss_terms, pearson

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

            row = {
                "prompt": f"Question {i}: tell me about {rng.choice(WORDS)}.",
                "chosen": "Sure, happy to help! " + words(rng.randint(8, 16)),
                "rejected": "No. " + words(rng.randint(1, 4)),
            }
            f.write(json.dumps(row) + "\n")
    return path


def train(tmp_path: Path, tiny_model_path: str, data: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    args = [
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(data),
        "--output_dir",
        str(out),
        "--learning_rate",
        "1e-3",
        "--max_steps",
        "16",
        "--per_device_train_batch_size",
        "8",
        "--eval_fraction",
        "0.25",
        "--seed",
        "1",
        *extra,
    ]
    assert cli(["rm", "train", *args, *FAST]) == 0
    return out


def length_correlation(model_dir: Path, data: Path) -> float:
    """Pearson(reward, tokens) over both answers of every pair, as the length head's loss sees length."""
    from almost.reward.formats import load_pairs
    from almost.reward.model import RewardScorer

    scorer = RewardScorer(str(model_dir), batch_size=16)
    conversations = [p.conversation(a) for p in load_pairs(data).pairs for a in (p.chosen, p.rejected)]
    lengths = [len(ids) for ids in scorer.tokenizer(scorer.texts(conversations), add_special_tokens=False)["input_ids"]]
    return pearson(torch.tensor(scorer.score(conversations)), torch.tensor(lengths, dtype=torch.float)).item()


def test_length_head_decorrelates_the_saved_reward_from_length(tmp_path, tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    from almost.reward.model import RewardScorer

    data = confounded_pairs(tmp_path / "pairs.jsonl")
    plain = train(tmp_path, tiny_model_path, data, "plain")
    out = train(tmp_path, tiny_model_path, data, "odin", "--length_head", "--length_correlation_coefficient", "5")
    metrics = json.loads((out / "metrics.json").read_text())
    head = metrics["length_head"]
    assert head["file"] == LENGTH_HEAD_FILE and head["length_correlation_coefficient"] == 5.0
    assert head["first_log"]["step"] == 1 and head["last_log"]["step"] == 16
    # In training, the length head took length over (it starts orthogonal to the quality head).
    assert head["last_log"]["length_head_length_corr"] > max(0.8, head["first_log"]["length_head_length_corr"])
    assert head["first_log"]["head_cosine"] < 0.1
    # The saved reward (quality head only) tracks length less than a plain RM trained on the same pairs.
    plain_corr, odin_corr = length_correlation(plain, data), length_correlation(out, data)
    assert plain_corr > 0.5 and abs(odin_corr) < plain_corr - 0.2, (plain_corr, odin_corr)
    assert "length_head" not in json.loads((plain / "metrics.json").read_text()) and not (plain / LENGTH_HEAD_FILE).exists()

    # The checkpoint is a plain one-label reward model whose `score` is the quality head only.
    length_weight = load_file(str(out / LENGTH_HEAD_FILE))["weight"]
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.score.weight.shape == length_weight.shape
    assert not torch.allclose(model.score.weight, length_weight)
    scorer = RewardScorer(str(out), batch_size=4)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]
    enc = scorer.tokenizer(scorer.texts([conversation]), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        hidden = model.model(**enc).last_hidden_state[0, -1]
    # The scorer runs in bf16 on a GPU (dtype auto), in fp32 on every CPU in the suite (conftest.py), as
    # this reference does.
    tolerance = 2e-2 if torch.cuda.is_available() else 1e-4
    assert scorer.score([conversation])[0] == pytest.approx((hidden @ model.score.weight[0]).item(), rel=tolerance, abs=tolerance)
    assert metrics["heldout"]["n"] == 12 and "length_balanced" in metrics["heldout"]


def test_length_head_starts_orthogonal_to_the_quality_head():
    from almost.reward.odin import orthogonal_init

    torch.manual_seed(5)
    quality = torch.randn(1, 64) * 0.02  # what a fresh score head looks like after set_seed(5)
    length = orthogonal_init(quality, 5)
    assert length.shape == quality.shape and length.norm().item() == pytest.approx(quality.norm().item(), rel=1e-4)
    assert abs((length @ quality.T).item()) / (quality.norm() ** 2).item() < 1e-5


def test_length_head_with_lora_finds_the_trainable_score_copy(tmp_path, tiny_model_path):
    from almost.reward.model import RewardScorer

    data = confounded_pairs(tmp_path / "pairs.jsonl", n=16)
    out = tmp_path / "rm"
    args = [
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(data),
        "--output_dir",
        str(out),
        "--length_head",
        "--lora",
        "--learning_rate",
        "5e-3",
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--eval_fraction",
        "0",
    ]
    assert cli(["rm", "train", *args, *FAST]) == 0
    head = json.loads((out / "metrics.json").read_text())["length_head"]
    assert head["last_log"]["step"] == 3 and (out / LENGTH_HEAD_FILE).exists() and (out / "adapter").is_dir()
    # Both the merged checkpoint and the adapter load as one-label reward models.
    rewards = [
        RewardScorer(str(path)).score([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]])[0]
        for path in (out, out / "adapter")
    ]
    assert rewards[0] == pytest.approx(rewards[1], rel=1e-3, abs=1e-4)
