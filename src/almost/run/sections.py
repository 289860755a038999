"""The sections of ``report.md``, one per stage, each from the stage's own output files: comparisons
kept and dropped by the heuristic filter per configuration pair, answer lengths and BAD rates per
RG configuration, DPO's logged figures, RM rubric agreement and length bias, RMSP best vs mean
candidate reward per turn and the user simulator's re-sampled turns, RL reward, KL and length per
step, and the evaluation table, base vs DPO, SFT and RL. Accuracies and win rates are printed and
drawn with their 95% intervals (plots of fewer than 30 items say so). A section whose files are
missing says so.

``section(stage)`` picks a stage's section; a stage the report has no section of its own for shows
the scalar values of its summary.
"""

from __future__ import annotations

import statistics
import textwrap
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import stages
from ..contracts import Summary
from ..readers import read_lines
from ..stages import CS, DPO, EVAL_PAIRWISE, PG, RESAMPLED_REASONS, RG, RL, RM_EVAL, RM_TRAIN, RMSP, SFT, USER_TURNS_KEY, Stage
from ..stats import wilson_interval
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
from .tables import Bar, draw_bars, figure, fmt, interval, markdown_table, note_small_samples, pyplot


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


def section_dpo(run: Path) -> str:
    title = "## 3b. DPO on the synthetic comparisons"
    summary = stage_summary(run, DPO)
    if summary is None:
        return f"{title}\n\nNo `{DPO.folder}/{DPO.outputs.summary_file}` in this run yet."
    data, train = summary.get("data") or {}, summary.get("train") or {}
    text = (
        f"{title}\n\nA policy trained on the comparisons directly (TRL DPOTrainer, no reward model): "
        f"{fmt(data.get('trained_pairs'))} pairs, optimizer steps: {fmt(train.get('global_step'))}. TRL's figures on the "
        "training batches; the evaluation below measures the policy."
    )
    logged = [(when, train.get(f"{when}_log") or {}) for when in ("first", "last")]
    rows = [[f"{when} logged step", *(row.get(key) for key in ("loss", "rewards/accuracies", "rewards/margins"))] for when, row in logged]
    return text + "\n\n" + markdown_table(["", "DPO loss", "implicit-reward accuracy", "implicit-reward margin"], rows)


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
        "its 95% interval (Wilson)",
        "length-balanced accuracy",
        "its 95% interval (bootstrap)",
        "acc. when chosen is longer",
        "acc. when chosen is shorter",
        "'prefer longer' baseline",
        "Spearman(reward, length)",
    ]
    # rm_eval_row is also the proof table's row; the report adds the plain accuracy's interval after it.
    rows = [(row := rm_eval_row(label, m))[:3] + [interval(m.get("ci95"))] + row[3:] for label, m in evaluations]
    parts.append(markdown_table(header, rows))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    draw_rm_accuracy(ax, evaluations)
    parts.append(figure(fig, figures / "rm_accuracy.png"))
    return "\n\n".join(parts)


RM_BARS = ("accuracy", "length-balanced", "chosen longer", "chosen shorter", "prefer-longer baseline")


def rm_bars(label: str, metrics: Mapping[str, Any]) -> list[Bar]:
    """The RM plot's bars of one evaluation (``rm eval``'s metrics or rm train's ``heldout``), each with
    the interval its metrics hold; "prefer longer" is the accuracy of a judge of n pairs, with its Wilson interval."""
    bias, balanced = metrics.get("length_bias") or {}, metrics.get("length_balanced") or {}
    longer, shorter = bias.get("chosen_longer") or {}, bias.get("chosen_shorter") or {}
    n = metrics.get("n")
    groups = [(balanced.get(side) or {}).get("n") for side in ("chosen_longer", "chosen_shorter")]
    balanced_n = sum(groups) if all(isinstance(g, int) for g in groups) else None
    prefer_longer = bias.get("length_only_accuracy")
    prefer_ci = wilson_interval(round(prefer_longer * n), n) if isinstance(prefer_longer, (int, float)) and isinstance(n, int) else None
    return [
        Bar(label, metrics.get("accuracy"), metrics.get("ci95"), n),
        Bar(f"{label}, length-balanced", balanced.get("accuracy"), balanced.get("ci95"), balanced_n),
        Bar(f"{label}, chosen longer", longer.get("accuracy"), longer.get("ci95"), longer.get("n")),
        Bar(f"{label}, chosen shorter", shorter.get("accuracy"), shorter.get("ci95"), shorter.get("n")),
        Bar(label, prefer_longer, prefer_ci, n),
    ]


def draw_rm_accuracy(ax, evaluations: list[tuple[str, Mapping[str, Any]]]) -> None:
    """One group of bars per measure, one bar per evaluation, each with its 95% interval."""
    width = 0.8 / len(evaluations)
    drawn = []
    for i, (label, metrics) in enumerate(evaluations):
        bars = rm_bars(label, metrics)
        draw_bars(ax, [x + i * width for x in range(len(RM_BARS))], bars, width, label)
        drawn += bars
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks([x + width * (len(evaluations) - 1) / 2 for x in range(len(RM_BARS))], [textwrap.fill(b, 14) for b in RM_BARS])
    ax.set(ylim=(0, 1), ylabel="pairwise accuracy (ties wrong)", title="RM accuracy and length bias, with 95% intervals")
    ax.legend(fontsize=7)
    note_small_samples(ax, drawn)


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
    labels = sorted({label for per_kind in results.values() for label in per_kind}, key=label_order)
    header = ["model"] + [name for kind in results for name in (f"{kind.subsection} ({kind.headline})", "95% interval", "n")]
    rows = []
    for label in labels:
        bars = [eval_bar(kind, results[kind].get(label)) for kind in results]
        rows.append([label, *(cell for bar in bars for cell in (bar.value, interval(bar.ci95), bar.n))])
    parts = [title, markdown_table(header, rows)]
    split_rows = []
    for label, metrics in sorted(results.get(EVAL_PAIRWISE, {}).items(), key=lambda item: label_order(item[0])):
        split = metrics.get("length_balanced")
        if isinstance(split, dict):
            shorter, longer = split.get("model_shorter") or {}, split.get("model_longer") or {}
            split_rows.append(
                [
                    label,
                    metrics.get("win_rate"),
                    interval(metrics.get("ci95")),
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
        header = ["pairing", "win rate", "its 95% interval", "model's answer shorter", "n", "model's answer longer", "n", "same length"]
        parts.append(markdown_table([*header, "length-balanced win rate", "its 95% interval (bootstrap)"], split_rows))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(results)), 4.4))
    draw_evaluation(ax, results, labels)
    parts.append(figure(fig, figures / "eval.png"))
    return "\n\n".join(parts)


def draw_evaluation(ax, results: Mapping[Stage, Mapping[str, Summary]], labels: list[str]) -> None:
    """One group of bars per evaluation, one bar per model or pairing it measured, each with its 95% interval."""
    width = 0.8 / max(1, len(labels))
    kinds = list(results)
    drawn = []
    for i, label in enumerate(labels):
        bars = [eval_bar(kind, results[kind].get(label)) for kind in kinds]
        draw_bars(ax, [x + i * width for x in range(len(kinds))], bars, width, label)
        drawn += bars
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(kinds))], [k.subsection for k in kinds])
    policies = " vs ".join(["base", *(p.folder for p in stages.POLICIES)])
    ax.set(ylim=(0, 1), ylabel="accuracy / win rate", title=f"Evaluation ({policies}) with 95% intervals")
    ax.legend(fontsize=7)
    note_small_samples(ax, drawn)


def eval_bar(kind: Stage, metrics: Summary | None) -> Bar:
    """An evaluation's headline figure with its 95% interval and n (no value where it did not measure the model)."""
    if metrics is None:
        return Bar(kind.subsection, None)
    return Bar(kind.subsection, headline(kind, metrics)[1], metrics.get("ci95"), metrics.get("n"))


def label_order(label: str) -> tuple[int, str]:
    """Base, then each policy in the pipeline's order, each followed by its pairings; other labels last."""
    order = ("base", *(p.folder for p in stages.POLICIES))
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
    DPO: lambda run, figures: section_dpo(run),
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
