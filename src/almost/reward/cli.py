"""``almost rm train | score | eval``: hand the rest of the arguments to the subcommand's module."""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "train": ("almost.reward.train", "Train a reward model on preference pairs (TRL RewardTrainer)."),
    "score": ("almost.reward.score", "Add a reward to every row of a JSONL file (resumable)."),
    "eval": ("almost.reward.evaluate", "Pairwise accuracy on preference data, with length-bias statistics."),
}


def usage() -> str:
    lines = ["usage: almost rm <subcommand> [options]   (almost rm <subcommand> --help for its options)", "", "subcommands:"]
    lines += [f"  {name:<6} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        sys.stderr.write(f"almost rm: error: unknown subcommand {argv[0]!r}; choose one of {', '.join(SUBCOMMANDS)}\n")
        return 2
    return int(importlib.import_module(SUBCOMMANDS[argv[0]][0]).main(argv[1:]) or 0)
