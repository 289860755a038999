"""The shared statistics on data whose answer is known, and the one rule for no data (n = 0)."""

from __future__ import annotations

import pytest

from almost.errors import AlmostError
from almost.stats import accuracy, grouped_accuracy, length_balanced, reward_pair_metrics, wilson_interval, win_rate


def test_no_data_has_no_rate_and_the_whole_interval():
    assert accuracy([]) == {"accuracy": None, "ci95": [0.0, 1.0], "n": 0}
    assert win_rate([]) == {"win": 0, "tie": 0, "loss": 0, "n": 0, "win_rate": None, "ci95": [0.0, 1.0]}
    found = length_balanced([], [], [])
    assert found["value"] is None and found["ci95"] == [None, None] and found["a_longer"] == {"rate": None, "n": 0}
    with pytest.raises(AlmostError, match="no pairs"):
        reward_pair_metrics([], [], [], [])


def test_wilson_interval_of_8_in_10():
    # The textbook value: 0.8 with n = 10 has the 95% Wilson interval [0.490, 0.943].
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert accuracy([True] * 8 + [False] * 2) == {"accuracy": 0.8, "ci95": [low, high], "n": 10}


def test_groups_are_sorted_and_ungrouped_items_count_as_none():
    groups = grouped_accuracy([True, False, True, True], ["b", None, "b", "a"])
    assert list(groups) == ["(none)", "a", "b"]
    assert [g["accuracy"] for g in groups.values()] == [0.0, 1.0, 1.0] and groups["b"]["n"] == 2


def test_win_rate_of_one_question_uses_the_widest_variance():
    m = win_rate(["win"])
    assert m["win_rate"] == 1.0 and m["ci95"] == [pytest.approx(0.02), 1.0]
    assert win_rate(["tie", "tie"])["ci95"] == [0.5, 0.5]


def test_length_balanced_names_its_keys_as_the_caller_writes_them():
    found = length_balanced([1.0, 0.0, 1.0], [9, 1, 5], [1, 9, 5], value="win_rate", side="model")
    assert list(found) == ["win_rate", "ci95", "model_longer", "model_shorter", "same_length", "bootstrap"]
    assert found["win_rate"] == 0.5 and found["same_length"] == 1
