"""``almost report`` on hand-made run directories: every section's numbers, plots, and missing inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from almost.cli import main as cli
from almost.run.report import FIGURES, write_report
from almost.run.summary import step_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def rg_row(i: int, config: str, response: str, bad: bool) -> dict:
    return {"index": i, "prompt": f"q{i}", "response": response, "bad": bad, "bad_reasons": ["too_short"] if bad else [], "config": config}


@pytest.fixture
def full_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "pg").mkdir(parents=True)
    (run / "pg" / "prompts.txt").write_text("How do I bake bread?\nWhat is a prime number?\nName three rivers.\n", encoding="utf-8")
    write_json(run / "pg" / "pg_stats.json", {"accepted": 3, "requests": 7})
    # Configuration "good": answers of 100 and 300 characters, none BAD; "weak": one BAD of two.
    write_jsonl(run / "rg" / "good.jsonl", [rg_row(0, "good", "x" * 100, False), rg_row(1, "good", "y" * 300, False)])
    write_jsonl(run / "rg" / "weak.jsonl", [rg_row(0, "weak", "z" * 20, True), rg_row(1, "weak", "w" * 60, False)])
    pair = {"prompt": "q", "chosen": "c", "rejected": "r", "chosen_config": "good", "rejected_config": "weak"}
    write_jsonl(run / "cs" / "comparison.jsonl", [pair] * 5)
    write_json(
        run / "cs" / "cs_stats.json",
        {"prompts": 9, "pairs": 5, "dropped_by_filter": 2, "valid_answers": {"good": 2, "weak": 1}, "pairs_per_configuration_pair": {"good > weak": 5}},
    )
    bias = {"chosen_longer": {"accuracy": 0.9, "n": 10}, "chosen_shorter": {"accuracy": 0.25, "n": 4}, "length_only_accuracy": 0.714, "spearman_reward_length": 0.61}
    write_json(run / "rm" / "metrics.json", {"data": {"train_pairs": 40, "heldout_pairs": 14, "truncated": 1, "dropped_long": 0}, "heldout": {"accuracy": 0.7143, "n": 14, "length_bias": bias, "length_balanced": {"accuracy": 0.575, "ci95": [0.31, 0.84]}}})
    write_json(
        run / "rmsp" / "rmsp_summary.json",
        {"dialogues": 4, "kept_dialogues": 4, "per_turn": [
            {"turn": 1, "dialogues": 4, "mean_best_reward": 1.25, "mean_candidate_reward": 0.5},
            {"turn": 2, "dialogues": 3, "mean_best_reward": 0.875, "mean_candidate_reward": -0.125},
        ], "user_turns": {"asked": 5, "samples": 10, "retries": 5, "accepted_after_retry": 2,
            "user_repeats": {"rejected": 5, "rate": 0.5, "first_try_rate": 0.4, "dialogues_ended": 1},
            "user_role_swap": {"rejected": 1, "rate": 0.1, "first_try_rate": 0.2, "dialogues_ended": 0}}},
    )  # fmt: skip
    write_jsonl(run / "rmsp" / "demonstrations.jsonl", [{"messages": []}] * 4)
    write_json(run / "sft" / "metrics.json", {"train": {"global_step": 4, "first_loss": 1.7, "last_loss": 1.45}})
    (run / "rl").mkdir()
    with open(run / "rl" / "rl_log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "reward", "kl", "completion_length", "loss"])
        writer.writeheader()
        for step, (reward, kl) in enumerate([(0.1, 0.0), (0.4, 0.02), (0.65, 0.05)], 1):
            writer.writerow({"step": step, "reward": reward, "kl": kl, "completion_length": 30 + step, "loss": ""})
    write_json(run / "eval" / "hhh" / "base" / "metrics.json", {"accuracy": 0.5, "n": 10})
    write_json(run / "eval" / "hhh" / "sft" / "metrics.json", {"accuracy": 0.6, "n": 10})
    write_json(run / "eval" / "hhh" / "rl" / "metrics.json", {"accuracy": 0.7, "n": 10})
    write_json(run / "eval" / "pairwise" / "sft-vs-base" / "metrics.json", {"win": 6, "tie": 0, "loss": 4, "n": 10, "win_rate": 0.6, "length_balanced": {
        "win_rate": 0.45, "ci95": [0.2, 0.7], "model_shorter": {"rate": 0.25, "n": 4}, "model_longer": {"rate": 0.65, "n": 5}, "same_length": 1}})
    return run


def test_full_report_has_every_number_and_plot(full_run: Path):
    assert cli(["report", str(full_run)]) == 0
    text = (full_run / "report.md").read_text()
    # PG
    assert "3 prompts" in text and "| requests | 7 |" in text
    # RG: good has mean length 200, no BAD; weak has one BAD of two (rate 0.500) and mean 60
    assert "| good | 2 | 0 | 0.000 | 200.000 |" in text
    assert "| weak | 2 | 1 | 0.500 | 60.000 |" in text
    # CS: 5 kept good > weak; cs_stats totals
    assert "| good | weak | 5 |" in text and "| dropped_by_filter | 2 |" in text and "| weak | 1 |" in text
    # RM: held-out agreement and length bias
    assert "| held-out synthetic pairs (rubric agreement) | 14 | 0.714 | 0.575 | [0.310, 0.840] | 0.900 | 0.250 | 0.714 | 0.610 |" in text
    # RMSP: best vs mean per turn
    assert "| 1 | 4 | 1.250 | 0.500 |" in text and "| 2 | 3 | 0.875 | -0.125 |" in text
    # RMSP: rejected user-simulator turns, as rmsp counted them
    assert "5 asked, 10 sampled (5 re-samples, 2 accepted after a re-sample)" in text
    assert "| user_repeats | 5 | 0.500 | 0.400 | 1 |" in text and "| user_role_swap | 1 | 0.100 | 0.200 | 0 |" in text
    # RL: first and last logged step
    assert "| first log | 1.000 | 0.100 | 0.000 | 31.000 |" in text
    assert "| last log | 3.000 | 0.650 | 0.050 | 33.000 |" in text
    # Evaluation: base vs SFT vs RL in that order, pairwise win rate
    assert "| base | 0.500 | – |" in text and "| rl | 0.700 | – |" in text
    assert "| sft-vs-base | – | 0.600 |" in text
    assert "| sft-vs-base | 0.600 | 0.250 | 4 | 0.650 | 5 | 1 | 0.450 | [0.200, 0.700] |" in text
    assert text.index("| base |") < text.index("| sft |") < text.index("| rl |")
    assert "No " not in text  # every section found its files
    for png in ("rg_answer_lengths", "cs_pairs", "rm_accuracy", "rmsp_rewards", "rl_curves", "eval"):
        path = full_run / FIGURES / f"{png}.png"
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000, png
        assert f"]({FIGURES}/{png}.png)" in text


def test_comparison_drops_per_pair_when_cs_records_them(tmp_path: Path):
    run = tmp_path / "run"
    stats = {"pairs": 3, "dropped_by_filter": 4, "pairs_per_configuration_pair": {"a > b": 2, "b > c": 1}, "dropped_per_configuration_pair": {"a > b": 3, "a > c": 1}}
    write_json(run / "cs_stats.json", stats)  # the seed's single-folder layout is found too
    text = write_report(run).read_text()
    assert "| a | b | 2 | 3 |" in text and "| b | c | 1 | 0 |" in text and "| a | c | 0 | 1 |" in text
    assert (run / FIGURES / "cs_pairs.png").exists()


def test_missing_inputs_are_reported_not_fatal(tmp_path: Path):
    run = tmp_path / "empty"
    run.mkdir()
    text = write_report(run).read_text()
    assert text.count("in this run yet") == 7
    assert not (run / FIGURES).exists()


def test_rmsp_turns_fall_back_to_the_dialogues(tmp_path: Path):
    run = tmp_path / "run"
    turns = [{"turn": 1, "candidates": [{"reward": 1.0}, {"reward": 3.0}, {"reward": None}], "chosen": 1}]
    write_jsonl(run / "rmsp" / "demonstrations.jsonl", [{"messages": [], "turns": turns}, {"messages": [], "turns": [{"turn": 1, "candidates": [{"reward": -1.0}], "chosen": 0}]}])
    text = write_report(run).read_text()
    # best: mean(3, -1) = 1; mean candidate over every scored candidate: mean(1, 3, -1) = 1
    assert "| 1 | 2 | 1.000 | 1.000 |" in text
    # Rejected user turns are rmsp's own counts: without its summary the report says so, never recounts.
    assert "has no `user_turns` counts" in text
    assert (run / FIGURES / "rmsp_rewards.png").exists()


def test_step_figures_for_the_summary(full_run: Path):
    assert step_figures("pg", full_run / "pg" / "prompts.txt") == "3 prompts"
    assert step_figures("rg", full_run / "rg" / "weak.jsonl") == "2 answers, 1 BAD, mean length 60 chars"
    assert step_figures("cs", full_run / "cs" / "comparison.jsonl") == "5 pairs, 2 dropped by the filter"
    assert step_figures("rm", full_run / "rm" / "config.json") == "accuracy 0.714 on 14 pairs"
    assert step_figures("sft", full_run / "sft" / "config.json") == "4 steps, loss 1.700 → 1.450"
    assert step_figures("rl", full_run / "rl" / "config.json") == "3 logged steps, reward 0.10 → 0.65, KL 0.050"
    assert step_figures("eval", full_run / "eval" / "pairwise" / "sft-vs-base" / "metrics.json") == "win_rate 0.600"


def test_report_of_a_missing_directory_is_one_line_error(tmp_path: Path, capsys):
    assert cli(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run directory not found" in err
