"""The sections of ``report.md``, one per stage, each from the stage's own output files: comparisons
kept and dropped by the heuristic filter per configuration pair, answer lengths and BAD rates per
RG configuration, RM rubric agreement and length bias, RMSP best vs mean candidate reward per turn
and the user simulator's re-sampled turns, RL reward, KL and length per step, and the evaluation
table, base vs SFT vs RL. A section whose files are missing says so.

``section(stage)`` picks a stage's section; a stage the report has no section of its own for shows
the scalar values of its summary.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import stages
from ..contracts import Summary
from ..readers import read_lines
from ..stages import CS, EVAL_PAIRWISE, PG, RESAMPLED_REASONS, RG, RL, RM_EVAL, RM_TRAIN, RMSP, SFT, USER_TURNS_KEY, Stage
from .readings import (
    comparison_pair_counts,
    eval_results,
    find,
    headline,
    read_rg_rows,
    read_rl_log,
    rm_evaluations,
    rmsp_turn_rewards,
    stage_summary,
)
from .tables import figure, fmt, markdown_table, pyplot


def section_prompts(run: Path) -> str:
    path = find(run, PG, PG.outputs.product_file)
    if path is None:
        return f"## 1. Prompts (PG)\n\nNo `{PG.outputs.product_file}` in this run yet."
    prompts = read_lines(path, "prompts", allow_empty=True)  # a report describes a run, even one that found nothing
    lengths = [len(p) for p in prompts]
    text = f"## 1. Prompts (PG)\n\n{len(prompts)} prompts in `{path.relative_to(run)}`"
    if lengths:
        text += f", {statistics.fmean(lengths):.0f} characters on average."
    stats = stage_summary(run, PG)
    if stats is not None:
        rows = [[k, v] for k, v in stats.items() if isinstance(v, (int, float, str))]
        text += "\n\n" + markdown_table([PG.outputs.summary_file, "value"], rows)
    return text


def section_responses(run: Path, figures: Path) -> str:
    rows = read_rg_rows(run)
    title = "## 2. Responses per configuration (RG)"
    if not rows:
        return f"{title}\n\nNo RG output (`{RG.folder}/{RG.outputs.files['answers']}`) in this run yet."
    table, lengths = [], {}
    for name, data in rows.items():
        good = [len(r.get("response") or "") for r in data if not r.get("bad")]
        lengths[name] = good
        bad = sum(bool(r.get("bad")) for r in data)
        table.append(
            [name, len(data), bad, bad / len(data), statistics.fmean(good) if good else None, statistics.median(good) if good else None]
        )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(lengths)), 4))
    names = list(lengths)
    ax.boxplot([lengths[n] or [0] for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="answer length (characters, non-BAD answers)", title="Answer lengths per RG configuration")
    image = figure(fig, figures / "rg_answer_lengths.png")
    return (
        f"{title}\n\n"
        + markdown_table(["configuration", "answers", "BAD", "BAD rate", "mean length", "median length"], table)
        + f"\n\n{image}"
    )


def _pair_counts(counts: Mapping[str, int]) -> Counter:
    """``{"A > B": n}`` (cs_stats.json's spelling) → ``Counter({(A, B): n})``."""
    result = Counter()
    for key, n in counts.items():
        chosen, _, rejected = str(key).partition(" > ")
        result[(chosen, rejected)] += int(n)
    return result


def section_comparisons(run: Path, figures: Path) -> str:
    title = "## 3. Synthetic comparisons (CS)"
    path = find(run, CS, CS.outputs.product_file)
    stats = stage_summary(run, CS) or {}
    if path is None and not stats:
        return f"{title}\n\nNo `{CS.outputs.product_file}` or `{CS.outputs.summary_file}` in this run yet."
    parts = [title]
    totals = [[k, v] for k, v in stats.items() if isinstance(v, (int, float, str))]
    if totals:
        parts.append(markdown_table([CS.outputs.summary_file, "value"], totals))
    kept = comparison_pair_counts(path) if path is not None else _pair_counts(stats["pairs_per_configuration_pair"])
    pairs = sorted(kept, key=lambda p: -kept[p])
    if not pairs:
        parts.append("No comparisons were made.")
        return "\n\n".join(parts)
    parts.append(markdown_table(["chosen configuration", "rejected configuration", "pairs kept"], [[c, r, kept[(c, r)]] for c, r in pairs]))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(pairs)), 4))
    xs = list(range(len(pairs)))
    ax.bar(xs, [kept[p] for p in pairs], width=0.6)
    # CS counts the length filter's drops in all, not per configuration pair.
    title_drops = f" ({stats['dropped_by_filter']} pairs dropped by the length filter in all)" if "dropped_by_filter" in stats else ""
    ax.set_xticks(xs, [f"{c}\n> {r}" for c, r in pairs], fontsize=7)
    ax.set(ylabel="pairs kept", title="Comparisons per configuration pair" + title_drops)
    parts.append(figure(fig, figures / "cs_pairs.png"))
    valid = stats.get("valid_answers")
    if valid:
        parts.append(markdown_table(["configuration", "valid (non-BAD) answers"], [[k, v] for k, v in valid.items()]))
    return "\n\n".join(parts)


def interval(ci: Any) -> str | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    return None


def rm_eval_row(label: str, metrics: Mapping[str, Any]) -> list[Any]:
    """One row of the RM table from ``rm eval``'s metrics or rm train's ``heldout`` (the same keys)."""
    bias = metrics.get("length_bias") or {}
    longer, shorter = bias.get("chosen_longer") or {}, bias.get("chosen_shorter") or {}
    balanced = metrics.get("length_balanced") or {}
    return [
        label,
        metrics.get("n"),
        metrics.get("accuracy"),
        balanced.get("accuracy"),
        interval(balanced.get("ci95")),
        longer.get("accuracy"),
        shorter.get("accuracy"),
        bias.get("length_only_accuracy"),
        bias.get("spearman_reward_length"),
    ]


def section_reward_model(run: Path, figures: Path) -> str:
    title = "## 4. Reward model (RM)"
    evaluations = []
    train = stage_summary(run, RM_TRAIN) or {}
    if isinstance(train.get("heldout"), dict):
        evaluations.append(("held-out synthetic pairs (rubric agreement)", train["heldout"]))
    evaluations += rm_evaluations(run)
    if not evaluations:
        found = (
            f"`{RM_TRAIN.folder}/{RM_TRAIN.outputs.summary_file}` with held-out pairs, `{RM_EVAL.folder}/{RM_EVAL.outputs.summary_file}`"
        )
        return f"{title}\n\nNo RM metrics ({found}) in this run yet."
    parts = [title]
    if isinstance(train.get("data"), dict):
        d = train["data"]
        parts.append(
            f"Trained on {fmt(d.get('train_pairs'))} pairs, {fmt(d.get('heldout_pairs'))} held out; "
            f"{fmt(d.get('truncated'))} truncated, {fmt(d.get('dropped_long'))} dropped as too long."
        )
    header = [
        "evaluation",
        "pairs",
        "accuracy",
        "length-balanced accuracy",
        "its 95% interval (bootstrap)",
        "acc. when chosen is longer",
        "acc. when chosen is shorter",
        "'prefer longer' baseline",
        "Spearman(reward, length)",
    ]
    parts.append(markdown_table(header, [rm_eval_row(label, m) for label, m in evaluations]))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ["accuracy", "length-balanced", "chosen longer", "chosen shorter", "prefer-longer baseline"]
    width = 0.8 / len(evaluations)
    for i, (label, m) in enumerate(evaluations):
        row = rm_eval_row(label, m)
        values = [row[2], row[3], row[5], row[6], row[7]]
        ax.bar(
            [x + i * width for x in range(len(bars))], [v if isinstance(v, (int, float)) else 0 for v in values], width=width, label=label
        )
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks([x + width * (len(evaluations) - 1) / 2 for x in range(len(bars))], bars)
    ax.set(ylim=(0, 1), ylabel="pairwise accuracy (ties wrong)", title="RM accuracy and length bias")
    ax.legend(fontsize=7)
    parts.append(figure(fig, figures / "rm_accuracy.png"))
    return "\n\n".join(parts)


def section_selfplay(run: Path, figures: Path) -> str:
    title = "## 5. RM-guided self-play (RMSP)"
    turns = rmsp_turn_rewards(run)
    if not turns:
        return f"{title}\n\nNo RMSP output (`{RMSP.folder}/{RMSP.outputs.summary_file}`) in this run yet."
    parts = [title]
    summary = stage_summary(run, RMSP)
    totals = [[k, v] for k, v in summary.items() if isinstance(v, (int, float, str))]
    if totals:
        parts.append(markdown_table([RMSP.outputs.summary_file, "value"], totals))
    parts.append(
        markdown_table(
            ["turn", "dialogues", "mean best reward", "mean candidate reward"], [[t["turn"], t["n"], t["best"], t["mean"]] for t in turns]
        )
    )
    parts.append(_user_turn_table(summary))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [t["turn"] for t in turns]
    ax.plot(xs, [t["best"] for t in turns], marker="o", label="best candidate (kept)")
    ax.plot(xs, [t["mean"] for t in turns], marker="o", label="mean candidate")
    ax.set_xticks(xs)
    ax.set(xlabel="assistant turn", ylabel="reward", title="RMSP: reward of the kept answer vs the average candidate")
    ax.legend()
    parts.append(figure(fig, figures / "rmsp_rewards.png"))
    return "\n\n".join(parts)


def _user_turn_table(summary: Summary) -> str:
    # Read as rmsp wrote it, never recounted from the dialogues: one definition of each rate.
    users = summary.get(USER_TURNS_KEY)
    if not isinstance(users, dict):
        made_before = "made before rmsp counted rejected user turns"
        return f"User-simulator turns: `{RMSP.outputs.summary_file}` has no `{USER_TURNS_KEY}` counts ({made_before})."
    head = (
        f"User-simulator turns: {users.get('asked')} asked, {users.get('samples')} sampled ({users.get('retries')} re-samples, "
        f"{users.get('accepted_after_retry')} accepted after a re-sample). A rejected turn copies an earlier turn "
        "(`user_repeats`) or answers in the assistant's place (`user_role_swap`)."
    )
    rows = []
    for reason in RESAMPLED_REASONS:
        r = users.get(reason) or {}
        rows.append([reason, r.get("rejected"), r.get("rate"), r.get("first_try_rate"), r.get("dialogues_ended")])
    return head + "\n\n" + markdown_table(["rejected as", "samples", "share of samples", "share of first tries", "dialogues ended"], rows)


def section_rl(run: Path, figures: Path) -> str:
    title = "## 6. RL"
    path = find(run, RL, RL.outputs.files["log"])
    rows = read_rl_log(path) if path is not None else []
    rows = [r for r in rows if "step" in r]
    if not rows:
        return f"{title}\n\nNo `{RL.folder}/{RL.outputs.files['log']}` in this run yet."
    curves = [c for c in ("reward", "kl", "completion_length") if any(c in r for r in rows)]
    first, last = rows[0], rows[-1]
    parts = [
        title,
        markdown_table(
            ["", "step", *curves],
            [
                ["first log", first.get("step"), *(first.get(c) for c in curves)],
                ["last log", last.get("step"), *(last.get(c) for c in curves)],
            ],
        ),
    ]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.5), squeeze=False)
    for ax, column in zip(axes[0], curves):
        points = [(r["step"], r[column]) for r in rows if column in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set(xlabel="step", title=column)
    parts.append(figure(fig, figures / "rl_curves.png"))
    return "\n\n".join(parts)


def section_evaluation(run: Path, figures: Path) -> str:
    title = "## 7. Evaluation"
    results = eval_results(run)
    if not results:
        return f"{title}\n\nNo evaluation results (`eval/<kind>/<model>/metrics.json`) in this run yet."
    labels = sorted({label for per_kind in results.values() for label in per_kind}, key=_model_order)
    header = ["model", *(f"{kind.subsection} ({kind.headline})" for kind in results)]
    rows = [[label, *(headline(kind, results[kind][label])[1] if label in results[kind] else None for kind in results)] for label in labels]
    parts = [title, markdown_table(header, rows)]
    split_rows = []
    for label, metrics in results.get(EVAL_PAIRWISE, {}).items():
        split = metrics.get("length_balanced")
        if isinstance(split, dict):
            shorter, longer = split.get("model_shorter") or {}, split.get("model_longer") or {}
            split_rows.append(
                [
                    label,
                    metrics.get("win_rate"),
                    shorter.get("rate"),
                    shorter.get("n"),
                    longer.get("rate"),
                    longer.get("n"),
                    split.get("same_length"),
                    split.get("win_rate"),
                    interval(split.get("ci95")),
                ]
            )
    if split_rows:
        parts.append("Pairwise win rates split by length (a judge that only rewards length gives a length-balanced 0.5):")
        parts.append(
            markdown_table(
                [
                    "pairing",
                    "win rate",
                    "model's answer shorter",
                    "n",
                    "model's answer longer",
                    "n",
                    "same length",
                    "length-balanced win rate",
                    "its 95% interval (bootstrap)",
                ],
                split_rows,
            )
        )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(results)), 4))
    width = 0.8 / max(1, len(labels))
    kinds = list(results)
    for i, label in enumerate(labels):
        values = [headline(k, results[k][label])[1] if label in results[k] else 0 for k in kinds]
        ax.bar([x + i * width for x in range(len(kinds))], [v or 0 for v in values], width=width, label=label)
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(kinds))], [k.subsection for k in kinds])
    ax.set(ylim=(0, 1), ylabel="accuracy / win rate", title="Evaluation: base vs SFT vs RL")
    ax.legend()
    parts.append(figure(fig, figures / "eval.png"))
    return "\n\n".join(parts)


def _model_order(label: str) -> tuple[int, str]:
    order = ("base", "sft", "rl")
    head = label.split("-vs-")[0]
    return (order.index(head) if head in order else len(order), label)


def section_of_summary(stage: Stage, run: Path, figures: Path) -> str:
    """A stage the report has no section of its own for: the scalar values of its summary."""
    title = f"## {stage.name}"
    summary = stage_summary(run, stage) if stage.outputs.summary else None
    if summary is None:
        return f"{title}\n\nNo `{stage.folder}/{stage.outputs.summary_file or stage.outputs.product_file}` in this run yet."
    rows = [[k, v] for k, v in summary.items() if isinstance(v, (int, float, str))]
    return f"{title}\n\n" + markdown_table([stage.outputs.summary_file, "value"], rows)


Section = Callable[[Path, Path], str]
# Each stage's section; several stages may share one (the reward model's, the evaluations'). SFT
# has none: its losses are in the pipeline's printed table and its model card.
SECTIONS: dict[Stage, Section | None] = {
    PG: lambda run, figures: section_prompts(run),
    RG: section_responses,
    CS: section_comparisons,
    RM_TRAIN: section_reward_model,
    RM_EVAL: section_reward_model,
    RMSP: section_selfplay,
    SFT: None,
    RL: section_rl,
}


def section(stage: Stage) -> Section | None:
    """The section that shows ``stage`` (None: none does)."""
    if stage in SECTIONS:
        return SECTIONS[stage]
    if stage in stages.evaluations():
        return section_evaluation
    return lambda run, figures: section_of_summary(stage, run, figures)
