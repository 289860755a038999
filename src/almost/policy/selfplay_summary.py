"""RMSP's summary (``rmsp_summary.json``, keys as ``stages.RMSP`` declares) and the lines it prints."""

from __future__ import annotations

import statistics
from collections import Counter

from ..stages import RESAMPLED_REASONS, USER_TURNS_KEY


def summarize(rows: list[dict], num_candidates: int, max_turns: int) -> dict:
    """Dialogues, turns, end reasons, and per turn the mean best reward vs the mean candidate reward."""
    per_turn = []
    for t in range(1, max_turns + 1):
        turns = [turn for row in rows for turn in row["turns"] if turn["turn"] == t]
        if not turns:
            break
        rewards = [[x["reward"] for x in turn["candidates"] if x["reward"] is not None] for turn in turns]
        scored = [r for r in rewards if r]
        candidates = [x for turn in turns for x in turn["candidates"]]
        per_turn.append(
            {
                "turn": t,
                "dialogues": len(turns),
                "kept": sum(turn["chosen"] is not None for turn in turns),
                "bad_candidate_rate": round(sum(bool(x["bad_reasons"]) for x in candidates) / len(candidates), 4),
                "mean_best_reward": round(statistics.fmean(max(r) for r in scored), 4) if scored else None,
                "mean_candidate_reward": round(statistics.fmean(x for r in scored for x in r), 4) if scored else None,
            }
        )
    kept = [row for row in rows if row["num_turns"] > 0]
    return {
        "dialogues": len(rows),
        "kept_dialogues": len(kept),
        "dropped_dialogues": len(rows) - len(kept),
        "assistant_turns": sum(row["num_turns"] for row in rows),
        "mean_turns_per_kept_dialogue": round(statistics.fmean(row["num_turns"] for row in kept), 3) if kept else 0.0,
        "end_reasons": dict(Counter(row["end_reason"] for row in rows).most_common()),
        "num_candidates": num_candidates,
        "max_turns": max_turns,
        "per_turn": per_turn,
        USER_TURNS_KEY: user_turn_stats(rows),
    }


def user_turn_stats(rows: list[dict]) -> dict:
    """How often the simulator's turns were rejected (per reason), re-sampled, and ended a dialogue.

    ``first_try_rate`` is the share of user turns whose first sample was rejected: how often the
    simulator does it on its own. ``rate`` is over every sample, retries included (a retry follows a
    rejection, so it is the harder case).
    """
    attempts = [turn["user_attempts"] for row in rows for turn in row["turns"] if turn.get("user_attempts")]
    samples = [a for turn in attempts for a in turn]
    stats = {
        "asked": len(attempts),
        "samples": len(samples),
        "retries": len(samples) - len(attempts),
        "accepted_after_retry": sum(len(turn) > 1 and turn[-1]["reason"] is None for turn in attempts),
    }
    for reason in RESAMPLED_REASONS:
        rejected = sum(a["reason"] == reason for a in samples)
        first = sum(turn[0]["reason"] == reason for turn in attempts)
        stats[reason] = {
            "rejected": rejected,
            "rate": round(rejected / len(samples), 4) if samples else 0.0,
            "first_try_rate": round(first / len(attempts), 4) if attempts else 0.0,
            "dialogues_ended": sum(row["end_reason"] == reason for row in rows),
        }
    return stats


def format_summary(summary: dict) -> str:
    lines = [
        f"rmsp: {summary['kept_dialogues']}/{summary['dialogues']} dialogues kept, {summary['assistant_turns']} assistant turns "
        f"(N={summary['num_candidates']}, up to {summary['max_turns']} turns)",
        f"  end reasons: {', '.join(f'{k} {v}' for k, v in summary['end_reasons'].items())}",
        "  turn  dialogues  kept  bad-rate  mean-best-reward  mean-candidate-reward",
    ]
    for t in summary["per_turn"]:
        best = "-" if t["mean_best_reward"] is None else f"{t['mean_best_reward']:.3f}"
        mean = "-" if t["mean_candidate_reward"] is None else f"{t['mean_candidate_reward']:.3f}"
        lines.append(f"  {t['turn']:>4}  {t['dialogues']:>9}  {t['kept']:>4}  {t['bad_candidate_rate']:>8.2f}  {best:>16}  {mean:>21}")
    users = summary[USER_TURNS_KEY]
    lines.append(
        f"  user turns: {users['asked']} asked, {users['samples']} sampled ({users['retries']} retries, "
        f"{users['accepted_after_retry']} accepted after a retry)"
    )
    for reason in RESAMPLED_REASONS:
        r = users[reason]
        lines.append(
            f"    {reason}: {r['rejected']} rejected ({r['rate']:.1%} of samples, {r['first_try_rate']:.1%} of first tries), "
            f"{r['dialogues_ended']} dialogues ended"
        )
    return "\n".join(lines)
