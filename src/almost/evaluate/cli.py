"""``almost eval hhh|truthfulqa|pairwise``: pick the evaluation and hand it the rest of the arguments."""

from __future__ import annotations

import sys

from ..cli import dispatch

TASKS: dict[str, tuple[str, str]] = {
    "hhh": ("almost.evaluate.hhh", "Static HHH A/B preference accuracy (both orders added, per type)."),
    "truthfulqa": ("almost.evaluate.truthfulqa", "TruthfulQA MC1: P(true) per answer, argmax."),
    "pairwise": ("almost.evaluate.pairwise", "Model vs baseline answers judged by an RM or an LLM, both orders."),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("almost eval", "evaluation", TASKS, list(sys.argv[1:] if argv is None else argv))
