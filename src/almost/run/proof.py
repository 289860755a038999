"""The proof table: the figures that say whether the synthetic feedback carries signal beyond length
(``almost demo --proof``, docs/proof.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contracts import Summary
from ..stages import CS, EVAL_PAIRWISE, RM_EVAL, RM_TRAIN
from .readings import eval_results, rm_evaluations, stage_summary, summary_at
from .sections import label_order, rm_eval_row
from .tables import interval, markdown_table

# Human-supervised references (docs/proof.md): an RM trained with a run's RM settings on as many human
# pairs from hh-harmless-dev as the run's CS kept (or as an ablation row's CS kept), made by
# scripts/proof_ablation.py in RUN/ablation/supervised-<base>[-<pairs>]/ (its human pairs, rm/ and
# rm_eval/). A reference, never a default.
SUPERVISED_FOLDERS = "supervised-*"


@dataclass(frozen=True)
class SupervisedReference:
    """A finished supervised reference: its folder, its ``rm train`` summary and ``rm eval`` metrics."""

    folder: Path
    train: Summary
    metrics: Summary

    @property
    def pairs(self) -> int | None:
        return (self.train.get("data") or {}).get("pairs")


def supervised_references(folder: Path) -> list[SupervisedReference]:
    """The finished supervised references in ``folder`` (a run's ``ablation/``)."""
    found = []
    for path in sorted(folder.glob(f"{SUPERVISED_FOLDERS}/{RM_EVAL.folder}/{RM_EVAL.outputs.summary_file}")):
        reference = path.parent.parent
        train, metrics = stage_summary(reference, RM_TRAIN), summary_at(RM_EVAL, path)
        if train is not None and metrics is not None:
            found.append(SupervisedReference(reference, train, metrics))
    return found


def supervised_reference(references: Sequence[SupervisedReference], base: Any, data: Any, pairs: Any) -> SupervisedReference | None:
    """The reference of an RM of ``base`` read on the human pairs ``data``: the one trained on as many
    human pairs as the RM's CS kept (``pairs``) or, without one, the nearest in count (the larger on a tie)."""
    same = [r for r in references if r.train.get("base_model") == base and r.metrics.get("data") == data]
    count = pairs if isinstance(pairs, int) else 0
    return min(same, key=lambda r: (abs((r.pairs or 0) - count), -(r.pairs or 0)), default=None)


def margin_share(synthetic: Mapping[str, Any], supervised: Mapping[str, Any]) -> float | None:
    """(synthetic - 0.5) / (supervised - 0.5) of two RMs' length-balanced accuracies on the same human
    pairs: how much of the supervised RM's margin over chance the synthetic one recovers. None when
    either is missing or the supervised RM is not above chance (``reference_at_chance``)."""
    a = (synthetic.get("length_balanced") or {}).get("accuracy")
    b = (supervised.get("length_balanced") or {}).get("accuracy")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or reference_at_chance(supervised):
        return None
    return (a - 0.5) / (b - 0.5)


def reference_at_chance(supervised: Mapping[str, Any]) -> bool:
    """Whether a supervised RM's length-balanced accuracy, or the low end of its 95% interval, is at or
    below 0.5. Its margin is then noise, and a share of it any number at all: 86 human pairs read 0.501
    [0.473, 0.530] on hh-harmless-test, which gave the size run's RM (0.520) a share of 2,157%."""
    balanced = supervised.get("length_balanced") or {}
    accuracy, interval = balanced.get("accuracy"), balanced.get("ci95")
    low = interval[0] if isinstance(interval, (list, tuple)) and interval else accuracy
    return not isinstance(accuracy, (int, float)) or accuracy <= 0.5 or not isinstance(low, (int, float)) or low <= 0.5


def share_cell(metrics: Mapping[str, Any], reference: SupervisedReference | None, pairs: Any) -> str | None:
    """An RM's share of its reference's margin; the reference's pair count beside it when it differs
    from the RM's, since the goal compares the two at the same number of pairs."""
    if reference is None:
        return None
    counted = "" if reference.pairs == pairs else f" (reference: {reference.pairs} pairs)"
    if reference_at_chance(reference.metrics):
        return f"none: reference at chance{counted}"
    share = margin_share(metrics, reference.metrics)
    return None if share is None else f"{share:.0%}{counted}"


def reward_model_table(run: Path) -> list[str]:
    """Per reward model evaluated on human pairs (``rm_eval*/``): pairs kept by CS, rubric agreement on
    held-out synthetic pairs, plain and length-balanced accuracy on the human pairs, "prefer longer"
    and Spearman(reward, length); with a supervised reference of the same base on the same human pairs
    (``ablation/supervised-*``), its row and each RM's share of its margin."""
    stats = stage_summary(run, CS) or {}
    train = stage_summary(run, RM_TRAIN) or {}
    held = train.get("heldout") if isinstance(train.get("heldout"), dict) else {}
    references = supervised_references(run / "ablation")
    rm_rows, used = [], {}
    for label, metrics in rm_evaluations(run):
        _, n, accuracy, balanced, balanced_ci, _, _, longer, rho = rm_eval_row(label, metrics)
        rm_rows.append([label, stats.get("pairs"), held.get("accuracy"), n, accuracy, balanced, balanced_ci, longer, rho])
        if references:
            reference = supervised_reference(references, train.get("base_model"), metrics.get("data"), stats.get("pairs"))
            rm_rows[-1].append(share_cell(metrics, reference, stats.get("pairs")))
            if reference:
                used[reference.folder] = reference
    for reference in used.values():
        label = str(reference.folder.relative_to(run))
        _, n, accuracy, balanced, balanced_ci, _, _, longer, rho = rm_eval_row(label, reference.metrics)
        agreement = (reference.train.get("heldout") or {}).get("accuracy")
        rm_rows.append([label, reference.pairs, agreement, n, accuracy, balanced, balanced_ci, longer, rho, "(reference)"])
    header = [
        "RM evaluated on",
        "pairs kept (CS)",
        "rubric agreement (held out)",
        "human pairs",
        "accuracy",
        "length-balanced",
        "95% interval",
        "'prefer longer'",
        "Spearman(reward, length)",
    ]
    goal = "goal: length-balanced >= 0.60 with the interval above 0.5, accuracy above 'prefer longer'"
    if references:
        # Supervised: the same RM settings and base on as many human pairs (hh-harmless-dev) as the run's CS kept.
        header.append("share of the supervised margin (length-balanced)")
        goal += "; >= 75% of the margin over 0.5 of an RM supervised on as many human pairs"
    missing = f"No `{RM_EVAL.folder}*/{RM_EVAL.outputs.summary_file}` in this run yet."
    return [f"Reward model on real human preference pairs ({goal}):", markdown_table(header, rm_rows) if rm_rows else missing]


def policy_table(run: Path) -> list[str]:
    """Per pairwise evaluation (each policy vs base, DPO vs RL) its win rate and the length split, over all
    questions and per category, in the report's order of the policies."""
    policy_rows = []
    for label, metrics in sorted(eval_results(run).get(EVAL_PAIRWISE, {}).items(), key=lambda item: label_order(item[0])):
        per_category = metrics.get("per_category") or {}
        # Each category's own row (helpful, harmless) when the questions have more than one.
        parts_of = [(label, metrics)] + ([(f"{label}: {c}", m) for c, m in per_category.items()] if len(per_category) > 1 else [])
        for row_label, part in parts_of:
            split = part.get("length_balanced") or {}
            shorter, longer = split.get("model_shorter") or {}, split.get("model_longer") or {}
            policy_rows.append(
                [
                    row_label,
                    metrics.get("judge"),
                    part.get("n"),
                    part.get("win_rate"),
                    interval(part.get("ci95")),
                    shorter.get("rate"),
                    shorter.get("n"),
                    longer.get("rate"),
                    longer.get("n"),
                    split.get("win_rate"),
                    interval(split.get("ci95")),
                ]
            )
    header = [
        "pairing",
        "judge",
        "questions",
        "win rate",
        "95% interval",
        "model's answer shorter",
        "n",
        "model's answer longer",
        "n",
        "length-balanced",
        "95% interval (bootstrap)",
    ]
    missing = f"No `{EVAL_PAIRWISE.folder}/*/{EVAL_PAIRWISE.outputs.summary_file}` in this run yet."
    return [
        "Policies vs base (and DPO vs RL), each question judged in both orders (goal: win rate >= 0.60 with the interval above 0.5):",
        markdown_table(header, policy_rows) if policy_rows else missing,
    ]


def proof_table(run_dir: str | Path) -> str:
    """The reward models' table, then the policies'. Every figure is read from the metrics the stages
    wrote; a missing one shows as "–"."""
    run = Path(run_dir)
    return "\n\n".join([*reward_model_table(run), *policy_table(run)])
