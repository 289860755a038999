"""The length-balanced measure on pairs whose answer is known: length-only judges score exactly 0.5."""

from __future__ import annotations

import pytest

from almost.evaluate.pairwise import Question, judge_both_orders, pairwise_metrics, pairwise_table
from almost.reward.evaluate import metrics_table
from almost.stats import length_balanced
from almost.stats import reward_pair_metrics as rm_metrics

# 7 pairs where the chosen answer is longer, 3 where it is shorter, 2 of equal length.
CHOSEN_LEN = [50, 60, 70, 80, 90, 100, 110, 10, 20, 30, 40, 40]
REJECTED_LEN = [10, 20, 30, 40, 50, 60, 70, 90, 80, 70, 40, 40]
ORACLE_SCORE = [1.0] * 12  # stands for "the chosen answer gets the higher reward"


def rm(chosen_rewards, rejected_rewards):
    return rm_metrics(chosen_rewards, rejected_rewards, CHOSEN_LEN, REJECTED_LEN)


def test_reward_equal_to_length_scores_exactly_half():
    m = rm([float(x) for x in CHOSEN_LEN], [float(x) for x in REJECTED_LEN])
    balanced = m["length_balanced"]
    # Plain accuracy rewards the length meter for the skew of the data (7 of 12), the balance does not.
    assert m["accuracy"] == pytest.approx(7 / 12)
    assert balanced["accuracy"] == 0.5 and balanced["ci95"] == [0.5, 0.5]
    assert (balanced["chosen_longer"]["n"], balanced["chosen_shorter"]["n"], balanced["same_length"]) == (7, 3, 2)
    assert (balanced["chosen_longer"]["rate"], balanced["chosen_shorter"]["rate"]) == (1.0, 0.0)


def test_anti_length_scores_half_and_oracle_scores_one():
    anti = rm([-float(x) for x in CHOSEN_LEN], [-float(x) for x in REJECTED_LEN])["length_balanced"]
    assert anti["accuracy"] == 0.5
    oracle = rm([1.0] * 12, [0.0] * 12)["length_balanced"]
    assert oracle["accuracy"] == 1.0 and oracle["ci95"] == [1.0, 1.0]


def test_hand_computed_case_and_ties_wrong():
    # Chosen longer: right on 5 of 7 (pairs 0-4), wrong on 5 (tie) and 6. Chosen shorter: right on 1 of 3.
    chosen = [1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 9, 9]
    rejected = [0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0, 0]
    m = rm([float(x) for x in chosen], [float(x) for x in rejected])
    balanced = m["length_balanced"]
    assert balanced["chosen_longer"]["rate"] == pytest.approx(5 / 7)
    assert balanced["chosen_shorter"]["rate"] == pytest.approx(1 / 3)
    assert balanced["accuracy"] == pytest.approx((5 / 7 + 1 / 3) / 2)
    low, high = balanced["ci95"]
    assert low < balanced["accuracy"] < high and 0 <= low and high <= 1
    # Seeded: the same pairs give the same interval.
    assert rm([float(x) for x in chosen], [float(x) for x in rejected])["length_balanced"]["ci95"] == [low, high]
    assert "length-balanced" in metrics_table(m) and f"{balanced['accuracy']:.3f}" in metrics_table(m)


def test_one_sided_data_has_no_balanced_value():
    found = length_balanced([1.0, 0.0], [10, 20], [5, 5])
    assert found["value"] is None and found["a_shorter"]["n"] == 0 and found["ci95"] == [None, None]


def test_bootstrap_interval_narrows_with_more_pairs():
    def width(k):
        points = ([1.0] * 3 + [0.0]) * k + ([1.0, 0.0]) * k
        a = [20] * 4 * k + [10] * 2 * k
        b = [10] * 4 * k + [20] * 2 * k
        found = length_balanced(points, a, b)
        assert found["value"] == pytest.approx((0.75 + 0.5) / 2)
        return found["ci95"][1] - found["ci95"][0]

    assert 0 < width(50) < width(5)


def test_bootstrap_on_a_large_set_is_drawn_in_parts_and_repeatable():
    import numpy as np

    rng = np.random.default_rng(1)
    n = 6000  # more than one part of resamples
    a, b = rng.integers(1, 100, n), rng.integers(1, 100, n)
    points = (rng.random(n) < 0.7).astype(float)
    first, again = length_balanced(points, a, b), length_balanced(points, a, b)
    assert first == again and first["bootstrap"]["undefined"] == 0
    low, high = first["ci95"]
    assert low < first["value"] < high and high - low < 0.05


class Scripted:
    def __init__(self, fn):
        self.fn, self.name = fn, "scripted"

    def compare(self, items):
        return [self.fn(q, a, b) for q, a, b in items]


QUESTIONS = [Question(str(i), f"q{i}") for i in range(6)]
# Model answers longer on 0-2, shorter on 3-4, the same length on 5.
MODEL = {"0": "aaaaaa", "1": "bbbbbb", "2": "cccccc", "3": "d", "4": "e", "5": "fff"}
BASELINE = {"0": "x", "1": "y", "2": "z", "3": "uuuuuu", "4": "vvvvvv", "5": "www"}


def test_pairwise_length_judge_scores_half_balanced():
    rows = judge_both_orders(Scripted(lambda q, a, b: (float(len(a)), float(len(b)))), QUESTIONS, MODEL, BASELINE)
    m = pairwise_metrics(rows)
    split = m["length_balanced"]
    assert (split["model_longer"]["rate"], split["model_shorter"]["rate"]) == (1.0, 0.0)
    assert split["win_rate"] == 0.5 and split["same_length"] == 1
    assert (split["model_longer"]["n"], split["model_shorter"]["n"]) == (3, 2)
    assert "model's answer is shorter: 0.000 (2), longer: 1.000 (3)" in pairwise_table(m)


def test_pairwise_oracle_and_ties_count_half():
    # The model wins everywhere except question 3, a tie (the judge prefers the first position).
    def judge(q, a, b):
        if q == "q3":
            return (1.0, 0.0)
        return (1.0, 0.0) if a == MODEL[q[1:]] else (0.0, 1.0)

    m = pairwise_metrics(judge_both_orders(Scripted(judge), QUESTIONS, MODEL, BASELINE))
    split = m["length_balanced"]
    assert split["model_longer"]["rate"] == 1.0 and split["model_shorter"]["rate"] == pytest.approx(0.75)
    assert split["win_rate"] == pytest.approx(0.875)


def test_shipped_human_pairs_are_disjoint_halves_that_the_script_reproduces(tmp_path):
    import gzip
    import json
    from pathlib import Path

    from almost.reward.evaluate import eval_data_path
    from almost.reward.formats import load_pairs
    from almost.shipped import HH_HARMLESS_DEV, HH_HARMLESS_TEST, SHIPPED_PAIRS

    assert eval_data_path("hh-harmless-dev") == HH_HARMLESS_DEV and eval_data_path("hh-harmless-test") == HH_HARMLESS_TEST
    assert eval_data_path("some/file.jsonl") == Path("some/file.jsonl")
    for path in SHIPPED_PAIRS.values():
        assert path.stat().st_size < 1_000_000
    assert (HH_HARMLESS_DEV.parent / "hh-rlhf-LICENSE").read_text().startswith("MIT License")
    dev, test = (load_pairs(p) for p in (HH_HARMLESS_DEV, HH_HARMLESS_TEST))
    assert (dev.rows, len(dev.pairs), test.rows, len(test.pairs)) == (1156, 1154, 1156, 1153)

    def rows(path):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    dev_rows, test_rows = rows(HH_HARMLESS_DEV), rows(HH_HARMLESS_TEST)
    ids = [r["id"] for r in dev_rows + test_rows]
    assert sorted(ids) == list(range(2312))  # the whole split, each row once, no overlap
    # Rebuild the source order from the ids and split it again with the script: the same bytes.
    module = _load_script("make_hh_eval_split")
    source = sorted(dev_rows + test_rows, key=lambda r: r["id"])
    again_dev, again_test = module.split([{"chosen": r["chosen"], "rejected": r["rejected"]} for r in source])
    module.write_gz(tmp_path / "dev.gz", again_dev)
    module.write_gz(tmp_path / "test.gz", again_test)
    assert (tmp_path / "dev.gz").read_bytes() == HH_HARMLESS_DEV.read_bytes()
    assert (tmp_path / "test.gz").read_bytes() == HH_HARMLESS_TEST.read_bytes()


@pytest.mark.parametrize("name", ["hh-harmless-test", "HH_PATH"])
def test_rm_train_refuses_the_shipped_evaluation_pairs(name, tmp_path, capsys):
    from almost.cli import main as almost_main
    from almost.shipped import HH_HARMLESS_TEST

    data = str(HH_HARMLESS_TEST) if name == "HH_PATH" else name
    assert almost_main(["rm", "train", "--data_path", data, "--output_dir", str(tmp_path / "rm")]) == 2
    assert "never train on it" in capsys.readouterr().err and not (tmp_path / "rm").exists()


def test_pairwise_length_split_per_category():
    questions = [Question(q.question_id, q.text, "helpful" if q.question_id in ("0", "3") else "harmless") for q in QUESTIONS]
    rows = judge_both_orders(Scripted(lambda q, a, b: (float(len(a)), float(len(b)))), questions, MODEL, BASELINE)
    m = pairwise_metrics(rows)
    helpful, harmless = (m["per_category"][c]["length_balanced"] for c in ("helpful", "harmless"))
    assert (helpful["model_longer"]["n"], helpful["model_shorter"]["n"], helpful["win_rate"]) == (1, 1, 0.5)
    assert (harmless["model_longer"]["n"], harmless["model_shorter"]["n"], harmless["same_length"], harmless["win_rate"]) == (2, 1, 1, 0.5)
    assert "  helpful: win rate where the model's answer is shorter: 0.000 (1), longer: 1.000 (1)" in pairwise_table(m)


def _load_script(name: str):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_proof_questions_are_held_out_and_the_script_reproduces_them(tmp_path):
    import gzip
    import json
    from collections import Counter

    from rouge_reference import rouge_l_reference

    from almost.evaluate.pairwise import question_data_path, read_questions
    from almost.feedback.pg import rouge_tokens
    from almost.reward.formats import parse_transcript
    from almost.shipped import ASSETS, HH_HARMLESS_DEV, HH_HARMLESS_TEST, PROOF_QUESTIONS

    assert question_data_path("proof-questions") == PROOF_QUESTIONS
    questions = read_questions(question_data_path("proof-questions"))  # refuses a question_id seen twice
    assert Counter(q.category for q in questions) == {"helpful": 60, "harmless": 60}
    assert len({q.text for q in questions}) == 120

    module = _load_script("make_proof_questions")
    module.write_jsonl(tmp_path / "again.jsonl", module.helpful_questions() + module.harmless_questions())
    assert (tmp_path / "again.jsonl").read_bytes() == PROOF_QUESTIONS.read_bytes()

    # Helpful: held out from PG by its own near-duplicate rule, against the seeds and each other.
    seeds = [
        line
        for name in ("seed_prompts.txt", "seed_prompts_harmless.txt")
        for line in (ASSETS / name).read_text().splitlines()
        if line.strip()
    ]
    helpful = [q.text for q in questions if q.category == "helpful"]
    for i, text in enumerate(helpful):
        closest = max(rouge_l_reference(rouge_tokens(other), rouge_tokens(text)) for other in seeds + helpful[:i] + helpful[i + 1 :])
        assert closest < 0.5, text
    too_close = tmp_path / "too_close.jsonl"
    too_close.write_text(json.dumps({"question_id": "x", "text": "How do I undo the last commit in git?"}) + "\n")
    with pytest.raises(SystemExit, match="not held out from PG"):
        module.helpful_questions(too_close)

    # Harmless: each the one human turn of a test-half conversation, never a dev-half one.
    def rows(path):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return {r["id"]: r for r in map(json.loads, f)}

    test_rows, dev_ids = rows(HH_HARMLESS_TEST), set(rows(HH_HARMLESS_DEV))
    for q in (q for q in questions if q.category == "harmless"):
        row_id = int(q.question_id.removeprefix("harmless-"))
        assert row_id in test_rows and row_id not in dev_ids
        for side in ("chosen", "rejected"):
            messages = parse_transcript(test_rows[row_id][side])
            assert [m["role"] for m in messages] == ["user", "assistant"] and messages[0]["content"] == q.text
