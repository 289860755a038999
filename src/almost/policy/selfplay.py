"""RM-guided self-play (RMSP): multi-turn demonstrations chosen by the reward model.

For every starting prompt a dialogue grows one assistant turn at a time:

1. the policy, prompted few-shot with a demonstration file (as in RG), samples ``--num_candidates``
   answers for the dialogue so far in one engine call (shared prompt, n samples);
2. each candidate gets RG's BAD-answer rules; the reward model scores the surviving ones in the
   context of the dialogue; the best one becomes the assistant turn (optionally only if it clears
   ``--min_reward`` or beats the runner-up by ``--min_margin``; otherwise the dialogue ends);
3. a prompted user simulator writes the next user turn; a turn that repeats an earlier one (ROUGE-L
   F at least ``--user_repeat_threshold``, or quoting a whole answer) or answers in the assistant's
   place is re-sampled up to ``--user_retries`` times; the dialogue ends when it writes nothing
   usable, says it is done, or is still rejected after the retries.

Dialogues advance in batches of ``--batch_size`` (all live dialogues of a batch at turn t share one
engine call). Each batch is one unit of work: its randomness is seeded from ``--seed``, the batch
and the turn, and its rows are written together, so a killed run resumes to exactly the rows an
uninterrupted one writes.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..chat import transcript
from ..config import EngineArguments, parse
from ..contracts import RESAMPLED_REASONS, RMSP, USER_TURNS_KEY, write_summary
from ..digests import digest_model, fingerprint
from ..engines import Engine, Sampling, engine_model, load_engine
from ..feedback.demos import (
    ANSWER_STOP,
    SEPARATOR,
    Demonstrations,
    bad_answer_reasons,
    cut_answer,
    few_shot_prompt,
    load_demonstrations,
)
from ..feedback.pg import rouge_l_fmeasure, rouge_lcs, rouge_tokens
from ..readers import read_json, read_prompts, read_rows
from ..resumable import ResumableJsonl
from ..shipped import BETTER_DEMONSTRATIONS, USER_SIMULATOR_PROMPT
from ..writes import write_jsonl_atomic

# The user simulator writes one Human turn: it ends where the model starts the assistant's reply.
USER_STOP = (SEPARATOR, "\nAssistant:", "\nHuman:")
USER_END_MARKER = "[END]"
MIN_USER_TURN_CHARS = 8
_GOODBYE = re.compile(r"^(thanks|thank you|thank u|great,? thanks|ok,? thanks|bye|goodbye)\b", re.I)
# Why a user turn is re-sampled (RESAMPLED_REASONS, counted in the summary's USER_TURNS_KEY for the
# report to read instead of recounting); every other verdict (ended, unusable) is final at once.
USER_REPEATS, USER_ROLE_SWAP = RESAMPLED_REASONS
# How replies open, never how a person asks: the simulator is writing the assistant's part.
_ROLE_SWAP = re.compile(
    r"^(sure|certainly|of course|absolutely|here is|here are|here['’]s|as an ai|as a language model|i['’]d be happy|i would be happy|"
    r"i['’]m happy to|great question|you['’]re welcome)\b",
    re.I,
)


@dataclass
class RMSPArguments(EngineArguments):
    """Settings of ``almost rmsp``."""

    output_dir: str = field(default="", metadata={"help": "Directory for demonstrations.jsonl and rmsp_summary.json (required)."})
    prompts_path: str = field(
        default="",
        metadata={"help": "Starting prompts: prompts.txt from `almost pg` (one per line) or JSONL with a `prompt` column (required)."},
    )
    reward_model_name_or_path: str = field(
        default="", metadata={"help": "Reward model from `almost rm train`, or the URL of `almost rm serve` (http://host:port) (required)."}
    )
    reward_token_env: str = field(
        default="ALMOST_RM_TOKEN",
        metadata={"help": "Environment variable holding the bearer token of a served reward model (unset: none sent)."},
    )
    user_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Model that plays the user (default: the policy model, loaded once and shared)."}
    )
    prompt_file_path: str = field(
        default=str(BETTER_DEMONSTRATIONS), metadata={"help": "Demonstration file that prompts the policy (as in `almost rg`)."}
    )
    n_shot: int = field(default=3, metadata={"help": "Demonstrations from --prompt_file_path in the policy's prompt."})
    user_prompt_file_path: str = field(
        default=str(USER_SIMULATOR_PROMPT), metadata={"help": "Few-shot prompt that makes an LM play a user asking follow-up questions."}
    )
    user_n_shot: int = field(default=4, metadata={"help": "Examples from --user_prompt_file_path in the user simulator's prompt."})
    num_candidates: int = field(default=4, metadata={"help": "Answers sampled per assistant turn (N, one call with n samples)."})
    max_turns: int = field(default=3, metadata={"help": "Most assistant turns per dialogue."})
    min_reward: float | None = field(
        default=None, metadata={"help": "Keep the best answer only if its reward is at least this (or it passes --min_margin)."}
    )
    min_margin: float | None = field(
        default=None,
        metadata={"help": "Keep the best answer only if it beats the runner-up by at least this much (or it passes --min_reward)."},
    )
    max_prompts: int = field(default=0, metadata={"help": "Use only the first this many prompts (0: all)."})
    temperature: float = field(default=0.8, metadata={"help": "Policy sampling temperature."})
    top_p: float = field(default=0.95, metadata={"help": "Policy nucleus sampling."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest assistant answer, in tokens."})
    user_temperature: float = field(default=0.8, metadata={"help": "User simulator sampling temperature."})
    user_max_new_tokens: int = field(default=48, metadata={"help": "Longest user turn, in tokens."})
    user_repeat_threshold: float = field(
        default=0.6,
        metadata={
            "help": "A user turn whose ROUGE-L F with any earlier turn is at least this, or that quotes a whole earlier answer, "
            "is a repeat: re-sampled, then the end of the dialogue (1: only exact copies)."
        },
    )
    user_retries: int = field(
        default=2, metadata={"help": "Re-samples of a user turn rejected as a repeat or as an answer in the assistant's place (0: none)."}
    )
    reward_batch_size: int = field(default=8, metadata={"help": "Conversations per reward model forward pass."})
    trim_to_sentence: bool = field(
        default=True,
        metadata={
            "help": "Cut an answer that stopped mid-sentence (at --max_new_tokens) back to its last full sentence before the BAD rules."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("output_dir", "prompts_path", "reward_model_name_or_path"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if self.num_candidates < 1:
            raise ValueError(f"--num_candidates must be at least 1, got {self.num_candidates}")
        if self.max_turns < 1:
            raise ValueError(f"--max_turns must be at least 1, got {self.max_turns}")
        if self.min_margin is not None and self.min_margin < 0:
            raise ValueError("--min_margin must not be negative")
        if self.max_prompts < 0:
            raise ValueError("--max_prompts must not be negative")
        if not 0 < self.user_repeat_threshold <= 1:
            raise ValueError("--user_repeat_threshold must be in (0, 1]")
        if self.user_retries < 0:
            raise ValueError("--user_retries must not be negative")


# ---------------------------------------------------------------------------------------------
# Pure pieces: reading prompts, the user simulator's prompt and verdict, choosing a candidate.


def user_prompt(simulator: Demonstrations, n_shot: int, messages: list[dict]) -> str:
    """The user simulator's examples, then the dialogue so far, ending with ``Human:`` for the next user turn."""
    return f"{simulator.static_prompt(n_shot)}{transcript(messages, strip=True)}\n\nHuman:"


def repeat_score(turn: str, messages: list[dict]) -> tuple[float, bool]:
    """(highest ROUGE-L F of ``turn`` against any earlier turn, whether it quotes a whole earlier answer).

    ROUGE-L as PG's near-duplicate filter computes it (rouge_score's tokens, no stemming).
    """
    tokens = rouge_tokens(turn)
    joined = f" {' '.join(tokens)} "
    best, quotes = 0.0, False
    for m in messages:
        other = rouge_tokens(m["content"])
        if not tokens or not other:
            continue
        best = max(best, rouge_l_fmeasure(rouge_lcs(other, tokens), len(other), len(tokens)))
        # Only answers: a follow-up may rightly contain an earlier question ("How do plants grow in winter?").
        quotes |= m["role"] == "assistant" and f" {' '.join(other)} " in joined
    return best, quotes


def user_turn_verdict(text: str, messages: list[dict], repeat_threshold: float) -> tuple[str, str | None, float | None]:
    """(cleaned user turn, why it is not usable or None, its highest ROUGE-L F against an earlier turn
    or None when it ended before that check).

    ``user_repeats`` and ``user_role_swap`` are re-sampled; the other reasons end the dialogue.
    """
    turn = text.strip()
    if USER_END_MARKER in turn:
        return turn, "user_ended", None
    if len(turn) < MIN_USER_TURN_CHARS:
        return turn, "user_turn_unusable", None
    if _GOODBYE.match(turn) and "?" not in turn:
        return turn, "user_ended", None
    score, quotes = repeat_score(turn, messages)
    if quotes or score >= repeat_threshold:
        return turn, USER_REPEATS, score
    # A question or request after "Sure," is still the user's ("Sure, but what about cacti?").
    if _ROLE_SWAP.match(turn) and "?" not in turn:
        return turn, USER_ROLE_SWAP, score
    return turn, None, score


def select_candidate(
    rewards: Sequence[float | None], min_reward: float | None = None, min_margin: float | None = None
) -> tuple[int | None, str | None]:
    """Index of the candidate to keep (argmax reward, first on ties) or None with the reason.

    ``None`` rewards are BAD candidates. The optional gates: the best reward is at least
    ``min_reward``, or it beats the runner-up by at least ``min_margin`` (with a single usable
    candidate the margin gate passes: every other candidate was BAD). With both set, passing either
    keeps the answer.
    """
    scored = [(r, i) for i, r in enumerate(rewards) if r is not None]
    if not scored:
        return None, "no_usable_candidate"
    best_reward, best = max(scored, key=lambda x: (x[0], -x[1]))
    failed = []
    if min_reward is not None and best_reward < min_reward:
        failed.append("below_min_reward")
    if min_margin is not None:
        others = sorted((r for r, i in scored if i != best), reverse=True)
        if others and best_reward - others[0] < min_margin:
            failed.append("margin_below_min")
    gates = (min_reward is not None) + (min_margin is not None)
    if failed and len(failed) == gates:
        return None, "_and_".join(failed)
    return best, None


def unit_seed(seed: int, batch: int, turn: int, role: str, attempt: int = 0) -> int:
    """The sampling seed of one engine call: fixed by the unit of work (and the retry), not by the call order."""
    unit = {"seed": seed, "batch": batch, "turn": turn, "role": role}
    if attempt:  # first tries keep the seeds they had before retries existed
        unit["attempt"] = attempt
    return int(fingerprint(unit), 16) % (2**31)


# ---------------------------------------------------------------------------------------------
# Self-play of one batch of dialogues.


@dataclass
class _Dialogue:
    index: int
    prompt: str
    messages: list[dict]
    turns: list[dict] = field(default_factory=list)
    end_reason: str | None = None

    def row(self) -> dict:
        # Kept dialogues end with an assistant turn: a user turn nobody answered is audit data only.
        messages = list(self.messages)
        if len(messages) > 1 and messages[-1]["role"] == "user":
            messages = messages[:-1]
        return {
            "index": self.index,
            "prompt": self.prompt,
            "messages": messages,
            "num_turns": sum(m["role"] == "assistant" for m in messages),
            "end_reason": self.end_reason,
            "turns": self.turns,
        }


class SelfPlay:
    """Runs dialogues with a policy engine, a user engine and a scorer (``.score(conversations)``)."""

    def __init__(self, config: RMSPArguments, policy: Engine, user: Engine, scorer, demos: Demonstrations, simulator: Demonstrations):
        self.config = config
        self.policy, self.user, self.scorer = policy, user, scorer
        self.demos, self.simulator = demos, simulator

    def run_batch(self, batch: int, items: list[tuple[int, str]]) -> list[dict]:
        c = self.config
        dialogues = [_Dialogue(i, p, [{"role": "user", "content": p}]) for i, p in items]
        for turn in range(c.max_turns):
            live = [d for d in dialogues if d.end_reason is None]
            if not live:
                break
            self._assistant_turn(batch, turn, live)
            live = [d for d in live if d.end_reason is None]
            if turn == c.max_turns - 1:
                for d in live:
                    d.end_reason = "max_turns"
            elif live:
                self._user_turn(batch, turn, live)
        return [d.row() for d in dialogues]

    def _assistant_turn(self, batch: int, turn: int, live: list[_Dialogue]) -> None:
        c = self.config
        sampling = Sampling(
            temperature=c.temperature,
            top_p=c.top_p,
            max_new_tokens=c.max_new_tokens,
            n=c.num_candidates,
            stop=ANSWER_STOP,
            seed=unit_seed(c.seed, batch, turn, "assistant"),
        )
        prompts = [few_shot_prompt(self.demos, c.n_shot, d.messages) for d in live]
        samples = self.policy.generate(prompts, sampling, desc=f"turn {turn + 1} answers")
        if len(samples) != len(live) or any(len(s) != c.num_candidates for s in samples):
            raise RuntimeError(f"engine returned {[len(s) for s in samples]} samples for {len(live)} prompts x {c.num_candidates}")
        candidates = [[{"text": cut_answer(t, c.trim_to_sentence), "reward": None, "bad_reasons": []} for t in texts] for texts in samples]
        to_score = []  # (dialogue position, candidate position)
        for k, cands in enumerate(candidates):
            for j, cand in enumerate(cands):
                cand["bad_reasons"] = bad_answer_reasons(cand["text"])
                if not cand["bad_reasons"]:
                    to_score.append((k, j))
        # One scorer call for the whole batch: each candidate is judged after the dialogue so far.
        conversations = [live[k].messages + [{"role": "assistant", "content": candidates[k][j]["text"]}] for k, j in to_score]
        rewards = self.scorer.score(conversations) if conversations else []
        for (k, j), r in zip(to_score, rewards, strict=True):
            candidates[k][j]["reward"] = float(r)
        for d, cands in zip(live, candidates):
            chosen, reason = select_candidate([x["reward"] for x in cands], c.min_reward, c.min_margin)
            d.turns.append({"turn": turn + 1, "candidates": cands, "chosen": chosen})
            if chosen is None:
                d.end_reason = reason
            else:
                d.messages.append({"role": "assistant", "content": cands[chosen]["text"]})

    def _user_turn(self, batch: int, turn: int, live: list[_Dialogue]) -> None:
        c = self.config
        pending = live
        # All rejected turns of the batch are re-sampled together, each attempt with its own seed, so
        # a replayed batch draws the same samples.
        for attempt in range(c.user_retries + 1):
            sampling = Sampling(
                temperature=c.user_temperature,
                top_p=c.top_p,
                max_new_tokens=c.user_max_new_tokens,
                n=1,
                stop=USER_STOP,
                seed=unit_seed(c.seed, batch, turn, "user", attempt),
            )
            prompts = [user_prompt(self.simulator, c.user_n_shot, d.messages) for d in pending]
            desc = f"turn {turn + 1} user turns" + (f" (retry {attempt})" if attempt else "")
            replies = self.user.generate(prompts, sampling, desc=desc)
            rejected = []
            for d, reply in zip(pending, replies, strict=True):
                text, reason, score = user_turn_verdict(reply[0], d.messages, c.user_repeat_threshold)
                record = d.turns[-1]
                record.setdefault("user_attempts", []).append(
                    {"text": text, "reason": reason, "rouge_l": None if score is None else round(score, 4)}
                )
                record["user_reply"] = text
                if reason in RESAMPLED_REASONS and attempt < c.user_retries:
                    rejected.append(d)
                elif reason:
                    d.end_reason = reason
                else:
                    d.messages.append({"role": "user", "content": text})
            pending = rejected
            if not pending:
                break


# ---------------------------------------------------------------------------------------------
# The stage.


def summarize(rows: list[dict], config: RMSPArguments) -> dict:
    """Dialogues, turns, end reasons, and per turn the mean best reward vs the mean candidate reward."""
    per_turn = []
    for t in range(1, config.max_turns + 1):
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
        "num_candidates": config.num_candidates,
        "max_turns": config.max_turns,
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


_NOT_RESULT_SETTINGS = (
    "output_dir",
    "prompts_path",
    "overwrite",
    "use_hf",
    "cache_dir",
    "reward_batch_size",
    "max_prompts",
    "kv_cache_gib",
    "gpu_memory_utilization",
    "model_name_or_path",
    "user_model_name_or_path",
    "reward_model_name_or_path",
    "prompt_file_path",
    "user_prompt_file_path",
    # Where and how requests travel (servers, retries, the key's variable) does not change the rows.
    "base_url",
    "api_key_env",
    "concurrency",
    "request_timeout",
    "max_retries",
    "reward_token_env",
)


def _file_digest(path: str | Path) -> str:
    return fingerprint({"text": Path(path).read_text(encoding="utf-8")})


def run_rmsp(config: RMSPArguments, policy: Engine | None = None, user: Engine | None = None, scorer=None) -> dict:
    """Self-play demonstrations into ``output_dir``; engines and scorer are loaded unless given (tests)."""
    out = Path(config.output_dir)
    final = out / RMSP.product_file
    prompts = read_prompts(config.prompts_path)
    if config.max_prompts:
        prompts = prompts[: config.max_prompts]
    demos = load_demonstrations(config.prompt_file_path)
    demos.static_prompt(config.n_shot)  # fails early when the file has too few demonstrations
    simulator = load_demonstrations(config.user_prompt_file_path)
    simulator.static_prompt(config.user_n_shot)
    policy_model = engine_model(config, config.model_name_or_path)
    user_model = engine_model(config, config.user_model_name_or_path or config.model_name_or_path)
    from ..reward.client import is_url
    from ..reward.model import RewardScorerSettings, load_scorer, reward_model_path

    reward_settings = RewardScorerSettings(
        batch_size=config.reward_batch_size,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        cache_dir=config.cache_dir,
        token_env=config.reward_token_env,
        served_batch_size=config.reward_batch_size,
    )
    reward_path = None
    if scorer is None:
        if is_url(config.reward_model_name_or_path):
            # Checked (and used) over HTTP: a server that is down fails here, before any generation.
            scorer = load_scorer(config.reward_model_name_or_path, reward_settings)
        else:
            # Checked here, before any generation; loaded below, only when a dialogue is left to play.
            reward_path = reward_model_path(config.reward_model_name_or_path, config.cache_dir)

    # Models and files by content, not by path: a reward model retrained in the same folder must not
    # add its rows to the old one's. Paths, the cache, and knobs that only trade memory for speed
    # (reward_batch_size) are left out; max_prompts is in the prompts' digest.
    settings = {
        "prompts": fingerprint({"prompts": prompts}),
        "policy": digest_model(policy_model.path),
        "user": digest_model(user_model.path),
        "reward_model": digest_model(reward_path or config.reward_model_name_or_path),
        "demonstrations": _file_digest(config.prompt_file_path),
        "user_simulator": _file_digest(config.user_prompt_file_path),
        **{k: v for k, v in asdict(config).items() if k not in _NOT_RESULT_SETTINGS},
    }
    store = ResumableJsonl(final, "index", settings)
    if config.overwrite:
        for role in ("dropped", RMSP.summary):
            (out / RMSP.files[role]).unlink(missing_ok=True)
        store.reset()
    if store.complete:  # refuses a finished file made with other settings
        print(f"rmsp: {final} is finished; pass --overwrite to make it again")
        summary_path = out / RMSP.summary_file
        return read_json(summary_path) if summary_path.exists() else summarize(read_rows(final), config)

    items = list(enumerate(prompts))
    batches = [items[s : s + config.batch_size] for s in range(0, len(items), config.batch_size)]
    with store:
        todo = [b for b in range(len(batches)) if not all(store.done(i) for i, _ in batches[b])]
        if todo:
            if policy is None:
                policy = load_engine(config, policy_model)
            if user is None:
                user = policy if user_model.path == policy_model.path else load_engine(config, user_model)
            if scorer is None:
                scorer = load_scorer(reward_path, reward_settings)
            play = SelfPlay(config, policy, user, scorer, demos, simulator)
            done_count = sum(store.done(i) for i, _ in items)
            with tqdm(total=len(items), initial=done_count, desc="rmsp", unit="dialogue") as bar:
                for b in todo:
                    store.append(play.run_batch(b, batches[b]))
                    bar.update(len(batches[b]))
    rows = [store.rows[i] for i, _ in items]
    summary = summarize(rows, config)
    # Dialogues without a single kept answer have nothing to train on: they go to a separate audit
    # file so that demonstrations.jsonl is ready for SFT as it is.
    write_jsonl_atomic(out / RMSP.files["dropped"], [r for r in rows if r["num_turns"] == 0])
    write_summary(RMSP, out, summary)
    store.finalize(order=[r["index"] for r in rows if r["num_turns"] > 0])
    from ..cards import write_dataset_card

    write_dataset_card(
        out,
        "rmsp",
        {"demonstrations": RMSP.product_file, "dropped_dialogues": RMSP.files["dropped"]},
        {
            "model": config.model_name_or_path,
            "user_model": config.user_model_name_or_path or config.model_name_or_path,
            "reward_model": config.reward_model_name_or_path,
            "backend": config.backend,
            "seed": config.seed,
            "settings": {
                k: getattr(config, k)
                for k in (
                    "num_candidates",
                    "max_turns",
                    "min_reward",
                    "min_margin",
                    "n_shot",
                    "user_n_shot",
                    "temperature",
                    "top_p",
                    "max_new_tokens",
                    "trim_to_sentence",
                    "user_repeat_threshold",
                    "user_retries",
                )
            },
            **{
                k: summary[k]
                for k in ("dialogues", "kept_dialogues", "dropped_dialogues", "assistant_turns", "end_reasons", USER_TURNS_KEY)
            },
        },
    )
    print(format_summary(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    (config,) = parse("almost rmsp", [RMSPArguments], argv, description=__doc__.split("\n\n")[0])
    run_rmsp(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
