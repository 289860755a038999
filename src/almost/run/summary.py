"""What ``almost pipeline`` prints: the planned steps (``--dry_run``) and, at the end, the table of
what each step did, with one line of figures per step read from its outputs."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from ..errors import AlmostError
from ..readers import read_jsonl, read_lines
from ..stages import CS, DPO, PG, RG, RL, RM_EVAL, RM_TRAIN, RMSP, SFT, Stage
from .execute import PipelineResult
from .plan import Step
from .readings import headline, load_json, read_rl_log, rmsp_turn_rewards


def print_plan(planned: list[tuple[Step, str]]) -> None:
    """``--dry_run``: each step, whether it is done or to run, and its command line."""
    for step, state in planned:
        print(f"{step.name:<40} {state:<7} {step.command_line()}")


def print_summary(result: PipelineResult) -> None:
    rows = [("step", "status", "time (cpu)", "produced", "figures")]
    for o in result.steps:
        cpu = f" ({o.cpu_seconds:.0f}s)" if o.cpu_seconds is not None else ""
        took = f"{o.seconds:.0f}s{cpu}" + (" earlier" if o.status == "skipped" else "")
        try:
            produced = str(o.product.relative_to(result.run_dir))
        except ValueError:
            produced = str(o.product)
        figures = step_figures(o.stage, o.product) if o.status != "failed" else f"exit status {o.rc}"
        rows.append((o.name, o.status, took, produced, figures))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    ran = [o for o in result.steps if o.status != "skipped"]
    total, cpu = sum(o.seconds for o in ran), sum(o.cpu_seconds or 0 for o in ran)
    print(f"\nrun directory: {result.run_dir}   (stages run now: {total / 60:.1f} min, {cpu / 60:.1f} CPU-min)")
    if result.report is not None:
        print(f"report: {result.report}")


def step_figures(stage: Stage, product: Path) -> str:
    figures = FIGURES.get(stage) or (evaluation_figures if stage.headline else None)
    if figures is None:
        return ""
    try:
        return figures(stage, product)
    except (AlmostError, OSError, ValueError, KeyError, TypeError):
        return ""


def pg_figures(stage: Stage, product: Path) -> str:
    return f"{len(read_lines(product, 'prompts', allow_empty=True))} prompts"


def rg_figures(stage: Stage, product: Path) -> str:
    rows = read_jsonl(product)
    good = [len(r.get("response") or "") for r in rows if not r.get("bad")]
    mean = f", mean length {statistics.fmean(good):.0f} chars" if good else ""
    return f"{len(rows)} answers, {len(rows) - len(good)} BAD{mean}"


def cs_figures(stage: Stage, product: Path) -> str:
    stats = load_json(product.parent / CS.outputs.summary_file) or {}
    pairs = sum(1 for _ in read_jsonl(product))
    dropped = stats.get("dropped_by_filter")
    return f"{pairs} pairs" + (f", {dropped} dropped by the filter" if dropped is not None else "")


def rm_figures(stage: Stage, product: Path) -> str:
    """rm train's held-out rubric agreement; rm eval's accuracy (the same keys)."""
    metrics = load_json(product.parent / stage.outputs.summary_file) or {}
    held = metrics.get("heldout") if "heldout" in metrics else metrics
    if isinstance(held, dict) and held.get("accuracy") is not None:
        return f"accuracy {held['accuracy']:.3f} on {held.get('n')} pairs"
    return ""


def rmsp_figures(stage: Stage, product: Path) -> str:
    turns = rmsp_turn_rewards(product.parent)
    dialogues = sum(1 for _ in read_jsonl(product))
    gain = f", best {turns[0]['best']:.2f} vs mean {turns[0]['mean']:.2f} reward (turn 1)" if turns else ""
    return f"{dialogues} dialogues{gain}"


def sft_figures(stage: Stage, product: Path) -> str:
    train = (load_json(product.parent / SFT.outputs.summary_file) or {}).get("train") or {}
    if train.get("first_loss") is None:
        return ""
    return f"{train['global_step']} steps, loss {train['first_loss']:.3f} → {train['last_loss']:.3f}"


def dpo_figures(stage: Stage, product: Path) -> str:
    train = (load_json(product.parent / DPO.outputs.summary_file) or {}).get("train") or {}
    first, last = train.get("first_log"), train.get("last_log")
    if not first or not last:
        return ""
    return f"{train['global_step']} steps, loss {first['loss']:.3f} → {last['loss']:.3f}, reward margin {last['rewards/margins']:.3f}"


def rl_figures(stage: Stage, product: Path) -> str:
    log = product.parent / RL.outputs.files["log"]
    rows = [r for r in read_rl_log(log) if "reward" in r] if log.exists() else []
    if rows:
        kl = rows[-1].get("kl", float("nan"))
        return f"{len(rows)} logged steps, reward {rows[0]['reward']:.2f} → {rows[-1]['reward']:.2f}, KL {kl:.3f}"
    return ""


def evaluation_figures(stage: Stage, product: Path) -> str:
    key, value = headline(stage, load_json(product) or {})
    return f"{key} {value:.3f}" if isinstance(value, (int, float)) else ""


# One line of figures per stage, read from a step's product and the files beside it.
FIGURES: dict[Stage, Callable[[Stage, Path], str]] = {
    PG: pg_figures,
    RG: rg_figures,
    CS: cs_figures,
    DPO: dpo_figures,
    RM_TRAIN: rm_figures,
    RM_EVAL: rm_figures,
    RMSP: rmsp_figures,
    SFT: sft_figures,
    RL: rl_figures,
}
