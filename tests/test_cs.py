"""CS: the seed's pairing walk and length filter, the rubric, both input layouts, and bad input."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from almost import cli
from almost.errors import AlmostError
from almost.feedback.cs import Answer, CSArguments, length_threshold, parse_rubric, prompt_pairs, run_cs


def answers(*specs) -> list[Answer]:
    """("A", 0, 121) → Answer A at rank 0 with a 121-character text."""
    return [Answer(config, rank, config.lower() * length) for config, rank, length in specs]


def names(pairs) -> list[tuple[str, str]]:
    return [(chosen.config, rejected.config) for chosen, rejected in pairs]


# --- the pairing walk and the filter ---------------------------------------------------------------


def test_issue_example_all_longer_than_next():
    pairs, dropped = prompt_pairs(answers(("A", 0, 121), ("B", 1, 81), ("C", 2, 61)))
    assert names(pairs) == [("A", "B"), ("B", "C")]
    assert dropped == 0


def test_issue_example_short_best_answer_is_filtered():
    pairs, dropped = prompt_pairs(answers(("A", 0, 41), ("B", 1, 201), ("C", 2, 191)))
    assert names(pairs) == [("B", "C")]
    assert dropped == 2  # A>B and A>C


def test_threshold_is_mean_minus_half_population_std():
    lengths = [41, 201, 191]
    assert length_threshold(lengths) == pytest.approx(statistics.fmean(lengths) - statistics.pstdev(lengths) / 2)
    assert length_threshold([10]) == 10


def test_with_two_answers_the_filter_keeps_only_a_longer_chosen():
    # The shorter of two lengths x < y is always below mean - std/2 = (x + 3y) / 4: a two-configuration
    # rubric (or a prompt with two valid answers) yields only pairs whose chosen answer is the longer.
    for better, worse in [(10, 11), (100, 101), (100, 400), (399, 400), (50, 50), (400, 100)]:
        pairs, dropped = prompt_pairs(answers(("A", 0, better), ("B", 1, worse)))
        assert (names(pairs), dropped) == (([("A", "B")], 0) if better >= worse else ([], 1))
        # Without the filter every ranked pair stays, and length is left to --length_balance.
        unfiltered, dropped = prompt_pairs(answers(("A", 0, better), ("B", 1, worse)), length_filter=False)
        assert (names(unfiltered), dropped) == ([("A", "B")], 0)


def test_shorter_chosen_above_threshold_is_kept():
    # A is shorter than B but not below mean - std/2 (mean 100, std 10 → 95): kept.
    pairs, dropped = prompt_pairs(answers(("A", 0, 100), ("B", 1, 110), ("C", 2, 90)))
    assert names(pairs) == [("A", "B"), ("B", "C")]
    assert dropped == 0


def test_short_chosen_but_longer_than_rejected_is_kept():
    # Both conditions are needed to drop: A is below the threshold but longer than C.
    pairs, dropped = prompt_pairs(answers(("A", 0, 60), ("B", 1, 300), ("C", 2, 50)))
    assert ("A", "C") in names(pairs)
    assert dropped == 1  # A>B only


def test_each_chosen_configuration_is_used_once():
    pairs, _ = prompt_pairs(answers(("A", 0, 400), ("B", 1, 300), ("C", 2, 200), ("D", 3, 100)))
    assert names(pairs) == [("A", "B"), ("B", "C"), ("C", "D")]


def test_equal_ranks_are_never_compared_and_rank_is_used_once():
    # A and B share rank 0: A>C is emitted, which uses rank 0, so B never becomes chosen.
    pairs, _ = prompt_pairs(answers(("A", 0, 300), ("B", 0, 290), ("C", 1, 100)))
    assert names(pairs) == [("A", "C")]


def test_filtered_best_lets_the_next_rank_pair_with_every_lower_one_once():
    pairs, dropped = prompt_pairs(answers(("A", 0, 10), ("B", 1, 300), ("C", 2, 290), ("D", 3, 280)))
    assert names(pairs) == [("B", "C"), ("C", "D")]
    assert dropped == 3


def test_sorted_by_rank_not_by_input_order():
    pairs, _ = prompt_pairs(answers(("C", 2, 61), ("A", 0, 121), ("B", 1, 81)))
    assert names(pairs) == [("A", "B"), ("B", "C")]


def test_fewer_than_two_answers_make_no_pairs():
    assert prompt_pairs(answers(("A", 0, 100))) == ([], 0)
    assert prompt_pairs([]) == ([], 0)


# --- the rubric ------------------------------------------------------------------------------------


def test_rubric_ranks_and_ties():
    assert parse_rubric(["A", "B,C", "D"]) == {"A": 0, "B": 1, "C": 1, "D": 2}


@pytest.mark.parametrize("rubric", [["A", "A"], ["A,B", "B"]])
def test_rubric_naming_a_configuration_twice_is_an_error(rubric):
    with pytest.raises(AlmostError, match="twice"):
        parse_rubric(rubric)


@pytest.mark.parametrize("rubric", [["A"], ["A,B"], []])
def test_rubric_needs_two_ranks(rubric):
    with pytest.raises(AlmostError, match="two ranks"):
        parse_rubric(rubric)


# --- the stage on files ----------------------------------------------------------------------------


def write_rg(directory, name, prompts, responses, bad=()):
    with open(directory / f"{name}.jsonl", "w") as f:
        for i, (p, r) in enumerate(zip(prompts, responses)):
            f.write(json.dumps({"index": i, "prompt": p, "response": r, "bad": i in bad, "bad_reasons": [], "config": name}) + "\n")


PROMPTS = ["p0", "p1", "p2"]


def three_configurations(tmp_path):
    write_rg(tmp_path, "big", PROMPTS, ["a" * 121, "a" * 41, "a" * 90], bad={2})
    write_rg(tmp_path, "mid", PROMPTS, ["b" * 81, "b" * 201, "b" * 80])
    write_rg(tmp_path, "small", PROMPTS, ["c" * 61, "c" * 191, ""])


def test_run_cs_writes_pairs_and_stats(tmp_path):
    three_configurations(tmp_path)
    stats = run_cs(CSArguments(output_dir=str(tmp_path), rubric=["big", "mid", "small"]))
    rows = [json.loads(line) for line in (tmp_path / "comparison.jsonl").read_text().splitlines()]
    got = [(r["prompt"], r["chosen_config"], r["rejected_config"]) for r in rows]
    # p2: big is BAD and small is empty, so only one valid answer.
    assert got == [("p0", "big", "mid"), ("p0", "mid", "small"), ("p1", "mid", "small")]
    assert rows[0]["chosen"] == "a" * 121 and rows[0]["rejected"] == "b" * 81
    assert set(rows[0]) == {"prompt", "chosen", "rejected", "chosen_config", "rejected_config"}
    saved = json.loads((tmp_path / "cs_stats.json").read_text())
    assert saved == stats
    assert stats["prompts"] == 3 and stats["pairs"] == 3
    assert stats["dropped_by_filter"] == 2 and stats["prompts_with_fewer_than_two_valid"] == 1
    assert stats["pairs_per_configuration_pair"] == {"mid > small": 2, "big > mid": 1}


def test_comparisons_load_with_datasets_for_the_reward_trainer(tmp_path):
    import datasets
    from trl.data_utils import is_conversational

    three_configurations(tmp_path)
    run_cs(CSArguments(output_dir=str(tmp_path), rubric=["big", "mid", "small"]))
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "comparison.jsonl"), split="train")
    assert ds.num_rows == 3
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    # Standard (not conversational) preference rows: RewardTrainer appends chosen/rejected to prompt.
    assert not is_conversational(ds[0])
    assert all(isinstance(ds[0][c], str) for c in ("prompt", "chosen", "rejected"))


def test_input_dir_separate_from_output_dir(tmp_path):
    rg_dir, cs_dir = tmp_path / "rg", tmp_path / "cs"
    rg_dir.mkdir()
    three_configurations(rg_dir)
    run_cs(CSArguments(output_dir=str(cs_dir), input_dir=str(rg_dir), rubric=["big", "mid,small"]))
    assert (cs_dir / "comparison.jsonl").exists() and not (rg_dir / "comparison.jsonl").exists()


def test_seed_layout_prompts_txt_and_json_lists(tmp_path):
    (tmp_path / "prompts.txt").write_text("p0\np1\n")
    (tmp_path / "llama-2-13b-hf-Faithful-3shot.json").write_text(json.dumps(["x" * 121, "BAD"]))
    (tmp_path / "llama-2-7b-hf-Faithful-3shot.json").write_text(json.dumps(["y" * 81, "y" * 100]))
    (tmp_path / "llama-2-7b-hf-HHH-1shot.json").write_text(json.dumps(["z" * 61, "z" * 50]))
    stats = run_cs(
        CSArguments(
            output_dir=str(tmp_path), rubric=["llama-2-13b-hf-Faithful-3shot", "llama-2-7b-hf-Faithful-3shot", "llama-2-7b-hf-HHH-1shot"]
        )
    )
    rows = [json.loads(line) for line in (tmp_path / "comparison.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["chosen"][0], r["rejected"][0]) for r in rows] == [("p0", "x", "y"), ("p0", "y", "z"), ("p1", "y", "z")]
    assert stats["valid_answers"]["llama-2-13b-hf-Faithful-3shot"] == 1


# --- bad input: one line, exit 2, nothing written --------------------------------------------------


def cs_cli(capsys, directory, *rubric) -> tuple[int, str]:
    """``almost cs`` through the CLI dispatcher: (exit status, stderr)."""
    status = cli.main(["cs", "--output_dir", str(directory), "--rubric", *rubric])
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    "setup, rubric, message",
    [
        (lambda d: None, ["big", "nothing"], "'nothing', which has no output"),
        (lambda d: None, ["big", "mid", "big"], "twice"),
        (lambda d: write_rg(d, "short", PROMPTS[:2], ["x", "y"]), ["big", "short"], "has 2 answers but big has 3"),
        (lambda d: write_rg(d, "other", ["p0", "q1", "p2"], ["x", "y", "z"]), ["big", "other"], "differ at prompt 1"),
        (lambda d: (d / "broken.jsonl").write_text('{"index": 0, "prompt": "p0"\n'), ["big", "broken"], "malformed JSON"),
        (lambda d: (d / "seedbroken.json").write_text("[1, 2"), ["big", "seedbroken"], "malformed JSON"),
        (lambda d: (d / "seedlist.json").write_text('["a", "b", "c"]'), ["big", "seedlist"], "needs .*prompts.txt"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, setup, rubric, message):
    three_configurations(tmp_path)
    setup(tmp_path)
    status, err = cs_cli(capsys, tmp_path, *rubric)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), err
    assert not (tmp_path / "comparison.jsonl").exists() and not (tmp_path / "cs_stats.json").exists()


def test_unmerged_shards_point_to_almost_merge(tmp_path, capsys):
    three_configurations(tmp_path)
    (tmp_path / "sharded.shard-0-of-2.jsonl").write_text("")
    status, err = cs_cli(capsys, tmp_path, "big", "sharded")
    assert status == 2 and "almost merge" in err


# --- length controls (off by default) ---------------------------------------------------------------


def test_max_length_ratio_skips_far_apart_pairs_and_lets_the_walk_go_on():
    from collections import Counter

    # A (300) vs B (100) is 3x apart: skipped, so A pairs with C (200, 1.5x) instead.
    drops = Counter()
    pairs, dropped = prompt_pairs(answers(("A", 0, 300), ("B", 1, 100), ("C", 2, 200)), max_length_ratio=2.0, drops=drops)
    assert names(pairs) == [("A", "C")] and dropped == 1 and drops["max_length_ratio"] == 1  # B > C: the seed's filter
    # A is too far from both B and C; B > C (1.5x) is the only pair left.
    drops = Counter()
    pairs, dropped = prompt_pairs(answers(("A", 0, 400), ("B", 1, 150), ("C", 2, 100)), max_length_ratio=2.0, drops=drops)
    assert names(pairs) == [("B", "C")] and dropped == 0 and drops["max_length_ratio"] == 2
    # Without the option the seed's walk is unchanged.
    assert names(prompt_pairs(answers(("A", 0, 400), ("B", 1, 150), ("C", 2, 100)))[0]) == [("A", "B"), ("B", "C")]


RUBRIC = ["good", "weak,poor"]  # weak and poor share a rank: one pair per prompt, good > weak


def balance_inputs(tmp_path, n=40):
    # Chosen ("good") longer on 30 prompts, shorter on 6, equal on 4. Where it is shorter, a short
    # "poor" answer lowers the seed filter's threshold so that the pair is kept.
    good = ["g" * (200 if i < 30 else 180 if i < 36 else 150) for i in range(n)]
    weak = ["w" * (100 if i < 30 else 200 if i < 36 else 150) for i in range(n)]
    poor = ["p" * 100 for _ in range(n)]
    prompts = [f"p{i}" for i in range(n)]
    write_rg(tmp_path, "good", prompts, good)
    write_rg(tmp_path, "weak", prompts, weak)
    write_rg(tmp_path, "poor", prompts, poor, bad=set(range(30)) | set(range(36, n)))


def test_length_balance_halves_the_longer_share_seeded(tmp_path):
    balance_inputs(tmp_path)
    stats = run_cs(CSArguments(output_dir=str(tmp_path), rubric=RUBRIC, length_balance=True, seed=3))
    rows = [json.loads(line) for line in (tmp_path / "comparison.jsonl").read_text().splitlines()]
    longer = [r for r in rows if len(r["chosen"]) > len(r["rejected"])]
    shorter = [r for r in rows if len(r["chosen"]) < len(r["rejected"])]
    assert len(longer) == len(shorter) == 6 and len(rows) == 16  # all 4 of equal length kept
    assert stats["dropped_by_length_balance"] == 24 and stats["pairs"] == 16
    assert (stats["chosen_longer"], stats["chosen_shorter"]) == (6, 6)
    assert [r["prompt"] for r in rows] == sorted((r["prompt"] for r in rows), key=lambda p: int(p[1:]))  # order kept
    again = run_cs(CSArguments(output_dir=str(tmp_path / "again"), input_dir=str(tmp_path), rubric=RUBRIC, length_balance=True, seed=3))
    assert (tmp_path / "again" / "comparison.jsonl").read_text() == (tmp_path / "comparison.jsonl").read_text() and again == stats
    run_cs(CSArguments(output_dir=str(tmp_path / "other"), input_dir=str(tmp_path), rubric=RUBRIC, length_balance=True, seed=4))
    assert (tmp_path / "other" / "comparison.jsonl").read_text() != (tmp_path / "comparison.jsonl").read_text()


def test_length_options_off_keep_the_seed_stats(tmp_path):
    balance_inputs(tmp_path)
    stats = run_cs(CSArguments(output_dir=str(tmp_path), rubric=RUBRIC))
    assert stats["pairs"] == 40 and "chosen_longer" not in stats and "dropped_by_length_balance" not in stats
    ratio = run_cs(CSArguments(output_dir=str(tmp_path / "r"), input_dir=str(tmp_path), rubric=RUBRIC, max_length_ratio=1.5))
    # 200 vs 100 is 2x: dropped (30); 180 vs 200 and 150 vs 150 are within 1.5x: kept.
    assert ratio["dropped_by_max_length_ratio"] == 30 and ratio["pairs"] == 10
    assert (ratio["chosen_longer"], ratio["chosen_shorter"]) == (0, 6)


def test_length_options_from_the_command_line(tmp_path, capsys):
    balance_inputs(tmp_path)
    assert (
        cli.main(["cs", "--output_dir", str(tmp_path), "--rubric", "good", "weak,poor", "--length_balance", "--max_length_ratio", "3"]) == 0
    )
    assert "dropped by --max_length_ratio: 0; --length_balance: 24" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "cs",
                "--output_dir",
                str(tmp_path / "x"),
                "--input_dir",
                str(tmp_path),
                "--rubric",
                "good",
                "weak,poor",
                "--max_length_ratio",
                "0.5",
            ]
        )
        == 2
    )
    assert "--max_length_ratio must be at least 1" in capsys.readouterr().err
