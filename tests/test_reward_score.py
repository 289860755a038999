"""`almost rm score` (all row kinds, resume after a crash) and `almost rm eval` outputs, tiny RM."""

from __future__ import annotations

import json

import pytest

from almost.cli import main as almost_main
from almost.reward import model as scorer_module
from almost.reward.score import OUTPUT_FILE


def rows(n: int = 21) -> list[dict]:
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append({"index": i, "prompt": f"Question {i}?", "response": "word " * (i + 1)})
        elif kind == 1:
            out.append({"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello " * i}]})
        else:
            out.append({"prompt": f"Pick {i}", "chosen": "good " * i, "rejected": "bad"})
    return out


def write(path, data):
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


def score_args(model, data, out):
    return ["rm", "score", "--model_name_or_path", model, "--data_path", str(data), "--output_dir", str(out), "--batch_size", "4"]


def test_score_adds_rewards_and_resumes_after_a_crash(tmp_path, tiny_reward_model_path, monkeypatch):
    data = write(tmp_path / "rows.jsonl", rows())
    assert almost_main(score_args(tiny_reward_model_path, data, tmp_path / "full")) == 0
    full = [json.loads(line) for line in (tmp_path / "full" / OUTPUT_FILE).read_text().splitlines()]
    assert len(full) == 21
    for original, scored in zip(rows(), full):
        added = set(scored) - set(original)
        assert added == ({"reward_chosen", "reward_rejected"} if "chosen" in original else {"reward"})
        assert all(scored[k] == v for k, v in original.items())

    # Crash after the second batch, then rerun: the result equals the uninterrupted run.
    real_score, calls = scorer_module.RewardScorer.score, []

    def crashing_score(self, conversations, progress=False):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real_score(self, conversations, progress)

    monkeypatch.setattr(scorer_module.RewardScorer, "score", crashing_score)
    with pytest.raises(RuntimeError, match="killed"):
        almost_main(score_args(tiny_reward_model_path, data, tmp_path / "resumed"))
    partial = tmp_path / "resumed" / (OUTPUT_FILE + ".partial")
    assert len(partial.read_text().splitlines()) == 8 and not (tmp_path / "resumed" / OUTPUT_FILE).exists()
    monkeypatch.setattr(scorer_module.RewardScorer, "score", real_score)

    assert almost_main(score_args(tiny_reward_model_path, data, tmp_path / "resumed")) == 0
    resumed = [json.loads(line) for line in (tmp_path / "resumed" / OUTPUT_FILE).read_text().splitlines()]
    assert [r.keys() for r in resumed] == [r.keys() for r in full]
    for a, b in zip(resumed, full):
        for key in ("reward", "reward_chosen", "reward_rejected"):
            if key in b:
                assert a[key] == pytest.approx(b[key], abs=1e-5)
    assert not partial.exists()
    # Finished: a rerun is a no-op.
    assert almost_main(score_args(tiny_reward_model_path, data, tmp_path / "resumed")) == 0


def test_score_rejects_rows_it_cannot_score(tmp_path, tiny_reward_model_path, capsys):
    data = write(tmp_path / "rows.jsonl", [{"prompt": "a", "response": "b"}, {"text": "no answer"}])
    assert almost_main(score_args(tiny_reward_model_path, data, tmp_path / "s")) == 2
    assert "row 2 needs 'messages'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_eval_writes_metrics_plot_and_table(tmp_path, tiny_reward_model_path, capsys):
    pairs = [
        {
            "chosen": f"\n\nHuman: q{i}\n\nAssistant: {'long answer ' * (i % 5 + 1)}",
            "rejected": f"\n\nHuman: q{i}\n\nAssistant: short {i}",
            "type": ["helpful", "harmless"][i % 2],
        }
        for i in range(12)
    ]
    data = write(tmp_path / "hh.jsonl", pairs)
    out = tmp_path / "eval"
    assert (
        almost_main(["rm", "eval", "--model_name_or_path", tiny_reward_model_path, "--data_path", str(data), "--output_dir", str(out)]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 12 and set(metrics["subsets"]) == {"helpful", "harmless"}
    assert 0 <= metrics["accuracy"] <= 1 and metrics["ci95"][0] <= metrics["accuracy"] <= metrics["ci95"][1]
    assert metrics["length_bias"]["chosen_longer"]["n"] == 12 and metrics["length_bias"]["length_only_accuracy"] == 1.0
    assert -1 <= metrics["length_bias"]["spearman_reward_length"] <= 1
    # Every chosen answer is longer here: no balance can be struck, and the file says so.
    assert metrics["length_balanced"]["accuracy"] is None and metrics["length_balanced"]["chosen_longer"]["n"] == 12
    assert (out / "reward_eval.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "rewards.jsonl").read_text().splitlines()) == 12
    assert "chosen answer longer" in capsys.readouterr().out
