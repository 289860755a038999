"""The proof table: the figures that say whether the synthetic feedback carries signal beyond length
(``almost demo --proof``, docs/proof.md)."""

from __future__ import annotations

from pathlib import Path

from ..stages import CS, EVAL_PAIRWISE, RM_EVAL, RM_TRAIN
from .readings import eval_results, rm_evaluations, stage_summary
from .sections import interval, rm_eval_row
from .tables import markdown_table


def proof_table(run_dir: str | Path) -> str:
    """Per reward model evaluated on human pairs (``rm_eval*/``): pairs kept by CS, rubric agreement on
    held-out synthetic pairs, plain and length-balanced accuracy on the human pairs, "prefer longer"
    and Spearman(reward, length); then per pairwise evaluation its win rate and the length split.
    Every figure is read from the metrics the stages wrote; a missing one shows as "–"."""
    run = Path(run_dir)
    stats = stage_summary(run, CS) or {}
    train = stage_summary(run, RM_TRAIN) or {}
    held = train.get("heldout") if isinstance(train.get("heldout"), dict) else {}
    rm_rows = []
    for label, metrics in rm_evaluations(run):
        _, n, accuracy, balanced, balanced_ci, _, _, longer, rho = rm_eval_row(label, metrics)
        rm_rows.append([label, stats.get("pairs"), held.get("accuracy"), n, accuracy, balanced, balanced_ci, longer, rho])
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
    parts = [
        (
            "Reward model on real human preference pairs (goal: length-balanced >= 0.60 with the interval above 0.5, "
            "accuracy above 'prefer longer'):"
        )
    ]
    parts.append(markdown_table(header, rm_rows) if rm_rows else f"No `{RM_EVAL.folder}*/{RM_EVAL.outputs.summary_file}` in this run yet.")
    policy_rows = []
    for label, metrics in eval_results(run).get(EVAL_PAIRWISE, {}).items():
        split = metrics.get("length_balanced") or {}
        shorter, longer = split.get("model_shorter") or {}, split.get("model_longer") or {}
        policy_rows.append(
            [
                label,
                metrics.get("judge"),
                metrics.get("n"),
                metrics.get("win_rate"),
                interval(metrics.get("ci95")),
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
    parts.append("Policy vs base, each question judged in both orders (goal: win rate >= 0.60 with the interval above 0.5):")
    missing = f"No `{EVAL_PAIRWISE.folder}/*/{EVAL_PAIRWISE.outputs.summary_file}` in this run yet."
    parts.append(markdown_table(header, policy_rows) if policy_rows else missing)
    return "\n\n".join(parts)
