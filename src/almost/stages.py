"""The stage commands, each as its config types, its run function and its declared outputs.

``almost <stage>`` parses its command line into the config dataclasses named here and calls the run
function with them (the stage's own ``main``); the pipeline parses a YAML section into the same
dataclasses (``StageCommand.parse``) and calls the same function in process, or launches the command.
Modules are named, not imported: ``almost --help`` and the pipeline's planning load no stage until
its options or its run are needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import contracts
from .contracts import StageOutputs
from .errors import AlmostError


@dataclass(frozen=True)
class StageCommand:
    """``almost <command>``: ``run(*parse(settings))`` does what the command line does, less the lock."""

    command: tuple[str, ...]  # ("rg",), ("rm", "train"), ("eval", "hhh")
    module: str  # where the config types and the run function live
    config_names: tuple[str, ...]  # the config dataclasses, in the order the run function takes them
    run_name: str
    outputs: StageOutputs | None  # None: the product's name depends on the settings (rg: one file per configuration)

    @property
    def prog(self) -> str:
        return "almost " + " ".join(self.command)

    def config_types(self) -> tuple[type, ...]:
        module = importlib.import_module(self.module)
        return tuple(getattr(module, name) for name in self.config_names)

    def options(self) -> frozenset[str]:
        from .config import option_names

        return option_names(self.config_types())

    def parse(self, settings: Mapping[str, Any]) -> tuple:
        """The settings as this command's configs, checked as its command line would be."""
        from .config import parse_settings

        return parse_settings(self.prog, self.config_types(), settings)

    def run(self, *configs) -> Any:
        return getattr(importlib.import_module(self.module), self.run_name)(*configs)


def _stage(command: str, module: str, config_names: tuple[str, ...], run_name: str, outputs: StageOutputs | None) -> StageCommand:
    return StageCommand(tuple(command.split()), module, config_names, run_name, outputs)


STAGE_COMMANDS: dict[tuple[str, ...], StageCommand] = {
    s.command: s
    for s in (
        _stage("pg", "almost.feedback.pg", ("PGArguments",), "run_pg", contracts.PG),
        _stage("rg", "almost.feedback.rg", ("RGArguments",), "run_rg", None),
        _stage("merge", "almost.feedback.merge", ("MergeArguments",), "run_merge", None),
        _stage("cs", "almost.feedback.cs", ("CSArguments",), "run_cs", contracts.CS),
        _stage("rm train", "almost.reward.train", ("RewardTrainingConfig",), "run_rm_train", contracts.RM_TRAIN),
        _stage("rm eval", "almost.reward.evaluate", ("RewardEvalConfig",), "run_rm_eval", contracts.RM_EVAL),
        _stage("rmsp", "almost.policy.selfplay", ("RMSPArguments",), "run_rmsp", contracts.RMSP),
        _stage("sft", "almost.policy.sft", ("SFTArguments",), "run_sft", contracts.SFT),
        _stage("rl", "almost.policy.rl", ("RLConfig",), "run_rl", contracts.RL),
        _stage("eval hhh", "almost.evaluate.hhh", ("ModelArguments", "HHHConfig"), "run_hhh", contracts.EVAL_HHH),
        _stage(
            "eval truthfulqa",
            "almost.evaluate.truthfulqa",
            ("ModelArguments", "TruthfulQAConfig"),
            "run_truthfulqa",
            contracts.EVAL_TRUTHFULQA,
        ),
        _stage("eval pairwise", "almost.evaluate.pairwise", ("PairwiseConfig",), "run_pairwise", contracts.EVAL_PAIRWISE),
    )
}


def stage_command(command: tuple[str, ...]) -> StageCommand:
    try:
        return STAGE_COMMANDS[tuple(command)]
    except KeyError:
        raise AlmostError(f"almost {' '.join(command)} is not a stage command") from None
