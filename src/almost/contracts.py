"""What the stages write, as declared: the files of a stage's output folder, the one whose existence
says it has finished, its summary and the summary's keys; and the names of the files the machinery
keeps beside them (settings records, partial rows, locks, step markers, model-folder files).

Each stage declares its outputs in its record (``stages.PG.outputs``) and writes through them
(``write_summary(CS.outputs, out, stats)``); the pipeline knows a step has finished when its
``product`` exists, and the report and the tests read the same names through them
(``read_summary``): a summary key that no stage declares can be neither written nor read. Every
file name is typed once, in a stage's record or here. Light on purpose (no torch, no TRL): the
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
PAIRWISE_ANSWERS = "answers"  # the answers the pairwise steps of a run share, beside their folders
REPORT_FILE = "report.md"  # `almost report`, in the run directory
REPORT_FIGURES = "report_figures"  # its PNGs, next to it
# A name with fields, such as rg's "{configuration}.jsonl": each field as one of these.
_FIELD = re.compile(r"\{(\w+)(?::d)?\}")


class ContractError(Exception):
    """A summary key that its stage does not declare, or a declared key missing: a bug, never bad input."""


@dataclass(frozen=True)
class StageOutputs:
    """The files of one stage command's output folder.

    ``files`` maps a role to a file name, which may have fields (rg's ``{configuration}.jsonl``, filled
    in by ``file``); ``product`` is the role of the file that exists once the stage has finished;
    ``summary`` the role of its JSON summary, if it writes one, whose top-level keys are
    ``summary_keys``: each is always written except the ``optional_keys``. ``row_keys``: the keys of
    every row of a product that is the record itself (rg's answers).
    """

    files: Mapping[str, str]
    product: str
    summary: str | None = None
    summary_keys: frozenset[str] = field(default_factory=frozenset)
    optional_keys: frozenset[str] = field(default_factory=frozenset)
    row_keys: tuple[str, ...] = ()
    command: str = ""  # the stage's name ("rm train"), set by its ``stages.Stage`` record, for messages

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

    def file(self, role: str, **fields: Any) -> str:
        """The name of the file ``role`` with its fields filled in: ``file("answers", configuration="x")``."""
        return self.files[role].format(**fields)

    def match(self, role: str, name: str) -> dict[str, Any] | None:
        """The fields of a file name of ``role`` (``{"configuration": "x", "i": 0, "n": 4}``), None for another name."""
        pattern = self.files[role]
        numbers = [m[1] for m in _FIELD.finditer(pattern) if m[0].endswith(":d}")]
        parts = _FIELD.split(pattern)  # text, field, text, field, ..., text
        fields = {part: r"\d+" if part in numbers else ".+" for part in parts[1::2]}
        regex = "".join(re.escape(part) if k % 2 == 0 else f"(?P<{part}>{fields[part]})" for k, part in enumerate(parts))
        found = re.fullmatch(regex, name)
        return None if found is None else {k: int(v) if k in numbers else v for k, v in found.groupdict().items()}

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
                f"{self.command} summary: undeclared keys {undeclared}, missing keys {missing} (declared in almost/stages.py)"
            )

    def check_key(self, key: str) -> None:
        if key not in self.summary_keys:
            raise ContractError(f"{self.command} does not declare the summary key {key!r} (almost/stages.py)")


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
