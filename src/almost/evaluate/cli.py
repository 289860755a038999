"""``almost eval hhh|truthfulqa|pairwise``: pick the evaluation and hand it the rest of the arguments."""

from __future__ import annotations

import importlib
import sys

from ..io import AlmostError

TASKS: dict[str, tuple[str, str]] = {
    "hhh": ("almost.evaluate.hhh", "Static HHH A/B preference accuracy (both orders added, per type)."),
    "truthfulqa": ("almost.evaluate.truthfulqa", "TruthfulQA MC1: P(true) per answer, argmax."),
    "pairwise": ("almost.evaluate.pairwise", "Model vs baseline answers judged by an RM or an LLM, both orders."),
}


def usage() -> str:
    lines = ["usage: almost eval <task> [options]   (almost eval <task> --help for its options)", "", "tasks:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in TASKS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    task, rest = argv[0], argv[1:]
    if task not in TASKS:
        raise AlmostError(f"unknown evaluation {task!r}; choose one of {', '.join(TASKS)}")
    return int(importlib.import_module(TASKS[task][0]).main(rest) or 0)
