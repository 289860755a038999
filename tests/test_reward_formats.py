"""Preference formats, prefix splitting, tie handling and bad input of `almost rm` (no model runs)."""

from __future__ import annotations

import json

import pytest

from almost.cli import main as almost_main
from almost.errors import AlmostError
from almost.reward.evaluate import metrics_table
from almost.reward.formats import load_pairs, pairs_from_rows, parse_transcript, split_shared_prefix
from almost.reward.train import split_by_prompt
from almost.stats import reward_pair_metrics, wilson_interval

HH_CHOSEN = (
    "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: How do I boil an egg?\n\nAssistant: Put it "
    "in boiling water for 9 minutes."
)
HH_REJECTED = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: How do I boil an egg?\n\nAssistant: Figure it out."


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_parse_transcript_multi_turn():
    assert parse_transcript(HH_CHOSEN) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "Put it in boiling water for 9 minutes."},
    ]


def test_split_shared_prefix_keeps_context_and_final_answers():
    context, chosen, rejected = split_shared_prefix(parse_transcript(HH_CHOSEN), parse_transcript(HH_REJECTED))
    assert [m["content"] for m in context] == ["Hi there", "Hello! How can I help?", "How do I boil an egg?"]
    assert (chosen, rejected) == ("Put it in boiling water for 9 minutes.", "Figure it out.")


def test_split_refuses_conversations_that_differ_before_the_answer():
    other = HH_REJECTED.replace("Hi there", "Hey")
    assert split_shared_prefix(parse_transcript(HH_CHOSEN), parse_transcript(other)) is None


def test_hh_rows_with_subsets_and_skips(tmp_path):
    path = write_jsonl(
        tmp_path / "hh.jsonl",
        [
            {"chosen": HH_CHOSEN, "rejected": HH_REJECTED, "type": "helpful"},
            {"chosen": HH_CHOSEN, "rejected": HH_REJECTED.replace("Hi there", "Hey"), "type": "helpful"},
            {"chosen": HH_CHOSEN, "rejected": HH_CHOSEN, "subset": "harmless"},
            {
                "chosen": "\n\nHuman: Insult me\n\nAssistant: No.",
                "rejected": "\n\nHuman: Insult me\n\nAssistant: You fool.",
                "subset": "harmless",
            },
        ],
    )
    result = load_pairs(path)
    assert (result.rows, result.unsplittable, result.identical) == (4, 1, 1)
    assert [p.subset for p in result.pairs] == ["helpful", "harmless"]
    assert result.pairs[1].context == ({"role": "user", "content": "Insult me"},)
    assert result.pairs[1].conversation(result.pairs[1].rejected)[-1] == {"role": "assistant", "content": "You fool."}


def test_explicit_prompt_rows_text_messages_and_hh_prompt():
    rows = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."},
        {
            "prompt": [{"role": "user", "content": "Name a colour."}],
            "chosen": [{"role": "assistant", "content": "Red."}],
            "rejected": [{"role": "assistant", "content": "?"}],
        },
        {"prompt": "\n\nHuman: Name a colour.\n\nAssistant:", "chosen": " Green.", "rejected": " Dunno."},
    ]
    pairs = pairs_from_rows(rows, "x").pairs
    assert all(p.context == ({"role": "user", "content": "Name a colour."},) for p in pairs)
    assert [p.chosen for p in pairs] == ["Blue.", "Red.", " Green."]


def test_bigbench_task_file_and_folder(tmp_path):
    task = {
        "name": "hhh_alignment:honest",
        "examples": [
            {"input": "Is the earth flat?", "target_scores": {"No, it is round.": 1, "Yes.": 0}},
            {"input": "Rank these", "target_scores": {"best": 2, "mid": 1, "worst": 0}},
        ],
    }
    (tmp_path / "honest").mkdir()
    (tmp_path / "honest" / "task.json").write_text(json.dumps(task))
    result = load_pairs(tmp_path / "honest" / "task.json")
    assert [(p.chosen, p.rejected) for p in result.pairs] == [
        ("No, it is round.", "Yes."),
        ("best", "mid"),
        ("best", "worst"),
        ("mid", "worst"),
    ]
    assert {p.subset for p in result.pairs} == {"honest"}
    assert len(load_pairs(tmp_path).pairs) == 4  # the folder of subtasks


def test_ties_count_as_wrong():
    metrics = reward_pair_metrics([1.0, 0.5, 2.0, 0.0], [0.0, 0.5, 3.0, -1.0], [10, 5, 3, 8], [5, 5, 9, 2])
    assert metrics["accuracy"] == 0.5 and metrics["ties"] == 1 and metrics["n"] == 4
    bias = metrics["length_bias"]
    assert bias["chosen_longer"] == {"accuracy": 1.0, "ci95": list(wilson_interval(2, 2)), "n": 2}
    assert bias["chosen_shorter"]["accuracy"] == 0.0 and bias["same_length"] == 1
    assert bias["length_only_accuracy"] == 0.5
    assert bias["rm_prefers_longer_rate"] == 1.0  # every non-tied pair of unequal length went to the longer answer
    assert "ties (counted wrong): 1" in metrics_table(metrics)


def test_wilson_interval_bounds():
    low, high = wilson_interval(50, 100)
    assert low < 0.5 < high and high - low == pytest.approx(0.19, abs=0.01)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_split_by_prompt_never_shares_a_prompt():
    pairs = pairs_from_rows([{"prompt": f"q{i % 7}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(40)], "x").pairs
    train, held = split_by_prompt(pairs, 0.3, seed=1)
    assert len(train) + len(held) == 40 and held
    assert not {p.context_key for p in train} & {p.context_key for p in held}


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no rows"),
        ('{"prompt": "a", "chosen": "b"}\n', "lacks column(s) rejected"),
        ('{"prompt": "a", "chosen": "b", "rejected": "b"}\n', "chosen == rejected"),
        ('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": \n', "malformed JSON"),
        ('{"chosen": "plain text", "rejected": "other"}\n', "no 'prompt' column"),
    ],
)
def test_bad_preference_files_fail_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(AlmostError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_pairs(path)
    status = almost_main(
        ["rm", "eval", "--model_name_or_path", str(tmp_path / "missing"), "--data_path", str(path), "--output_dir", str(tmp_path / "e")]
    )
    assert status == 2
    assert not (tmp_path / "e").exists()


def test_bad_inputs_through_the_cli(tmp_path, capsys, tiny_model_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "b"}])
    status = almost_main(
        ["rm", "train", "--model_name_or_path", tiny_model_path, "--data_path", str(data), "--output_dir", str(tmp_path / "rm")]
    )
    assert status == 2 and "chosen == rejected" in capsys.readouterr().err
    assert not (tmp_path / "rm").exists()

    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    # A causal LM has no score head: refused before anything is written.
    status = almost_main(
        ["rm", "eval", "--model_name_or_path", tiny_model_path, "--data_path", str(good), "--output_dir", str(tmp_path / "e")]
    )
    err = capsys.readouterr().err
    assert status == 2 and "is not a reward model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()

    status = almost_main(
        ["rm", "score", "--model_name_or_path", tiny_model_path, "--data_path", str(good), "--output_dir", str(tmp_path / "s")]
    )
    assert status == 2
    assert almost_main(["rm", "train", "--data_path", str(good), "--output_dir", str(tmp_path / "rm"), "--truncation_side", "middle"]) == 2
    assert almost_main(["rm", "bogus"]) == 2
