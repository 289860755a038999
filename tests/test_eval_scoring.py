"""HHH and TruthfulQA scoring on hand-made cases with a scripted model, plus one slow real-model run."""

from __future__ import annotations

import json

import pytest

from almost.cli import main as cli_main
from almost.config import ModelArguments
from almost.errors import AlmostError
from almost.evaluate.hhh import HHHConfig, hhh_metrics, hhh_prompt, run_hhh, score_pairs
from almost.evaluate.truthfulqa import TruthfulQAConfig, parse_questions, run_truthfulqa, score_questions
from almost.reward.formats import Pair
from almost.shipped import HHH_SAMPLE, TRUTHFULQA_SAMPLE


class ScriptedOptions:
    """Probabilities decided by a function of the prompt text (no model)."""

    tokenizer = None

    def __init__(self, probs):
        self.probs = probs
        self.prompts: list[str] = []

    def option_probs(self, prompts, options):
        self.prompts += list(prompts)
        return [list(self.probs(p)) for p in prompts]


def _ab(prompt: str) -> tuple[str, str]:
    a = prompt.split("Response A: ")[1].split("\n\nResponse B: ")[0]
    b = prompt.split("Response B: ")[1].split("\n\nWhich response")[0]
    return a, b


PAIRS = [
    Pair(({"role": "user", "content": "hi"},), "good", "bad", "helpful"),
    Pair(({"role": "user", "content": "q"},), "right", "wrong", "honest"),
]


def test_hhh_prompt_shows_both_answers_and_asks_for_a_letter():
    prompt = hhh_prompt(None, [{"role": "user", "content": "Hello?"}], "first", "second")
    assert "Human: Hello?" in prompt and _ab(prompt) == ("first", "second")
    assert prompt.endswith("response is Response")


def test_hhh_adds_both_orders():
    # Prefers "good"/"right" strongly when it is shown as B, weakly against when shown as A:
    # order 1 (better=A): A .4 B .6; order 2 (better=B): A .1 B .9 → better .4+.9 > worse .6+.1.
    def probs(prompt):
        a, _ = _ab(prompt)
        return (0.4, 0.6) if a in ("good", "right") else (0.1, 0.9)

    rows = score_pairs(ScriptedOptions(probs), PAIRS)
    assert [r["correct"] for r in rows] == [True, True]
    assert rows[0]["better_score"] == pytest.approx(1.3) and rows[0]["worse_score"] == pytest.approx(0.7)
    # Reading only the first order would have called it wrong (.4 < .6).
    assert rows[0]["probs_better_first"] == [0.4, 0.6]


def test_hhh_position_only_model_ties_and_ties_are_wrong():
    rows = score_pairs(ScriptedOptions(lambda p: (0.7, 0.3)), PAIRS)
    assert all(r["better_score"] == r["worse_score"] for r in rows)
    metrics = hhh_metrics(rows)
    assert metrics["accuracy"] == 0.0 and metrics["ties"] == 2 and metrics["position_a_rate"] == 1.0
    assert set(metrics["per_type"]) == {"helpful", "honest"}


def test_hhh_per_type_accuracy_on_sample_file(tmp_path):
    # Right on "harmless" only: the better answer gets .9 whichever position it is in.
    harmless = {json.loads(line)["chosen"].rsplit("Assistant: ", 1)[1] for line in open(HHH_SAMPLE) if '"harmless"' in line}

    def probs(prompt):
        a, b = _ab(prompt)
        return (0.9, 0.1) if a in harmless else (0.1, 0.9) if b in harmless else (0.9, 0.1)

    metrics = run_hhh(
        ModelArguments(model_name_or_path="scripted"),
        HHHConfig(data_path=str(HHH_SAMPLE), output_dir=str(tmp_path)),
        ScriptedOptions(probs),
    )
    assert metrics["per_type"]["harmless"]["accuracy"] == 1.0
    assert metrics["per_type"]["helpful"]["accuracy"] == 0.0
    assert json.loads((tmp_path / "metrics.json").read_text())["n"] == 16
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 16


def _mc(correct: int, n: int = 3) -> dict:
    return {"question": "Q?", "mc1_targets": {"choices": [f"c{i}" for i in range(n)], "labels": [int(i == correct) for i in range(n)]}}


def test_mc1_correct_index_comes_from_labels():
    questions = parse_questions([_mc(2), _mc(0)], "t")
    assert [q.correct for q in questions] == [2, 0]
    # The model believes choice c2 every time: right on the first question only.
    model = ScriptedOptions(lambda p: (0.8,) if "A: c2" in p else (0.1,))
    rows = score_questions(model, questions)
    assert [r["pick"] for r in rows] == [2, 2] and [r["correct"] for r in rows] == [True, False]
    assert len(model.prompts) == 6


def test_mc1_tie_is_wrong():
    rows = score_questions(ScriptedOptions(lambda p: (0.5,)), parse_questions([_mc(0)], "t"))
    assert rows[0]["correct"] is False


@pytest.mark.parametrize(
    "row",
    [
        {"question": "Q?"},
        {"question": "Q?", "mc1_targets": {"choices": ["a", "b"], "labels": [0, 0]}},
        {"question": "Q?", "mc1_targets": {"choices": ["a", "b"], "labels": [1]}},
    ],
)
def test_mc1_bad_rows_raise(row):
    with pytest.raises(AlmostError):
        parse_questions([row], "t")


def test_truthfulqa_sample_with_scripted_model(tmp_path):
    correct_answers = set()
    for line in open(TRUTHFULQA_SAMPLE):
        targets = json.loads(line)["mc1_targets"]
        correct_answers.add(targets["choices"][targets["labels"].index(1)])
    assert any(json.loads(line)["mc1_targets"]["labels"][0] == 0 for line in open(TRUTHFULQA_SAMPLE))
    model = ScriptedOptions(lambda p: (0.9,) if any(f"A: {c}\n" in p for c in correct_answers) else (0.2,))
    metrics = run_truthfulqa(
        ModelArguments(model_name_or_path="scripted"), TruthfulQAConfig(data_path=str(TRUTHFULQA_SAMPLE), output_dir=str(tmp_path)), model
    )
    assert metrics["accuracy"] == 1.0 and metrics["n"] == 12 and "Misconceptions" in metrics["per_category"]


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "nope"],
        ["eval", "hhh", "--data_path", "/nonexistent.jsonl", "--output_dir", "OUT"],
        ["eval", "truthfulqa", "--data_path", "/nonexistent.jsonl", "--output_dir", "OUT"],
        ["eval", "hhh", "--output_dir", "OUT"],
    ],
)
def test_eval_bad_input_exits_2(argv, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert not (tmp_path / "out").exists()


def test_eval_malformed_data_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "mc1_targets": \n')
    assert cli_main(["eval", "truthfulqa", "--data_path", str(bad), "--output_dir", str(tmp_path / "out")]) == 2
    assert "malformed JSON" in capsys.readouterr().err


@pytest.mark.slow
def test_hhh_on_real_smollm2(smollm2_path, tmp_path):
    # One pair of each type keeps this to seconds; the demo runs the whole sample file.
    rows, seen = [], set()
    for line in open(HHH_SAMPLE):
        row = json.loads(line)
        if row["type"] not in seen:
            seen.add(row["type"])
            rows.append(line)
    data = tmp_path / "hhh4.jsonl"
    data.write_text("".join(rows))
    out = tmp_path / "out"
    assert cli_main(["eval", "hhh", "--model_name_or_path", smollm2_path, "--data_path", str(data), "--output_dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 4 and set(metrics["per_type"]) == {"harmless", "helpful", "honest", "other"}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    # Real probabilities: A and B together take most of the next-token mass after "Response".
    assert all(0.5 < sum(r["probs_better_first"]) <= 1.0 + 1e-6 for r in rows)
