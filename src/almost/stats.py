"""The statistics the evaluations report, computed in one place: accuracy with its Wilson interval,
a win rate with its normal-approximation interval, the length-balanced score with its bootstrap
interval, and the metrics of a reward model on preference pairs built from them.

One rule for n = 0 (nothing to count): the rate is None, never 0.0, because no data is not a score
of zero; the Wilson interval of no data is the whole [0, 1], and a length-balanced score that lacks
one of its two groups has the interval [None, None]. Where there is data every function returns the
numbers its former copies in ``rm eval``, ``eval hhh``/``truthfulqa`` and ``eval pairwise`` wrote,
so ``metrics.json`` keeps its keys and values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import AlmostError

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
# A judged question's points for the model: a tie is half a win.
OUTCOME_POINTS = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (sane at 0, 1 and small n, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy(correct: Sequence[bool]) -> dict:
    """``{"accuracy", "ci95", "n"}``: the share of right answers (None when there are none to count)
    and its 95% Wilson interval."""
    n, right = len(correct), sum(correct)
    low, high = wilson_interval(right, n)
    return {"accuracy": right / n if n else None, "ci95": [low, high], "n": n}


def grouped_accuracy(correct: Sequence[bool], groups: Sequence[str | None]) -> dict:
    """``accuracy`` per group name, sorted; items without a group form ``(none)``."""
    names = sorted({g or "(none)" for g in groups})
    return {name: accuracy([c for c, g in zip(correct, groups) if (g or "(none)") == name]) for name in names}


def win_rate(outcomes: Sequence[str]) -> dict:
    """Win / tie / loss counts and (wins + ties/2) / n with a normal-approximation 95% interval."""
    n = len(outcomes)
    points = [OUTCOME_POINTS[o] for o in outcomes]
    counts = {"win": outcomes.count("win"), "tie": outcomes.count("tie"), "loss": outcomes.count("loss"), "n": n}
    if n == 0:
        return {**counts, "win_rate": None, "ci95": [0.0, 1.0]}
    rate = sum(points) / n
    variance = sum((p - rate) ** 2 for p in points) / (n - 1) if n > 1 else 0.25
    half = 1.96 * math.sqrt(variance / n)
    return {**counts, "win_rate": rate, "ci95": [max(0.0, rate - half), min(1.0, rate + half)]}


def length_balanced(
    points: Sequence[float],
    length_a: Sequence[int],
    length_b: Sequence[int],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    *,
    value: str = "value",
    side: str = "a",
) -> dict:
    """The mean of side a's score where a is the longer answer and where it is the shorter one.

    ``points`` are side a's scores in [0, 1] (1 = a preferred; for an RM, a is the chosen answer
    and a reward tie scores 0). Pairs of equal length are set aside and counted. Any judge that
    only prefers the longer (or only the shorter) answer scores exactly 0.5, whatever the share of
    pairs where a is longer, which plain accuracy cannot promise. The 95% interval is a seeded
    percentile bootstrap over the pairs (resampled with replacement; a resample that lacks one of
    the two groups has no value and is left out, and counted).

    ``value`` and ``side`` name the keys as the caller's metrics.json spells them: ``value="accuracy",
    side="chosen"`` gives ``accuracy``, ``chosen_longer``, ``chosen_shorter``.
    """
    import numpy as np

    score = np.asarray(points, dtype=float)
    diff = np.asarray(length_a, dtype=float) - np.asarray(length_b, dtype=float)
    keep = diff != 0
    score, a_longer = score[keep], diff[keep] > 0
    n_longer, n_shorter = int(a_longer.sum()), int((~a_longer).sum())
    rate_a_longer = float(score[a_longer].mean()) if n_longer else None
    rate_a_shorter = float(score[~a_longer].mean()) if n_shorter else None
    result = {
        value: None,
        "ci95": [None, None],
        f"{side}_longer": {"rate": rate_a_longer, "n": n_longer},
        f"{side}_shorter": {"rate": rate_a_shorter, "n": n_shorter},
        "same_length": int((~keep).sum()),
        "bootstrap": {"samples": samples, "seed": seed, "undefined": 0},
    }
    if not (n_longer and n_shorter):
        return result  # one side of the balance is missing: no balanced value to report
    result[value] = (rate_a_longer + rate_a_shorter) / 2
    rng = np.random.default_rng(seed)
    n = len(score)
    parts = []
    step = max(1, 4_000_000 // n)  # resamples per draw: memory stays bounded on large sets
    for start in range(0, samples, step):
        idx = rng.integers(0, n, size=(min(step, samples - start), n))
        longer, points_drawn = a_longer[idx], score[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            rate_longer = (points_drawn * longer).sum(axis=1) / longer.sum(axis=1)
            rate_shorter = (points_drawn * ~longer).sum(axis=1) / (~longer).sum(axis=1)
        parts.append((rate_longer + rate_shorter) / 2)
    balanced = np.concatenate(parts)
    defined = balanced[~np.isnan(balanced)]
    result["bootstrap"]["undefined"] = int(samples - len(defined))
    if len(defined):
        low, high = np.percentile(defined, [2.5, 97.5])
        result["ci95"] = [float(low), float(high)]
    return result


def reward_pair_metrics(
    rewards_chosen: Sequence[float],
    rewards_rejected: Sequence[float],
    length_chosen: Sequence[int],
    length_rejected: Sequence[int],
    subsets: Sequence[str | None] | None = None,
) -> dict:
    """Accuracy (ties wrong), per-subset accuracy, and length-bias statistics of one RM on pairs.

    Lengths are in characters of the answer. ``length_only_accuracy`` is what "prefer the longer
    answer" would score on the same pairs: an RM whose accuracy is no better than that may have
    learned length rather than quality.
    """
    from scipy.stats import spearmanr

    n = len(rewards_chosen)
    if n == 0:
        raise AlmostError("no pairs to evaluate")
    wins = [c > r for c, r in zip(rewards_chosen, rewards_rejected)]
    metrics = accuracy(wins)
    metrics["ties"] = sum(c == r for c, r in zip(rewards_chosen, rewards_rejected))
    margins = [c - r for c, r in zip(rewards_chosen, rewards_rejected)]
    metrics["mean_margin"] = sum(margins) / n

    if subsets is not None and any(s is not None for s in subsets):
        metrics["subsets"] = grouped_accuracy(wins, subsets)

    longer = [w for w, lc, lr in zip(wins, length_chosen, length_rejected) if lc > lr]
    shorter = [w for w, lc, lr in zip(wins, length_chosen, length_rejected) if lc < lr]
    rewards = list(rewards_chosen) + list(rewards_rejected)
    lengths = list(length_chosen) + list(length_rejected)
    rho = spearmanr(rewards, lengths).statistic if len(set(rewards)) > 1 and len(set(lengths)) > 1 else float("nan")
    prefers_longer = [
        (c > r) == (lc > lr)
        for c, r, lc, lr in zip(rewards_chosen, rewards_rejected, length_chosen, length_rejected)
        if lc != lr and c != r
    ]
    metrics["length_bias"] = {
        "chosen_longer": accuracy(longer),
        "chosen_shorter": accuracy(shorter),
        "same_length": n - len(longer) - len(shorter),
        "spearman_reward_length": None if math.isnan(rho) else float(rho),
        "rm_prefers_longer_rate": sum(prefers_longer) / len(prefers_longer) if prefers_longer else None,
        "length_only_accuracy": len(longer) / n,
    }
    metrics["length_balanced"] = length_balanced([float(w) for w in wins], length_chosen, length_rejected, value="accuracy", side="chosen")
    return metrics
