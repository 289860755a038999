"""Reading a run directory: each stage's files found in its folder (``stages.Stage.folder``), its
summary read through its declaration, and the plain numbers the report, the proof table and the
pipeline's printed table show.

Files directly in the run directory are found too, as in the seed release's single output folder.
A missing or unreadable file is None (or empty): a report describes a partial run too.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import stages
from ..contracts import Summary, read_summary
from ..errors import AlmostError
from ..readers import read_json, read_jsonl
from ..stages import RG, RM_EVAL, RMSP, Stage


def find(run: Path, stage: Stage, name: str) -> Path | None:
    """The file ``name`` of ``stage`` in its folder of the run, or directly in the run directory."""
    for path in (run / stage.folder / name, run / name):
        if path.is_file():
            return path
    return None


def load_json(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return read_json(path)
    except AlmostError:
        return None


def summary_at(stage: Stage, path: Path | None) -> Summary | None:
    """The stage's summary read through its declaration; None when missing or unreadable."""
    if path is None:
        return None
    try:
        return read_summary(stage.outputs, path)
    except AlmostError:
        return None


def stage_summary(run: Path, stage: Stage) -> Summary | None:
    return summary_at(stage, find(run, stage, stage.outputs.summary_file))


def read_rg_rows(run: Path) -> dict[str, list[dict]]:
    """RG rows per configuration from every ``{config}.jsonl`` with RG's columns."""
    rows: dict[str, list[dict]] = {}
    for folder in (run / RG.folder, run):
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            try:
                data = read_jsonl(path)
            except AlmostError:
                continue
            if data and set(RG.outputs.row_keys) <= set(data[0]):
                rows.setdefault(data[0].get("config") or path.stem, data)
    return rows


def comparison_pair_counts(path: Path) -> Counter:
    return Counter((r.get("chosen_config", "?"), r.get("rejected_config", "?")) for r in read_jsonl(path))


def read_rl_log(path: Path) -> list[dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = []
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    continue
            rows.append(parsed)
    return rows


def rmsp_turn_rewards(run: Path) -> list[dict]:
    """Per assistant turn: mean best reward and mean candidate reward, as rmsp computed them."""
    summary = stage_summary(run, RMSP) or {}
    return [
        {"turn": t["turn"], "best": t["mean_best_reward"], "mean": t["mean_candidate_reward"], "n": t["dialogues"]}
        for t in summary.get("per_turn") or []
    ]


def eval_results(run: Path) -> dict[Stage, dict[str, Summary]]:
    """``{evaluation: {model label: metrics}}`` from ``eval/<kind>/<label>/metrics.json``."""
    results: dict[Stage, dict[str, Summary]] = {}
    for stage in stages.evaluations():
        root = run / stage.folder
        for path in sorted(root.glob(f"*/{stage.outputs.summary_file}")) if root.is_dir() else []:
            metrics = summary_at(stage, path)
            if metrics is not None:
                results.setdefault(stage, {})[path.parent.name] = metrics
    return results


def headline(stage: Stage, metrics: Mapping[str, Any]) -> tuple[str, Any]:
    """The one number of an evaluation (``Stage.headline``): accuracy, or the win rate for pairwise."""
    value = metrics.get(stage.headline)
    return stage.headline, value if isinstance(value, (int, float)) else None


def rm_evaluations(run: Path) -> list[tuple[str, Summary]]:
    """``(folder name, metrics)`` of every ``rm eval`` in the run (``rm_eval*/``)."""
    found = []
    for path in sorted(run.glob(f"{RM_EVAL.folder}*/{RM_EVAL.outputs.summary_file}")):
        metrics = summary_at(RM_EVAL, path)
        if metrics is not None:
            found.append((path.parent.name, metrics))
    return found
