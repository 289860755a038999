"""ROUGE-L F the slow, obvious way: the reference PG's fast near-duplicate index is tested (and, in
benchmarks/bench_pg_dedup.py, timed) against."""

from __future__ import annotations

from collections.abc import Sequence

from almost.feedback.pg import rouge_l_fmeasure


def rouge_l_reference(target: Sequence[str], prediction: Sequence[str]) -> float:
    """rouge_score's dynamic-programming table of LCS lengths."""
    if not target or not prediction:
        return 0.0
    table = [[0] * (len(prediction) + 1) for _ in range(len(target) + 1)]
    for i, a in enumerate(target, 1):
        for j, b in enumerate(prediction, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a == b else max(table[i - 1][j], table[i][j - 1])
    return rouge_l_fmeasure(table[-1][-1], len(target), len(prediction))
