"""`almost rm score` (all row kinds, resume after a crash) and `almost rm eval` outputs, tiny RM."""

from __future__ import annotations

import json

import pytest

from almost.cli import main as almost_main
from almost.reward import model as scorer_module
from almost.stages import RM_SCORE

OUTPUT_FILE = RM_SCORE.outputs.product_file


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


def test_eval_resumes_after_a_crash_and_reuses_finished_rewards(tmp_path, tiny_reward_model_path, monkeypatch, capsys):
    from almost.reward import evaluate as evaluate_module

    pairs = [
        {"prompt": f"q{i}", "chosen": "yes " * (i % 4 + 1), "rejected": "no " * ((i + 2) % 5 + 1), "subset": ["a", "b"][i % 2]}
        for i in range(12)
    ]
    data = write(tmp_path / "pairs.jsonl", pairs)

    def eval_args(out, *extra):
        return ["rm", "eval", "--model_name_or_path", tiny_reward_model_path, "--data_path", str(data), "--output_dir", str(out), *extra]

    monkeypatch.setattr(evaluate_module, "PAIRS_PER_APPEND", 4)
    assert almost_main(eval_args(tmp_path / "full", "--plot", "false")) == 0
    full = (tmp_path / "full" / "rewards.jsonl").read_text().splitlines()
    full_metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())

    # Killed while scoring the third chunk: two chunks are on disk, and no metrics pretend to be final.
    real_score_pairs, calls = scorer_module.RewardScorer.score_pairs, []

    def crashing_score_pairs(self, first, second, progress=False):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real_score_pairs(self, first, second, progress)

    monkeypatch.setattr(scorer_module.RewardScorer, "score_pairs", crashing_score_pairs)
    resumed = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="killed"):
        almost_main(eval_args(resumed, "--plot", "false"))
    assert len((resumed / "rewards.jsonl.partial").read_text().splitlines()) == 8
    assert not (resumed / "rewards.jsonl").exists() and not (resumed / "metrics.json").exists()

    # The rerun scores only the last chunk (one more call) and ends where the uninterrupted run did.
    assert almost_main(eval_args(resumed, "--plot", "false")) == 0
    assert len(calls) == 4
    rows = [json.loads(line) for line in (resumed / "rewards.jsonl").read_text().splitlines()]
    assert [r.keys() for r in rows] == [json.loads(line).keys() for line in full]
    for row, line in zip(rows, full):
        expected = json.loads(line)
        assert row["reward_chosen"] == pytest.approx(expected["reward_chosen"], abs=1e-5)
        assert row["reward_rejected"] == pytest.approx(expected["reward_rejected"], abs=1e-5)
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["n"] == full_metrics["n"] == 12 and metrics["accuracy"] == full_metrics["accuracy"]
    assert not (resumed / "rewards.jsonl.partial").exists()

    # Finished: a rerun computes the metrics from the rewards on disk without scoring anything.
    capsys.readouterr()
    assert almost_main(eval_args(resumed, "--plot", "false")) == 0
    assert len(calls) == 4 and "is complete; metrics from its rewards" in capsys.readouterr().out
    # Rewards made otherwise are never mixed with new ones: one line, exit 2, until --overwrite.
    assert almost_main(eval_args(resumed, "--plot", "false", "--max_length", "512")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert almost_main(eval_args(resumed, "--plot", "false", "--max_length", "512", "--overwrite")) == 0
    assert len(calls) == 7
