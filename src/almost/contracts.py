"""What each stage writes, declared once: its files, the one that says it has finished, its summary.

A stage writes through its declaration (``PG.files["prompts"]``, ``write_summary(CS, out, stats)``),
the pipeline knows a step has finished when its ``product`` exists, and the report and the tests read
the same names through it (``read_summary``): a file name is typed in this module only, and a summary
key that no stage declares can be neither written nor read. Light on purpose (no torch, no TRL): the
report and the pipeline import it without loading any stage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import AlmostError
from .readers import read_json
from .writes import write_json_atomic

METRICS_FILE = "metrics.json"  # the summary of every training and evaluation stage
CARD_FILE = "README.md"  # the dataset or model card beside a stage's outputs
MODEL_CONFIG = "config.json"  # a saved model: what a training stage's folder holds once it has finished
ADAPTER_CONFIG = "adapter_config.json"  # a saved LoRA adapter
ADAPTER_DIR = "adapter"  # with LoRA: the adapter lives here, the merged model at the top level
# Written by `rm train`, `sft` and `rl` into their output folder: "running" before anything else is
# saved there, "done" after the last file of the final model (``models.unfinished_training``).
TRAINING_STATUS = "training_status.json"
TRAINING_ARGS = "training_args.bin"  # Trainer's pickled arguments, saved beside a model
TRAINER_STATE = "trainer_state.json"  # Trainer's state, written last into a checkpoint folder
# Beside a finished output X: X.settings.json, the fingerprint of what made it (``almost.resumable``);
# while X grows: X.partial, its rows so far, and X.partial.json, the fingerprint they were made with.
SETTINGS_SUFFIX = ".settings.json"
PARTIAL_SUFFIX = ".partial"
PARTIAL_SETTINGS_SUFFIX = ".partial.json"
LOCK_NAME = ".almost.lock"  # held in an output directory while a command writes there (``almost.locks``)
STEP_MARKER_PREFIX = ".almost-step"  # a pipeline step's marker in its folder (``almost.run.fingerprints``)
REPORT_FILE = "report.md"  # `almost report`, in the run directory
REPORT_FIGURES = "report_figures"  # its PNGs, next to it


class ContractError(Exception):
    """A summary key that its stage does not declare, or a declared key missing: a bug, never bad input."""


@dataclass(frozen=True)
class StageOutputs:
    """The files of one stage command's output folder.

    ``files`` maps a role to a file name; ``product`` is the role of the file that exists once the
    stage has finished; ``summary`` the role of its JSON summary, if it writes one, whose top-level
    keys are ``summary_keys``: each is always written except the ``optional_keys``.
    """

    command: str  # as typed after ``almost``: "cs", "rm train", "eval pairwise"
    files: Mapping[str, str]
    product: str
    summary: str | None = None
    summary_keys: frozenset[str] = field(default_factory=frozenset)
    optional_keys: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self):
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        for role in (self.product, self.summary):
            if role is not None and role not in self.files:
                raise ValueError(f"{self.command}: {role!r} is not one of its files ({', '.join(self.files)})")
        if not self.optional_keys <= self.summary_keys:
            raise ValueError(f"{self.command}: optional keys {sorted(self.optional_keys - self.summary_keys)} are not summary keys")

    @property
    def product_file(self) -> str:
        return self.files[self.product]

    @property
    def summary_file(self) -> str | None:
        return self.files[self.summary] if self.summary else None

    def paths(self, folder: str | Path) -> dict[str, Path]:
        """Every file of the stage in ``folder``, by role."""
        return {role: Path(folder) / name for role, name in self.files.items()}

    def check_summary(self, summary: Mapping[str, Any]) -> None:
        """ContractError unless ``summary`` has every required key and no undeclared one."""
        if self.summary is None:
            raise ContractError(f"{self.command} writes no summary")
        undeclared = [k for k in summary if k not in self.summary_keys]
        missing = sorted(self.summary_keys - self.optional_keys - set(summary))
        if undeclared or missing:
            raise ContractError(
                f"{self.command} summary: undeclared keys {undeclared}, missing keys {missing} (declared in almost/contracts.py)"
            )

    def check_key(self, key: str) -> None:
        if key not in self.summary_keys:
            raise ContractError(f"{self.command} does not declare the summary key {key!r} (almost/contracts.py)")


def keys(*names: str) -> frozenset[str]:
    return frozenset(names)


def write_summary(outputs: StageOutputs, folder: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write the stage's summary JSON into ``folder`` (atomically, keys in the caller's order) once
    its keys are checked against the declaration."""
    outputs.check_summary(summary)
    return write_json_atomic(Path(folder) / outputs.summary_file, summary)


class Summary(Mapping[str, Any]):
    """A stage's summary as read back: asking for a key the stage does not declare raises
    ContractError (a declared optional key that is absent is simply missing, as in a dict)."""

    def __init__(self, outputs: StageOutputs, data: Mapping[str, Any]):
        self.outputs = outputs
        self._data = data

    def __getitem__(self, key: str) -> Any:
        self.outputs.check_key(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def read_summary(outputs: StageOutputs, path: str | Path) -> Summary:
    """The summary at ``path`` (a JSON object, else AlmostError), read through its declaration."""
    data = read_json(path, f"{outputs.command} summary")
    if not isinstance(data, dict):
        raise AlmostError(f"{path}: a {outputs.command} summary is a JSON object")
    return Summary(outputs, data)


PG = StageOutputs(
    "pg",
    {"prompts": "prompts.txt", "stats": "pg_stats.json", "rounds": "pg_rounds.jsonl"},
    product="prompts",
    summary="stats",
    summary_keys=keys("accepted", "accepted_unused", "rejected", "requests", "rounds", "generation_seconds", "seeds", "model", "backend"),
)

# rg writes one file per configuration, named after it; a ``--shard i/n`` run writes one shard of it,
# which ``almost merge`` joins. No summary: its rows are the record, one per prompt with these keys.
RG_ROW_KEYS = ("index", "prompt", "response", "bad", "bad_reasons", "config")
RG_SHARD_FILE = re.compile(r"^(?P<name>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)\.jsonl$")


def rg_file(configuration: str, shard: tuple[int, int] | None = None) -> str:
    """``{configuration}.jsonl``, or ``{configuration}.shard-{i}-of-{n}.jsonl`` for shard i of n."""
    suffix = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
    return f"{configuration}{suffix}.jsonl"


CS = StageOutputs(
    "cs",
    {"comparisons": "comparison.jsonl", "stats": "cs_stats.json"},
    product="comparisons",
    summary="stats",
    # valid_answers: {configuration: count}; pairs_per_configuration_pair: {"chosen > rejected": count}.
    summary_keys=keys(
        "prompts",
        "pairs",
        "dropped_by_filter",
        "dropped_by_max_length_ratio",
        "dropped_by_length_balance",
        "prompts_with_fewer_than_two_valid",
        "valid_answers",
        "pairs_per_configuration_pair",
        "rubric",
        "chosen_longer",
        "chosen_shorter",
    ),
    # Written only when --max_length_ratio or --length_balance is on, so that the seed's file stays as it was.
    optional_keys=keys("dropped_by_max_length_ratio", "dropped_by_length_balance", "chosen_longer", "chosen_shorter"),
)
# The training stages' summaries: "train" holds TRL's train metrics and "global_step" alike in rm train and sft;
# "config" the plain settings; rm train's "heldout" has rm eval's keys (None without held-out pairs).
RM_TRAIN = StageOutputs(
    "rm train",
    {"model": MODEL_CONFIG, "metrics": METRICS_FILE},
    product="model",
    summary="metrics",
    summary_keys=keys("model", "base_model", "data", "train", "heldout", "length_head", "config"),
    optional_keys=keys("length_head"),  # only with --length_head
)
RM_EVAL = StageOutputs(
    "rm eval",
    {"metrics": METRICS_FILE, "rewards": "rewards.jsonl", "table": "metrics.txt", "plot": "reward_eval.png"},
    product="metrics",
    summary="metrics",
    # stats.reward_pair_metrics (also rm train's "heldout"): length_bias and length_balanced have
    # their keys documented there; subsets only when the pairs name their subset.
    summary_keys=keys(
        "accuracy",
        "ci95",
        "n",
        "ties",
        "mean_margin",
        "subsets",
        "length_bias",
        "length_balanced",
        "model",
        "data",
        "rows_read",
        "skipped_identical",
        "skipped_unsplittable",
    ),
    optional_keys=keys("subsets"),
)

# rmsp_summary.json: per_turn holds one mapping per assistant turn (RMSP_TURN_KEYS); user_turns
# (USER_TURNS_KEY) counts the user simulator's turns, with one mapping per re-sampled reason.
USER_TURNS_KEY = "user_turns"
RESAMPLED_REASONS = ("user_repeats", "user_role_swap")  # why a user turn is re-sampled
RMSP_TURN_KEYS = ("turn", "dialogues", "kept", "bad_candidate_rate", "mean_best_reward", "mean_candidate_reward")
RMSP = StageOutputs(
    "rmsp",
    {"demonstrations": "demonstrations.jsonl", "dropped": "rmsp_dropped.jsonl", "summary": "rmsp_summary.json"},
    product="demonstrations",
    summary="summary",
    summary_keys=keys(
        "dialogues",
        "kept_dialogues",
        "dropped_dialogues",
        "assistant_turns",
        "mean_turns_per_kept_dialogue",
        "end_reasons",
        "num_candidates",
        "max_turns",
        "per_turn",
        USER_TURNS_KEY,
    ),
)
SFT = StageOutputs(
    "sft",
    {"model": MODEL_CONFIG, "metrics": METRICS_FILE},
    product="model",
    summary="metrics",
    summary_keys=keys("model", "base_model", "data", "train", "config"),
)
RL = StageOutputs(
    "rl",
    {"model": MODEL_CONFIG, "metrics": METRICS_FILE, "log": "rl_log.csv"},
    product="model",
    summary="metrics",
    summary_keys=keys("algorithm", "policy", "reward_model", "prompts", "global_step", "beta", "length_penalty", "first_log", "last_log"),
)

# The multiple-choice evaluations: accuracy with its interval (evaluate.scoring.accuracy), per group too.
EVAL_HHH = StageOutputs(
    "eval hhh",
    {"metrics": METRICS_FILE, "rows": "predictions.jsonl", "table": "metrics.txt"},
    product="metrics",
    summary="metrics",
    summary_keys=keys("accuracy", "ci95", "n", "ties", "position_a_rate", "per_type", "task", "model", "data", "skipped"),
)
EVAL_TRUTHFULQA = StageOutputs(
    "eval truthfulqa",
    {"metrics": METRICS_FILE, "rows": "predictions.jsonl", "table": "metrics.txt"},
    product="metrics",
    summary="metrics",
    summary_keys=keys("accuracy", "ci95", "n", "task", "model", "data", "chance", "per_category"),
    optional_keys=keys("per_category"),  # only when the questions have categories
)
EVAL_PAIRWISE = StageOutputs(
    "eval pairwise",
    {"metrics": METRICS_FILE, "rows": "judgments.jsonl", "table": "metrics.txt"},
    product="metrics",
    summary="metrics",
    # length_balanced: evaluate.pairwise.length_split; per_category: {category: the same keys, without per_category}.
    summary_keys=keys(
        "win",
        "tie",
        "loss",
        "n",
        "win_rate",
        "ci95",
        "length_balanced",
        "per_category",
        "task",
        "model",
        "baseline",
        "judge",
        "data",
    ),
)
# ``almost eval <kind>`` → what it writes, in the order the pipeline plans them and the report shows them.
EVALUATIONS = {"hhh": EVAL_HHH, "truthfulqa": EVAL_TRUTHFULQA, "pairwise": EVAL_PAIRWISE}
