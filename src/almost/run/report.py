"""``almost report RUN_DIR``: ``RUN_DIR/report.md`` with PNG plots, read from the files the stages wrote.

One section per stage, each from the stage's own output files in the run directory's layout
(``pg/``, ``rg/``, ``cs/``, ``rm/``, ``rm_eval/``, ``rmsp/``, ``sft/``, ``rl/``, ``eval/<kind>/<model>/``;
files directly in RUN_DIR are found too, as in the seed release's single output folder):

- comparisons kept and dropped by the heuristic filter per configuration pair (``comparison.jsonl``,
  ``cs_stats.json``);
- answer lengths and BAD rates per RG configuration (``{config}.jsonl``);
- RM rubric agreement on held-out synthetic pairs and its length bias (``rm/metrics.json``,
  ``rm_eval/metrics.json``);
- RMSP best vs mean candidate reward per turn, and how often the user simulator's turns were
  rejected and re-sampled (``rmsp_summary.json``);
- RL reward, KL and completion length per step (``rl_log.csv``);
- the evaluation table, base vs SFT vs RL (``eval/<kind>/<model>/metrics.json``).

A section whose files are missing says so; the report never fails on a partial run. File names and
summary keys come from ``almost.contracts``: a summary is read through its stage's declaration, so
the report cannot ask for a key that no stage writes.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import OneLineArgumentParser
from ..contracts import (
    CS,
    EVALUATIONS,
    PG,
    RESAMPLED_REASONS,
    RG_ROW_KEYS,
    RL,
    RM_EVAL,
    RM_TRAIN,
    RMSP,
    USER_TURNS_KEY,
    StageOutputs,
    Summary,
    read_summary,
)
from ..io import AlmostError, read_json, read_jsonl, read_lines, write_text_atomic

REPORT = "report.md"
FIGURES = "report_figures"  # the PNGs, next to report.md
# The one number of each evaluation in the tables: accuracy, or the win rate for pairwise.
HEADLINE_KEYS = {"hhh": "accuracy", "truthfulqa": "accuracy", "pairwise": "win_rate"}


def _find(run: Path, folder: str, name: str) -> Path | None:
    for path in (run / folder / name, run / name):
        if path.is_file():
            return path
    return None


def _load_json(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return read_json(path)
    except AlmostError:
        return None


def _summary(outputs: StageOutputs, path: Path | None) -> Summary | None:
    """The stage's summary read through its declaration; None when missing or unreadable."""
    if path is None:
        return None
    try:
        return read_summary(outputs, path)
    except AlmostError:
        return None


def _stage_summary(run: Path, folder: str, outputs: StageOutputs) -> Summary | None:
    return _summary(outputs, _find(run, folder, outputs.summary_file))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot drawing to files only (no display on CI or a GPU node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def _save(fig, path: Path) -> str:
    """Write the figure and return the Markdown that shows it (paths relative to report.md)."""
    save_figure(fig, path)
    return f"![{path.stem}]({FIGURES}/{path.name})"


# ----------------------------------------------------------------------------------------------
# Readers: one per stage output, returning plain numbers (the summary table reuses them)


def read_rg_rows(run: Path) -> dict[str, list[dict]]:
    """RG rows per configuration from every ``{config}.jsonl`` with RG's columns."""
    folders = [run / "rg", run]
    rows: dict[str, list[dict]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            try:
                data = read_jsonl(path)
            except AlmostError:
                continue
            if data and set(RG_ROW_KEYS) <= set(data[0]):
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
    summary = _stage_summary(run, "rmsp", RMSP) or {}
    return [
        {"turn": t["turn"], "best": t["mean_best_reward"], "mean": t["mean_candidate_reward"], "n": t["dialogues"]}
        for t in summary.get("per_turn") or []
    ]


def eval_results(run: Path) -> dict[str, dict[str, Summary]]:
    """``{kind: {model label: metrics}}`` from ``eval/<kind>/<label>/metrics.json``."""
    results: dict[str, dict[str, Summary]] = {}
    root = run / "eval"
    for kind, outputs in EVALUATIONS.items():
        for path in sorted((root / kind).glob(f"*/{outputs.summary_file}")) if (root / kind).is_dir() else []:
            metrics = _summary(outputs, path)
            if metrics is not None:
                results.setdefault(kind, {})[path.parent.name] = metrics
    return results


def headline(kind: str, metrics: Mapping[str, Any]) -> tuple[str, Any]:
    """The one number of an evaluation: accuracy, or the win rate for pairwise."""
    key = HEADLINE_KEYS[kind]
    value = metrics.get(key)
    return key, value if isinstance(value, (int, float)) else None


# ----------------------------------------------------------------------------------------------
# Sections


def section_prompts(run: Path) -> str:
    path = _find(run, "pg", PG.product_file)
    if path is None:
        return f"## 1. Prompts (PG)\n\nNo `{PG.product_file}` in this run yet."
    prompts = read_lines(path, "prompts", allow_empty=True)  # a report describes a run, even one that found nothing
    lengths = [len(p) for p in prompts]
    text = f"## 1. Prompts (PG)\n\n{len(prompts)} prompts in `{path.relative_to(run)}`"
    if lengths:
        text += f", {statistics.fmean(lengths):.0f} characters on average."
    stats = _stage_summary(run, "pg", PG)
    if stats is not None:
        rows = [[k, v] for k, v in stats.items() if isinstance(v, (int, float, str))]
        text += "\n\n" + markdown_table([PG.summary_file, "value"], rows)
    return text


def section_responses(run: Path, figures: Path) -> str:
    rows = read_rg_rows(run)
    title = "## 2. Responses per configuration (RG)"
    if not rows:
        return f"{title}\n\nNo RG output (`rg/{{config}}.jsonl`) in this run yet."
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
    image = _save(fig, figures / "rg_answer_lengths.png")
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
    path = _find(run, "cs", CS.product_file)
    stats = _stage_summary(run, "cs", CS) or {}
    if path is None and not stats:
        return f"{title}\n\nNo `{CS.product_file}` or `{CS.summary_file}` in this run yet."
    parts = [title]
    totals = [[k, v] for k, v in stats.items() if isinstance(v, (int, float, str))]
    if totals:
        parts.append(markdown_table([CS.summary_file, "value"], totals))
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
    parts.append(_save(fig, figures / "cs_pairs.png"))
    valid = stats.get("valid_answers")
    if valid:
        parts.append(markdown_table(["configuration", "valid (non-BAD) answers"], [[k, v] for k, v in valid.items()]))
    return "\n\n".join(parts)


def _interval(ci: Any) -> str | None:
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
        _interval(balanced.get("ci95")),
        longer.get("accuracy"),
        shorter.get("accuracy"),
        bias.get("length_only_accuracy"),
        bias.get("spearman_reward_length"),
    ]


def rm_evaluations(run: Path) -> list[tuple[str, Summary]]:
    """``(folder name, metrics)`` of every ``rm eval`` in the run (``rm_eval*/``)."""
    found = []
    for path in sorted(run.glob(f"rm_eval*/{RM_EVAL.summary_file}")):
        metrics = _summary(RM_EVAL, path)
        if metrics is not None:
            found.append((path.parent.name, metrics))
    return found


def section_reward_model(run: Path, figures: Path) -> str:
    title = "## 4. Reward model (RM)"
    evaluations = []
    train = _stage_summary(run, "rm", RM_TRAIN) or {}
    if isinstance(train.get("heldout"), dict):
        evaluations.append(("held-out synthetic pairs (rubric agreement)", train["heldout"]))
    evaluations += rm_evaluations(run)
    if not evaluations:
        found = f"`rm/{RM_TRAIN.summary_file}` with held-out pairs, `rm_eval/{RM_EVAL.summary_file}`"
        return f"{title}\n\nNo RM metrics ({found}) in this run yet."
    parts = [title]
    if isinstance(train.get("data"), dict):
        d = train["data"]
        parts.append(
            f"Trained on {_fmt(d.get('train_pairs'))} pairs, {_fmt(d.get('heldout_pairs'))} held out; "
            f"{_fmt(d.get('truncated'))} truncated, {_fmt(d.get('dropped_long'))} dropped as too long."
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
    parts.append(_save(fig, figures / "rm_accuracy.png"))
    return "\n\n".join(parts)


def section_selfplay(run: Path, figures: Path) -> str:
    title = "## 5. RM-guided self-play (RMSP)"
    turns = rmsp_turn_rewards(run)
    if not turns:
        return f"{title}\n\nNo RMSP output (`rmsp/{RMSP.summary_file}`) in this run yet."
    parts = [title]
    summary = _stage_summary(run, "rmsp", RMSP)
    totals = [[k, v] for k, v in summary.items() if isinstance(v, (int, float, str))]
    if totals:
        parts.append(markdown_table([RMSP.summary_file, "value"], totals))
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
    parts.append(_save(fig, figures / "rmsp_rewards.png"))
    return "\n\n".join(parts)


def _user_turn_table(summary: Summary) -> str:
    # Read as rmsp wrote it, never recounted from the dialogues: one definition of each rate.
    users = summary.get(USER_TURNS_KEY)
    if not isinstance(users, dict):
        made_before = "made before rmsp counted rejected user turns"
        return f"User-simulator turns: `{RMSP.summary_file}` has no `{USER_TURNS_KEY}` counts ({made_before})."
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
    path = _find(run, "rl", RL.files["log"])
    rows = read_rl_log(path) if path is not None else []
    rows = [r for r in rows if "step" in r]
    if not rows:
        return f"{title}\n\nNo `rl/{RL.files['log']}` in this run yet."
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
    parts.append(_save(fig, figures / "rl_curves.png"))
    return "\n\n".join(parts)


def section_evaluation(run: Path, figures: Path) -> str:
    title = "## 7. Evaluation"
    results = eval_results(run)
    if not results:
        return f"{title}\n\nNo evaluation results (`eval/<kind>/<model>/metrics.json`) in this run yet."
    labels = sorted({label for per_kind in results.values() for label in per_kind}, key=_model_order)
    header = ["model", *(f"{kind} ({headline(kind, next(iter(results[kind].values())))[0]})" for kind in results)]
    rows = [[label, *(headline(kind, results[kind][label])[1] if label in results[kind] else None for kind in results)] for label in labels]
    parts = [title, markdown_table(header, rows)]
    split_rows = []
    for label, metrics in results.get("pairwise", {}).items():
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
                    _interval(split.get("ci95")),
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
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(kinds))], kinds)
    ax.set(ylim=(0, 1), ylabel="accuracy / win rate", title="Evaluation: base vs SFT vs RL")
    ax.legend()
    parts.append(_save(fig, figures / "eval.png"))
    return "\n\n".join(parts)


def _model_order(label: str) -> tuple[int, str]:
    order = ("base", "sft", "rl")
    head = label.split("-vs-")[0]
    return (order.index(head) if head in order else len(order), label)


def write_report(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise AlmostError(f"run directory not found: {run}")
    figures = run / FIGURES
    sections = [
        f"# almost run report: `{run.resolve().name}`",
        "Built by `almost report` from the files the stages wrote; a section whose files are missing says so.",
        section_prompts(run),
        section_responses(run, figures),
        section_comparisons(run, figures),
        section_reward_model(run, figures),
        section_selfplay(run, figures),
        section_rl(run, figures),
        section_evaluation(run, figures),
    ]
    return write_text_atomic(run / REPORT, "\n\n".join(sections) + "\n")


# ----------------------------------------------------------------------------------------------
# The proof table (issue 11): the figures that say whether the synthetic feedback carries signal


# Human-supervised references (docs/proof.md): an RM trained with a run's RM settings on as many human
# pairs from hh-harmless-dev as the run's CS kept, made by scripts/proof_ablation.py in
# RUN/ablation/supervised-<base>/ (its human pairs, rm/ and rm_eval/). A reference, never a default.
SUPERVISED_FOLDERS = "supervised-*"


def supervised_references(folder: Path) -> dict[tuple[Any, Any], tuple[Path, Summary, Summary]]:
    """``{(base model, human pairs evaluated on): (folder, rm train summary, rm eval metrics)}`` of the
    finished supervised references in ``folder`` (a run's ``ablation/``)."""
    found = {}
    for path in sorted(folder.glob(f"{SUPERVISED_FOLDERS}/rm_eval/{RM_EVAL.summary_file}")):
        reference = path.parent.parent
        train, metrics = _stage_summary(reference, "rm", RM_TRAIN), _summary(RM_EVAL, path)
        if train is not None and metrics is not None:
            found[(train.get("base_model"), metrics.get("data"))] = (reference, train, metrics)
    return found


def margin_share(synthetic: Mapping[str, Any], supervised: Mapping[str, Any]) -> float | None:
    """(synthetic - 0.5) / (supervised - 0.5) of two RMs' length-balanced accuracies on the same human
    pairs: how much of the supervised RM's margin over chance the synthetic one recovers. None when
    either is missing or the supervised RM is not above chance."""
    a = (synthetic.get("length_balanced") or {}).get("accuracy")
    b = (supervised.get("length_balanced") or {}).get("accuracy")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b <= 0.5:
        return None
    return (a - 0.5) / (b - 0.5)


def share_cell(share: float | None) -> str | None:
    return None if share is None else f"{share:.0%}"


def proof_table(run_dir: str | Path) -> str:
    """Per reward model evaluated on human pairs (``rm_eval*/``): pairs kept by CS, rubric agreement on
    held-out synthetic pairs, plain and length-balanced accuracy on the human pairs, "prefer longer"
    and Spearman(reward, length); with a supervised reference of the same base on the same human pairs
    (``ablation/supervised-*``), its row and each RM's share of its margin; then per pairwise evaluation
    its win rate and the length split, over all questions and per category.
    Every figure is read from the metrics the stages wrote; a missing one shows as "–"."""
    run = Path(run_dir)
    stats = _stage_summary(run, "cs", CS) or {}
    train = _stage_summary(run, "rm", RM_TRAIN) or {}
    held = train.get("heldout") if isinstance(train.get("heldout"), dict) else {}
    references = supervised_references(run / "ablation")
    rm_rows, used = [], {}
    for label, metrics in rm_evaluations(run):
        _, n, accuracy, balanced, interval, _, _, longer, rho = rm_eval_row(label, metrics)
        rm_rows.append([label, stats.get("pairs"), held.get("accuracy"), n, accuracy, balanced, interval, longer, rho])
        if references:
            reference = references.get((train.get("base_model"), metrics.get("data")))
            rm_rows[-1].append(share_cell(margin_share(metrics, reference[2])) if reference else None)
            if reference:
                used[reference[0]] = reference
    for folder, supervised_train, supervised in used.values():
        _, n, accuracy, balanced, interval, _, _, longer, rho = rm_eval_row(str(folder.relative_to(run)), supervised)
        pairs, agreement = (supervised_train.get("data") or {}).get("pairs"), (supervised_train.get("heldout") or {}).get("accuracy")
        rm_rows.append([str(folder.relative_to(run)), pairs, agreement, n, accuracy, balanced, interval, longer, rho, "(reference)"])
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
    parts = [f"Reward model on real human preference pairs ({goal}):"]
    parts.append(markdown_table(header, rm_rows) if rm_rows else f"No `rm_eval*/{RM_EVAL.summary_file}` in this run yet.")
    policy_rows = []
    for label, metrics in eval_results(run).get("pairwise", {}).items():
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
                    _interval(part.get("ci95")),
                    shorter.get("rate"),
                    shorter.get("n"),
                    longer.get("rate"),
                    longer.get("n"),
                    split.get("win_rate"),
                    _interval(split.get("ci95")),
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
    missing = f"No `eval/pairwise/*/{EVALUATIONS['pairwise'].summary_file}` in this run yet."
    parts.append(markdown_table(header, policy_rows) if policy_rows else missing)
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="almost report", description="Write RUN_DIR/report.md with PNG plots for a run directory.")
    parser.add_argument("run_dir", help="The run directory of `almost pipeline` or `almost demo`.")
    args = parser.parse_args(argv)
    path = write_report(args.run_dir)
    print(f"almost report: wrote {path}")
    return 0
