"""``almost rm train | score | eval``: hand the rest of the arguments to the subcommand's module."""

from __future__ import annotations

import sys

from ..cli import dispatch

SUBCOMMANDS = {
    "train": ("almost.reward.train", "Train a reward model on preference pairs (TRL RewardTrainer)."),
    "score": ("almost.reward.score", "Add a reward to every row of a JSONL file (resumable)."),
    "eval": ("almost.reward.evaluate", "Pairwise accuracy on preference data, with length-bias statistics."),
    "serve": ("almost.reward.serve", "Score {prompt, response} or messages over HTTP (for rmsp, pairwise and other tools)."),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("almost rm", "subcommand", SUBCOMMANDS, list(sys.argv[1:] if argv is None else argv))
