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

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..cards import write_dataset_card
from ..config import EngineArguments
from ..contracts import write_summary
from ..digests import digest_model, fingerprint
from ..engines import Engine, Sampling, engine_model, load_engine
from ..feedback.demos import (
    ANSWER_STOP,
    Demonstrations,
    bad_answer_reasons,
    cut_answer,
    few_shot_prompt,
    load_demonstrations,
)
from ..readers import read_json, read_prompts, read_rows
from ..resumable import ResumableJsonl
from ..reward.client import is_url
from ..reward.model import RewardScorerSettings, load_scorer, reward_model_path
from ..shipped import BETTER_DEMONSTRATIONS, USER_SIMULATOR_PROMPT
from ..stages import RESAMPLED_REASONS, RMSP, USER_TURNS_KEY
from ..writes import write_jsonl_atomic
from .selfplay_summary import format_summary, summarize
from .turns import USER_STOP, select_candidate, unit_seed, user_prompt, user_turn_verdict


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
    "max_model_len",
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


def reward_settings(config: RMSPArguments) -> RewardScorerSettings:
    return RewardScorerSettings(
        batch_size=config.reward_batch_size,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        cache_dir=config.cache_dir,
        token_env=config.reward_token_env,
        served_batch_size=config.reward_batch_size,
    )


def resume_settings(config: RMSPArguments, prompts: list[str], models: tuple[str, str, str]) -> dict:
    """What decides the rows: models and files by content, not by path (a reward model retrained in
    the same folder must not add its rows to the old one's). Paths, the cache, and knobs that only
    trade memory for speed (reward_batch_size) are left out; max_prompts is in the prompts' digest.
    ``models``: the paths (or served names) of the policy, the user simulator and the reward model."""
    policy, user, reward_model = models
    return {
        "prompts": fingerprint({"prompts": prompts}),
        "policy": digest_model(policy),
        "user": digest_model(user),
        "reward_model": digest_model(reward_model),
        "demonstrations": _file_digest(config.prompt_file_path),
        "user_simulator": _file_digest(config.user_prompt_file_path),
        **{k: v for k, v in asdict(config).items() if k not in _NOT_RESULT_SETTINGS},
    }


def run_rmsp(config: RMSPArguments, policy: Engine | None = None, user: Engine | None = None, scorer=None) -> dict:
    """Self-play demonstrations into ``output_dir``; engines and scorer are loaded unless given (tests)."""
    out = Path(config.output_dir)
    final = out / RMSP.outputs.product_file
    prompts = read_prompts(config.prompts_path)
    if config.max_prompts:
        prompts = prompts[: config.max_prompts]
    demos = load_demonstrations(config.prompt_file_path)
    demos.static_prompt(config.n_shot)  # fails early when the file has too few demonstrations
    simulator = load_demonstrations(config.user_prompt_file_path)
    simulator.static_prompt(config.user_n_shot)
    policy_model = engine_model(config, config.model_name_or_path)
    user_model = engine_model(config, config.user_model_name_or_path or config.model_name_or_path)
    reward_path = None
    if scorer is None:
        if is_url(config.reward_model_name_or_path):
            # Checked (and used) over HTTP: a server that is down fails here, before any generation.
            scorer = load_scorer(config.reward_model_name_or_path, reward_settings(config))
        else:
            # Checked here, before any generation; loaded below, only when a dialogue is left to play.
            reward_path = reward_model_path(config.reward_model_name_or_path, config.cache_dir)
    models = (policy_model.path, user_model.path, reward_path or config.reward_model_name_or_path)
    store = ResumableJsonl(final, "index", resume_settings(config, prompts, models))
    if config.overwrite:
        for role in ("dropped", RMSP.outputs.summary):
            (out / RMSP.outputs.files[role]).unlink(missing_ok=True)
        store.reset()
    if store.complete:  # refuses a finished file made with other settings
        print(f"rmsp: {final} is finished; pass --overwrite to make it again")
        summary_path = out / RMSP.outputs.summary_file
        return read_json(summary_path) if summary_path.exists() else summarize(read_rows(final), config.num_candidates, config.max_turns)

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
                scorer = load_scorer(reward_path, reward_settings(config))
            play = SelfPlay(config, policy, user, scorer, demos, simulator)
            done_count = sum(store.done(i) for i, _ in items)
            with tqdm(total=len(items), initial=done_count, desc="rmsp", unit="dialogue") as bar:
                for b in todo:
                    store.append(play.run_batch(b, batches[b]))
                    bar.update(len(batches[b]))
    rows = [store.rows[i] for i, _ in items]
    summary = summarize(rows, config.num_candidates, config.max_turns)
    # Dialogues without a single kept answer have nothing to train on: they go to a separate audit
    # file so that demonstrations.jsonl is ready for SFT as it is.
    write_jsonl_atomic(out / RMSP.outputs.files["dropped"], [r for r in rows if r["num_turns"] == 0])
    write_summary(RMSP.outputs, out, summary)
    store.finalize(order=[r["index"] for r in rows if r["num_turns"] > 0])
    write_card(config, summary)
    print(format_summary(summary))
    return summary


# The settings the dataset card records.
CARD_SETTINGS = (
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


def write_card(config: RMSPArguments, summary: dict) -> None:
    write_dataset_card(
        config.output_dir,
        RMSP,
        {"demonstrations": RMSP.outputs.product_file, "dropped_dialogues": RMSP.outputs.files["dropped"]},
        {
            "model": config.model_name_or_path,
            "user_model": config.user_model_name_or_path or config.model_name_or_path,
            "reward_model": config.reward_model_name_or_path,
            "backend": config.backend,
            "seed": config.seed,
            "settings": {k: getattr(config, k) for k in CARD_SETTINGS},
            **{
                k: summary[k]
                for k in ("dialogues", "kept_dialogues", "dropped_dialogues", "assistant_turns", "end_reasons", USER_TURNS_KEY)
            },
        },
    )
