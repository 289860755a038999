"""What each stage writes, declared once: its files, the one that says it has finished, its summary.

A stage writes through its declaration (``PG.files["prompts"]``, ``CS.summary``), the pipeline knows a
step has finished when its ``product`` exists, and the report and the tests read the same names:
a file name is typed in this module only. Light on purpose (no torch, no TRL): the report and the
pipeline import it without loading any stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

METRICS_FILE = "metrics.json"  # the summary of every training and evaluation stage
MODEL_CONFIG = "config.json"  # a saved model: what a training stage's folder holds once it has finished


@dataclass(frozen=True)
class StageOutputs:
    """The files of one stage command's output folder.

    ``files`` maps a role to a file name; ``product`` is the role of the file that exists once the
    stage has finished; ``summary`` the role of its JSON summary, if it writes one.
    """

    command: str  # as typed after ``almost``: "cs", "rm train", "eval pairwise"
    files: Mapping[str, str]
    product: str
    summary: str | None = None
    summary_keys: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self):
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        for role in (self.product, self.summary):
            if role is not None and role not in self.files:
                raise ValueError(f"{self.command}: {role!r} is not one of its files ({', '.join(self.files)})")

    @property
    def product_file(self) -> str:
        return self.files[self.product]

    @property
    def summary_file(self) -> str | None:
        return self.files[self.summary] if self.summary else None


PG = StageOutputs("pg", {"prompts": "prompts.txt", "stats": "pg_stats.json", "rounds": "pg_rounds.jsonl"}, product="prompts", summary="stats")
# rg writes one file per configuration, named after it (``rg.output_path``): no fixed product name.
CS = StageOutputs("cs", {"comparisons": "comparison.jsonl", "stats": "cs_stats.json"}, product="comparisons", summary="stats")
# The training stages' summaries: "train" holds TRL's train metrics and "global_step" alike in rm train and sft;
# "config" the plain settings; "length_head" only with --length_head.
RM_TRAIN = StageOutputs(
    "rm train",
    {"model": MODEL_CONFIG, "metrics": METRICS_FILE},
    product="model",
    summary="metrics",
    summary_keys=frozenset({"model", "base_model", "data", "train", "heldout", "length_head", "config"}),
)
RM_EVAL = StageOutputs("rm eval", {"metrics": METRICS_FILE, "rewards": "rewards.jsonl", "table": "metrics.txt"}, product="metrics", summary="metrics")
RMSP = StageOutputs(
    "rmsp",
    {"demonstrations": "demonstrations.jsonl", "dropped": "rmsp_dropped.jsonl", "summary": "rmsp_summary.json"},
    product="demonstrations",
    summary="summary",
)
SFT = StageOutputs(
    "sft",
    {"model": MODEL_CONFIG, "metrics": METRICS_FILE},
    product="model",
    summary="metrics",
    summary_keys=frozenset({"model", "base_model", "data", "train", "config"}),
)
RL = StageOutputs(
    "rl",
    {"model": MODEL_CONFIG, "metrics": METRICS_FILE, "log": "rl_log.csv"},
    product="model",
    summary="metrics",
    summary_keys=frozenset(
        {"algorithm", "policy", "reward_model", "prompts", "global_step", "beta", "length_penalty", "first_log", "last_log"}
    ),
)
EVAL = StageOutputs("eval", {"metrics": METRICS_FILE, "rows": "predictions.jsonl", "table": "metrics.txt"}, product="metrics", summary="metrics")
EVAL_PAIRWISE = StageOutputs(
    "eval pairwise", {"metrics": METRICS_FILE, "rows": "judgments.jsonl", "table": "metrics.txt"}, product="metrics", summary="metrics"
)
