"""``almost rm eval``: how often a reward model agrees with preference labels, and whether it is
fooled by length.

Reads any format ``reward.formats`` knows (prompt/chosen/rejected rows, Anthropic-HH transcripts,
BIG-bench hhh_alignment), scores both answers of every pair with ``RewardScorer``, and writes
``metrics.json`` (accuracy with a 95% Wilson interval, per-subset accuracy, length-bias statistics,
the length-balanced accuracy with a 95% bootstrap interval), ``rewards.jsonl`` (one row per pair)
and ``reward_eval.png``. A tie counts as wrong: an RM that cannot tell two answers apart has not
agreed with the label.

The rewards are appended to ``rewards.jsonl.partial`` a chunk of pairs at a time (the shipped test
set takes ~10 min on a 2-core CPU): a killed run goes on where it stopped, and a rerun on finished
rewards made by the same model from the same pairs only computes the metrics again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..cards import add_model_evaluation, shown_path
from ..config import require_option
from ..contracts import ADAPTER_DIR, CARD_FILE, write_summary
from ..digests import fingerprint
from ..errors import AlmostError
from ..readers import read_jsonl
from ..redaction import portable
from ..shipped import SHIPPED_PAIRS, shipped_or_path
from ..stages import RM_EVAL
from ..stats import reward_pair_metrics
from ..writes import write_text_atomic
from .formats import Pair, load_pairs
from .model import RewardScorer, reward_model_path
from .score import config_scorer, reward_store

PAIR_KEY = "_almost_pair"  # resume key, left out of the final rewards.jsonl
PAIRS_PER_APPEND = 32  # one durable append per this many pairs: a crash loses at most a few seconds


@dataclass
class RewardEvalConfig:
    """Settings of ``almost rm eval``."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The reward model: a checkpoint from `almost rm train` (or its LoRA adapter folder)."}
    )
    data_path: str | None = field(
        default=None,
        metadata={
            "help": (
                "Preference data: prompt/chosen/rejected JSONL/JSON, Anthropic-HH rows (.jsonl or .jsonl.gz), a saved HF "
                "dataset, BIG-bench hhh_alignment task.json / task folder, or a shipped set by name: hh-harmless-dev (choose "
                "options on it), hh-harmless-test (report on it)."
            )
        },
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where metrics.json, rewards.jsonl and reward_eval.png go."})
    batch_size: int = field(default=8, metadata={"help": "Texts per forward pass."})
    max_length: int = field(
        default=1024, metadata={"help": "Longest text in tokens; longer ones lose their beginning (the answer is kept whole)."}
    )
    dtype: str = field(default="auto", metadata={"help": "auto, bfloat16 or float32 (auto: bf16 on GPU, and on CPUs where it is faster)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model repositories to run their own code."})
    plot: bool = field(default=True, metadata={"help": "Write reward_eval.png (reward-margin histogram, reward vs length)."})
    overwrite: bool = field(default=False, metadata={"help": "Score again even if finished or partial rewards exist."})
    update_model_card: bool = field(
        default=True,
        metadata={
            "help": (
                "When the model is a folder `almost rm train` made (its model card says so), add these results to that card's "
                "evaluation table (false: leave the model folder alone). Any other model is never touched."
            )
        },
    )


def pair_rewards(scorer: RewardScorer, pairs: Sequence[Pair], progress: bool = True) -> tuple[list[float], list[float]]:
    """Rewards of the chosen and the rejected answer of every pair (their shared conversation encoded once)."""
    return scorer.score_pairs([p.conversation(p.chosen) for p in pairs], [p.conversation(p.rejected) for p in pairs], progress=progress)


def reward_rows(pairs: Sequence[Pair], chosen: Sequence[float], rejected: Sequence[float]) -> list[dict]:
    """The rows of ``rewards.jsonl``: each pair's rewards and answer lengths, all its metrics need."""
    return [
        {"subset": p.subset, "reward_chosen": c, "reward_rejected": r, "len_chosen": len(p.chosen), "len_rejected": len(p.rejected)}
        for p, c, r in zip(pairs, chosen, rejected)
    ]


def rows_metrics(rows: Sequence[dict]) -> dict:
    """``stats.reward_pair_metrics`` of ``reward_rows``."""
    return reward_pair_metrics(
        *([r[column] for r in rows] for column in ("reward_chosen", "reward_rejected", "len_chosen", "len_rejected", "subset"))
    )


def evaluate_pairs(scorer: RewardScorer, pairs: Sequence[Pair], progress: bool = True) -> tuple[dict, list[dict]]:
    """Metrics and per-pair rows for an RM on pairs (``rm train``'s held-out check; ``rm eval`` scores resumably)."""
    rows = reward_rows(pairs, *pair_rewards(scorer, pairs, progress))
    return rows_metrics(rows), rows


def score_resumably(config: RewardEvalConfig, model_path: str, pairs: Sequence[Pair], final: Path) -> list[dict]:
    """``reward_rows`` of all pairs, appended to ``<final>.partial`` chunk by chunk; the finished rows
    of an earlier run by the same model on the same pairs are read back instead of scored again."""
    pairs_fingerprint = fingerprint({"pairs": [[p.context, p.chosen, p.rejected, p.subset] for p in pairs]})
    store = reward_store(config, model_path, final, PAIR_KEY, pairs_fingerprint, len(pairs))
    if store.complete:  # refuses a finished file made with other settings
        print(f"almost rm eval: {final} is complete; metrics from its rewards (--overwrite scores again)")
        return read_jsonl(final)
    scorer = config_scorer(config, model_path)
    with store:
        pending = [i for i in range(len(pairs)) if not store.done(i)]
        with tqdm(total=len(pairs), initial=len(pairs) - len(pending), desc="almost rm eval", unit="pair") as bar:
            for start in range(0, len(pending), PAIRS_PER_APPEND):
                chunk = pending[start : start + PAIRS_PER_APPEND]
                chunk_pairs = [pairs[i] for i in chunk]
                rows = reward_rows(chunk_pairs, *pair_rewards(scorer, chunk_pairs, progress=False))
                store.append({**row, PAIR_KEY: i} for i, row in zip(chunk, rows))
                bar.update(len(chunk))
    return store.finalize(order=range(len(pairs)), drop_key=True)


def card_evaluation(metrics: dict, name: str, data: str, split: str | None, source: str, agreement: str) -> dict:
    """One evaluation of a model card (``cards.write_model_card``) from ``stats.reward_pair_metrics``: accuracy
    (named ``agreement``), the length-balanced accuracy and the "prefer longer" baseline wherever
    measured, and Spearman(reward, length)."""
    bias, balanced = metrics["length_bias"], metrics.get("length_balanced") or {}
    rows = [{"type": "accuracy", "name": agreement, "value": metrics["accuracy"], "ci95": metrics["ci95"], "n": metrics["n"]}]
    if balanced.get("accuracy") is not None:
        n = balanced["chosen_longer"]["n"] + balanced["chosen_shorter"]["n"]
        rows.append(
            {"type": "accuracy", "name": "length-balanced accuracy", "value": balanced["accuracy"], "ci95": balanced["ci95"], "n": n}
        )
    rows.append(
        {
            "type": "accuracy",
            "name": "'prefer the longer answer' baseline",
            "value": bias["length_only_accuracy"],
            "ci95": None,
            "n": metrics["n"],
        }
    )
    if bias["spearman_reward_length"] is not None:
        rows.append(
            {
                "type": "spearmanr",
                "name": "Spearman(reward, answer length)",
                "value": bias["spearman_reward_length"],
                "ci95": None,
                "n": 2 * metrics["n"],
            }
        )
    note = None
    if balanced.get("accuracy") is None:
        note = "no length-balanced accuracy: it needs pairs whose chosen answer is longer and pairs where it is shorter"
    return {
        "name": name,
        "data": data,
        "split": split,
        "source": source,
        "note": note,
        "metrics": [r for r in rows if r["value"] is not None],
    }


def _fmt(acc: dict) -> str:
    if acc["accuracy"] is None:
        return f"{'-':>8}  {'':>15}  {acc['n']:>6}"
    low, high = acc["ci95"]
    return f"{acc['accuracy']:>8.3f}  [{low:.3f}, {high:.3f}]  {acc['n']:>6}"


def metrics_table(metrics: dict) -> str:
    """The metrics as a small aligned text table."""
    lines = [f"{'':<26}{'accuracy':>8}  {'95% interval':>15}  {'pairs':>6}", f"{'all':<26}{_fmt(metrics)}"]
    for name, acc in metrics.get("subsets", {}).items():
        lines.append(f"{'  ' + name:<26}{_fmt(acc)}")
    bias = metrics["length_bias"]
    lines.append(f"{'chosen answer longer':<26}{_fmt(bias['chosen_longer'])}")
    lines.append(f"{'chosen answer shorter':<26}{_fmt(bias['chosen_shorter'])}")
    balanced = metrics.get("length_balanced") or {}
    if balanced.get("accuracy") is None:
        lines.append(f"{'length-balanced':<26}{'-':>8}  (needs pairs whose chosen answer is longer and pairs where it is shorter)")
    else:
        low, high = balanced["ci95"]
        interval = f"[{low:.3f}, {high:.3f}]" if low is not None else f"{'':>15}"
        n_balanced = balanced["chosen_longer"]["n"] + balanced["chosen_shorter"]["n"]
        lines.append(f"{'length-balanced':<26}{balanced['accuracy']:>8.3f}  {interval}  {n_balanced:>6}")
    rho = bias["spearman_reward_length"]
    lines.append(
        f"same length (left out of the balance): {bias['same_length']}   bootstrap: "
        f"{balanced.get('bootstrap', {}).get('samples', '-')} resamples over pairs"
    )
    lines.append(f"ties (counted wrong): {metrics['ties']}   mean margin: {metrics['mean_margin']:.3f}")
    lines.append(
        f"Spearman(reward, length): {'n/a' if rho is None else f'{rho:.3f}'}   "
        f"'prefer longer' would score: {bias['length_only_accuracy']:.3f}"
    )
    return "\n".join(lines)


def plot_rewards(rows: Sequence[dict], path: Path, title: str) -> Path:
    """Reward-margin histogram and reward vs answer length, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    margins = [r["reward_chosen"] - r["reward_rejected"] for r in rows]
    left.hist(margins, bins=min(40, max(5, len(margins) // 5)), color="tab:blue", alpha=0.8)
    left.axvline(0, color="black", linewidth=1)
    left.set(xlabel="reward(chosen) - reward(rejected)", ylabel="pairs", title="reward margin (right of 0 = agrees)")
    right.scatter([r["len_chosen"] for r in rows], [r["reward_chosen"] for r in rows], s=8, alpha=0.5, label="chosen")
    right.scatter([r["len_rejected"] for r in rows], [r["reward_rejected"] for r in rows], s=8, alpha=0.5, label="rejected")
    right.set(xlabel="answer length (characters)", ylabel="reward", title="reward vs length")
    right.set_xscale("symlog")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def eval_data_path(data_path: str) -> Path:
    """A shipped set's short name (``hh-harmless-dev``) → its file; anything else is a path."""
    return shipped_or_path(data_path, SHIPPED_PAIRS)


def add_to_model_card(config: RewardEvalConfig, metrics: dict) -> Path | None:
    """Add the results to the card of a reward model `almost rm train` made; the card of any other
    model (a hub id, another tool's folder) is never touched. Returns the card written, if any."""
    folder = Path(config.model_name_or_path).expanduser()
    if not folder.is_dir():
        return None  # a hub id or an embedded name: not ours
    if folder.name == ADAPTER_DIR and (folder.parent / CARD_FILE).is_file():
        folder = folder.parent  # the LoRA adapter of a run: its card is the merged model's, beside it
    name = config.data_path if not Path(config.data_path).exists() else Path(config.data_path).name  # a shipped set keeps its name
    data = shown_path(config.data_path, folder.resolve().parent)
    evaluation = card_evaluation(metrics, name, data, None, "almost rm eval", "accuracy (agreement with the labels)")
    try:
        return folder / CARD_FILE if add_model_evaluation(folder, evaluation) else None
    except OSError as e:  # e.g. a read-only model folder: the evaluation's own outputs stand
        print(f"almost rm eval: could not add the results to {folder / CARD_FILE}: {e}", file=sys.stderr)
        return None


def run_rm_eval(config: RewardEvalConfig) -> dict:
    require_option(config.data_path, "data_path", "preference pairs to evaluate on")
    if not config.output_dir:
        raise AlmostError("--output_dir is required")
    model_path = reward_model_path(config.model_name_or_path)
    pair_set = load_pairs(eval_data_path(config.data_path))
    out = Path(config.output_dir)
    rows = score_resumably(config, model_path, pair_set.pairs, out / RM_EVAL.outputs.files["rewards"])
    metrics = rows_metrics(rows)
    metrics.update(
        model=config.model_name_or_path,
        data=str(config.data_path),
        rows_read=pair_set.rows,
        skipped_identical=pair_set.identical,
        skipped_unsplittable=pair_set.unsplittable,
    )
    if config.plot:
        plot_rewards(rows, out / RM_EVAL.outputs.files["plot"], f"{Path(config.model_name_or_path).name} on {Path(config.data_path).name}")
    table = metrics_table(metrics)
    write_text_atomic(out / RM_EVAL.outputs.files["table"], table + "\n")
    write_summary(RM_EVAL.outputs, out, portable(metrics, out.resolve().parent))  # paths relative to the run
    print(table)
    if config.update_model_card:
        card = add_to_model_card(config, metrics)
        if card is not None:
            print(f"added to the evaluation table of {card}")
    skipped = pair_set.identical + pair_set.unsplittable
    if skipped:
        print(
            f"skipped {pair_set.identical} rows with chosen == rejected, {pair_set.unsplittable} rows that differ before the final answer"
        )
    return metrics
