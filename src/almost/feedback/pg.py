"""Stage PG: new user queries from a base LM, few-shot prompted with seed queries, deduplicated.

The prompt file's first line is an instruction; every other line is a seed query. Each request shows
the instruction and ``--num_examples`` queries drawn at random from the seeds and the prompts
accepted so far, one ``Query: ...`` line each, and ends with ``Query:``. The first line the model
writes is the candidate. It is rejected when it is empty or has no words, shorter than
``--min_chars`` without final punctuation, longer than ``--max_chars``, or a near-duplicate
(ROUGE-L F >= ``--rouge_l_threshold``) of a seed or of an accepted prompt.

A round sends ``--batch_size`` requests to the engine in one call and then judges the candidates in
order, so a prompt accepted earlier in the round counts against later ones. Each round is appended
(with every candidate and its verdict) to ``pg_rounds.jsonl.partial`` and fsynced; a rerun replays
those rounds and continues, and because each round's randomness comes from ``--seed`` and the round
number, a resumed run writes the same ``prompts.txt`` as an uninterrupted one. For the same reason a
finished run asked for more prompts (a larger ``--num_generation``, nothing else changed) goes on
from its logged rounds: its ``prompts.txt`` is the one a run asked for that many from the start writes.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..cards import write_dataset_card
from ..config import EngineArguments
from ..contracts import write_summary
from ..digests import digest_model, fingerprint
from ..engines import Engine, Sampling, engine_model, load_engine
from ..errors import AlmostError
from ..readers import read_lines
from ..resumable import ResumableJsonl, output_is_current, record_settings, recorded_settings, remove_output
from ..shipped import SEED_PROMPTS, asset_or_path
from ..stages import PG
from ..writes import write_text_atomic

QUERY_PREFIX = "Query:"
# The candidate is the first line the model writes: it ends at a newline or where the model starts
# the next query on the same line.
QUERY_STOP = ("\n", QUERY_PREFIX)
FINAL_PUNCTUATION = (".", "?", "!")
# Without an explicit --max_rounds the run gives up when fewer than 1 request in 20 yields a new prompt.
AUTO_MAX_ROUNDS_PER_BATCH = 20


@dataclass
class PGArguments(EngineArguments):
    """Options of ``almost pg`` (seed spellings; dash spellings work too)."""

    output_dir: str | None = field(default=None, metadata={"help": "Directory for prompts.txt and pg_stats.json (required)."})
    prompt_file_path: str = field(
        default=str(SEED_PROMPTS),
        metadata={"help": "Text file: an instruction line, then one seed query per line (default: the project's own seed file)."},
    )
    num_generation: int = field(default=100, metadata={"help": "How many new prompts to write."})
    batch_size: int = field(default=8, metadata={"help": "Requests per round, sent to the engine in one call."})
    num_examples: int = field(default=10, metadata={"help": "Example queries shown in each request (k)."})
    temperature: float = field(default=1.2, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling mass."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens generated per request."})
    min_chars: int = field(default=30, metadata={"help": "Reject prompts shorter than this that do not end with '.', '?' or '!'."})
    max_chars: int = field(default=250, metadata={"help": "Reject prompts longer than this many characters."})
    rouge_l_threshold: float = field(
        default=0.5, metadata={"help": "Reject a prompt whose ROUGE-L F with a seed or accepted prompt is at least this."}
    )
    max_rounds: int = field(
        default=0,
        metadata={"help": f"Give up after this many rounds; 0 = {AUTO_MAX_ROUNDS_PER_BATCH} x ceil(num_generation / batch_size)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.output_dir:
            raise ValueError("--output_dir is required")
        for name in ("num_generation", "num_examples", "max_new_tokens", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")
        if self.min_chars < 0 or self.max_rounds < 0:
            raise ValueError("--min_chars and --max_rounds must not be negative")
        if not 0 < self.rouge_l_threshold <= 1:
            raise ValueError("--rouge_l_threshold must be in (0, 1]")

    @property
    def round_limit(self) -> int:
        return self.max_rounds or AUTO_MAX_ROUNDS_PER_BATCH * math.ceil(self.num_generation / self.batch_size)


# --- the prompt file -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptFile:
    instruction: str
    seeds: tuple[str, ...]


def is_instruction_line(line: str) -> bool:
    """``### Instruction: ...`` and the like: a heading line or one that says ``Instruction:``."""
    return line.startswith("#") or "instruction:" in line.lower()


def read_prompt_file(path: str | Path) -> PromptFile:
    lines = read_lines(asset_or_path(path), "prompt file")
    if not is_instruction_line(lines[0]):
        raise AlmostError(f"{path}: the first line must be an instruction (e.g. '### Instruction: ...'), got {lines[0][:60]!r}")
    # Seed files written as a transcript ("Query: ...") work too.
    seeds = tuple(line[len(QUERY_PREFIX) :].strip() if line.startswith(QUERY_PREFIX) else line for line in lines[1:])
    seeds = tuple(s for s in seeds if s)
    if not seeds:
        raise AlmostError(f"{path}: no seed queries after the instruction line")
    return PromptFile(lines[0], seeds)


# --- requests and candidates -----------------------------------------------------------------------


def build_request(instruction: str, examples: Sequence[str]) -> str:
    """The instruction, one ``Query: ...`` line per example, and ``Query:`` for the model to continue."""
    return "\n".join([instruction, *(f"{QUERY_PREFIX} {q}" for q in examples), QUERY_PREFIX])


def first_query(generation: str) -> str:
    """The candidate prompt: the generation up to its first newline or next ``Query:``, stripped."""
    for stop in QUERY_STOP:
        generation = generation.split(stop, 1)[0]
    return generation.strip()


def length_rejection(prompt: str, min_chars: int, max_chars: int) -> str | None:
    """Why ``prompt`` fails the cheap filters, or None. Checked in this order; the first reason wins."""
    if not prompt:
        return "empty"
    if not rouge_tokens(prompt):
        return "no_words"  # punctuation only: ROUGE-L cannot see it, so it would never be a duplicate
    if len(prompt) < min_chars and not prompt.endswith(FINAL_PUNCTUATION):
        return "short_unpunctuated"
    if len(prompt) > max_chars:
        return "too_long"
    return None


# --- near-duplicates -------------------------------------------------------------------------------

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer without stemming: lower-case, every run of characters other
    than a-z and 0-9 becomes a space, split on whitespace ("Don't panic!" → don, t, panic)."""
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


def rouge_l_fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """ROUGE-L F from the LCS length, in rouge_score's floating-point order of operations.

    Mathematically this is 2·LCS/(len_a+len_b), but rouge_score computes 2·P·R/(P+R) in floats, which
    gives 0.4999999999999999 for some pairs that are exactly 0.5 (LCS 6 of 11 and 13 tokens); we
    follow rouge_score so that decisions match it exactly, boundary included.
    """
    if lcs == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall)


def rouge_lcs(target: Sequence[str], prediction: Sequence[str]) -> int:
    """LCS length of two token lists (bit-parallel), for one-off comparisons outside the index."""
    return bit_parallel_lcs(_position_masks(target), len(target), prediction)


def rouge_l(target: Sequence[str], prediction: Sequence[str]) -> float:
    """ROUGE-L F of two token lists (``rouge_tokens``), for one-off comparisons outside the index."""
    return rouge_l_fmeasure(rouge_lcs(target, prediction), len(target), len(prediction))


def _position_masks(tokens: Sequence[str]) -> dict[str, int]:
    masks: dict[str, int] = {}
    for i, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << i)
    return masks


def bit_parallel_lcs(masks: dict[str, int], length: int, other: Sequence[str]) -> int:
    """LCS length of a token list (given as its ``_position_masks`` and length) and ``other``.

    Allison-Dix / Hyyrö: one Python big-int add and a few bit operations per token of ``other``
    instead of a row of the dynamic-programming table. Zero bits of ``v`` count matched positions.
    """
    v = (1 << length) - 1
    for token in other:
        u = v & masks.get(token, 0)
        v = (v + u) | (v - u)
    return length - (v & ((1 << length) - 1)).bit_count()


class NearDuplicateIndex:
    """Texts seen so far, answering "is this a near-duplicate of any of them?" exactly as pairwise
    ROUGE-L F (>= threshold against each one) would, but without comparing with every text.

    An inverted index from (token, occurrence number) to text ids gives, per text sharing a token, the
    multiset overlap of the two token lists, which bounds the LCS from above. Texts whose bound
    cannot reach the threshold (2·overlap/(len_a+len_b) below it) are skipped; the few survivors get
    the exact LCS, computed bit-parallel. Empty token lists never match, as in rouge_score.
    """

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self._lengths: list[int] = []
        self._masks: list[dict[str, int]] = []
        self._postings: dict[tuple[str, int], list[int]] = {}

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        text_id = len(self._lengths)
        self._lengths.append(len(tokens))
        self._masks.append(_position_masks(tokens))
        for key in _occurrence_keys(tokens):
            self._postings.setdefault(key, []).append(text_id)

    def find_duplicate(self, text: str) -> int | None:
        """The id (order of ``add``) of some text with ROUGE-L F >= threshold, or None."""
        tokens = rouge_tokens(text)
        if not tokens:
            return None
        overlaps: Counter[int] = Counter()
        for key in _occurrence_keys(tokens):
            overlaps.update(self._postings.get(key, ()))
        n = len(tokens)
        # The margin keeps float rounding from pruning a pair whose exact F is at the threshold.
        bound_limit = self.threshold - 1e-9
        for text_id, overlap in overlaps.items():
            length = self._lengths[text_id]
            if 2 * overlap / (n + length) < bound_limit:
                continue
            lcs = bit_parallel_lcs(self._masks[text_id], length, tokens)
            if rouge_l_fmeasure(lcs, n, length) >= self.threshold:
                return text_id
        return None


def _occurrence_keys(tokens: Sequence[str]) -> list[tuple[str, int]]:
    """(token, 1), (token, 2), ... for each occurrence: shared keys of two lists = multiset overlap."""
    seen: Counter[str] = Counter()
    keys = []
    for token in tokens:
        seen[token] += 1
        keys.append((token, seen[token]))
    return keys


# --- the stage -------------------------------------------------------------------------------------


def round_rng(seed: int, round_index: int) -> random.Random:
    """The examples of round r depend on (seed, r) only, so a resumed run draws what an uninterrupted one did."""
    return random.Random(f"pg:{seed}:{round_index}")


def round_sampling_seed(seed: int, round_index: int) -> int:
    digest = hashlib.sha256(f"pg-sampling:{seed}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


# The options that decide what a round samples and keeps: in the resume fingerprint and the dataset card.
ROUND_SETTINGS = (
    "batch_size",
    "num_examples",
    "temperature",
    "top_p",
    "max_new_tokens",
    "min_chars",
    "max_chars",
    "rouge_l_threshold",
    "seed",
)


def _resume_settings(config: PGArguments, prompt_file: PromptFile, model: str) -> dict:
    """What decides the rounds' content. --num_generation and --max_rounds only decide when to stop.

    --batch_size is here because it is the number of requests per round (what a round samples), not
    a memory knob; ``model`` is the model's content fingerprint (``digests.digest_model``), not its path.
    """
    keys = ("backend", "dtype", *ROUND_SETTINGS)
    settings = {k: v for k, v in asdict(config).items() if k in keys}
    return {**settings, "model": model, "instruction": prompt_file.instruction, "seeds": prompt_file.seeds}


class _Progress:
    """Accepted prompts, rejection counts and the dedup index, rebuilt from logged rounds on resume."""

    def __init__(self, prompt_file: PromptFile, threshold: float):
        self.accepted: list[str] = []
        self.rejected: Counter[str] = Counter()
        self.requests = 0
        self.rounds = 0
        self.seconds = 0.0
        self.index = NearDuplicateIndex(threshold)
        for seed in prompt_file.seeds:
            self.index.add(seed)

    def admit(self, prompt: str) -> None:
        self.accepted.append(prompt)
        self.index.add(prompt)

    def judge(self, prompt: str, min_chars: int, max_chars: int) -> str | None:
        """Reason to reject ``prompt`` (counted) or None (the prompt joins the pool and the index)."""
        reason = length_rejection(prompt, min_chars, max_chars)
        if reason is None and self.index.find_duplicate(prompt) is not None:
            reason = "near_duplicate"
        if reason is None:
            self.admit(prompt)
        else:
            self.rejected[reason] += 1
        return reason

    def replay(self, row: dict) -> None:
        """Take a logged round's verdicts as they were (a resumed run does not judge again)."""
        for candidate in row["candidates"]:
            if candidate["rejected"] is None:
                self.admit(candidate["prompt"])
            else:
                self.rejected[candidate["rejected"]] += 1
        self.end_round(row)

    def end_round(self, row: dict) -> None:
        self.requests += len(row["candidates"])
        self.rounds += 1
        self.seconds += row["seconds"]


def run_pg(config: PGArguments, engine: Engine | None = None) -> dict:
    """Generate ``config.num_generation`` prompts into ``output_dir``; returns the stats written.

    ``engine`` replaces the model named in the config (tests pass a scripted one).
    """
    prompt_file = read_prompt_file(config.prompt_file_path)
    paths = PG.outputs.paths(config.output_dir)
    model = engine_model(config, config.model_name_or_path) if engine is None else None
    settings = _resume_settings(config, prompt_file, digest_model(model.path if model else config.model_name_or_path))
    rounds_log = ResumableJsonl(paths["rounds"], key_field="round", settings=settings)
    # prompts.txt also depends on how many prompts were asked for.
    final_settings = {**settings, "num_generation": config.num_generation}
    if config.overwrite:
        rounds_log.reset()
        for path in paths.values():
            remove_output(path)
    elif _made_with_another_count(paths["prompts"], final_settings):
        # --num_generation only decides when to stop: a finished run asked for more (or fewer) prompts
        # goes on from its logged rounds, as a resumed one does, instead of drawing them again.
        rounds_log.reopen_finished()
    elif output_is_current(paths["prompts"], final_settings):
        if rounds_log.partial_path.exists():
            _finish_interrupted_log(rounds_log)
        count = len(read_lines(paths["prompts"], "prompts"))
        print(f"almost pg: {paths['prompts']} is complete ({count} prompts); nothing to do (--overwrite starts again)")
        return {"accepted": count, "skipped": True}

    progress = _Progress(prompt_file, config.rouge_l_threshold)
    with rounds_log:
        for round_index in sorted(rounds_log.rows):
            if round_index != progress.rounds:
                raise AlmostError(f"{rounds_log.partial_path} lacks round {progress.rounds}; pass --overwrite to start again")
            progress.replay(rounds_log.rows[round_index])
        if len(progress.accepted) < config.num_generation:
            if engine is None:
                engine = load_engine(config, model)
            _generate_rounds(config, prompt_file, engine, progress, rounds_log)

    stats = {
        "accepted": min(len(progress.accepted), config.num_generation),
        # The last round may accept more than needed; those are logged but not written.
        "accepted_unused": max(0, len(progress.accepted) - config.num_generation),
        "rejected": dict(sorted(progress.rejected.items())),
        "requests": progress.requests,
        "rounds": progress.rounds,
        "generation_seconds": round(progress.seconds, 2),
        "seeds": len(prompt_file.seeds),
        "model": config.model_name_or_path if model is None else model.name,
        "backend": getattr(engine, "name", config.backend),
    }
    write_summary(PG.outputs, config.output_dir, stats)
    # prompts.txt last: its presence (with its settings record) is what marks the stage finished.
    record_settings(paths["prompts"], final_settings)
    write_text_atomic(paths["prompts"], "".join(p + "\n" for p in progress.accepted[: config.num_generation]))
    rounds_log.finalize()
    settings = {k: getattr(config, k) for k in ("num_generation", *ROUND_SETTINGS)}
    write_dataset_card(
        config.output_dir,
        PG,
        {"prompts": paths["prompts"].name},
        {
            "model": stats["model"],
            "backend": stats["backend"],
            "seed_prompts": Path(config.prompt_file_path).name,
            "settings": settings,
            "accepted": stats["accepted"],
            "rejected_by_filter": stats["rejected"],
            "requests": stats["requests"],
            "rounds": stats["rounds"],
            # A log beside the data (not a config: `datasets` reads a folder with one reader, here text).
            "rounds_log": f"{paths['rounds'].name}: every candidate of every round and the filter's verdict",
        },
    )
    rejected = ", ".join(f"{k} {v}" for k, v in stats["rejected"].items()) or "none"
    print(
        f"almost pg: wrote {stats['accepted']} prompts to {paths['prompts']} "
        f"({progress.requests} requests in {progress.rounds} rounds; rejected: {rejected})"
    )
    return stats


def _made_with_another_count(prompts: Path, final_settings: dict) -> bool:
    """``prompts`` exists and was made with these settings but another --num_generation."""
    if not prompts.exists():
        return False
    recorded = recorded_settings(prompts)
    count = recorded.get("settings", {}).get("num_generation")
    if count is None or count == final_settings["num_generation"]:
        return False
    return recorded.get("fingerprint") == fingerprint({**final_settings, "num_generation": count})


def _finish_interrupted_log(rounds_log: ResumableJsonl) -> None:
    """A run killed between writing prompts.txt and moving its round log: move the log now."""
    try:
        rounds_log.open()
    except AlmostError:
        return  # logged under other settings than this command's: leave it for the user to inspect
    rounds_log.finalize()


def _generate_rounds(config: PGArguments, prompt_file: PromptFile, engine: Engine, progress: _Progress, rounds_log: ResumableJsonl) -> None:
    target = config.num_generation
    bar = tqdm(total=target, initial=min(target, len(progress.accepted)), desc="pg", unit="prompt")
    sampling_args = dict(temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens, stop=QUERY_STOP)
    try:
        while len(progress.accepted) < target:
            round_index = progress.rounds
            if round_index >= config.round_limit:
                raise AlmostError(
                    f"stopped after {round_index} rounds with {len(progress.accepted)} of {target} prompts accepted "
                    f"(rejected: {dict(progress.rejected)}): the model does not produce enough new prompts; "
                    "rerun with a larger --max_rounds to continue, or lower --num_generation"
                )
            rng = round_rng(config.seed, round_index)
            pool = [*prompt_file.seeds, *progress.accepted]
            k = min(config.num_examples, len(pool))
            requests = [build_request(prompt_file.instruction, rng.sample(pool, k)) for _ in range(config.batch_size)]
            sampling = Sampling(**sampling_args, seed=round_sampling_seed(config.seed, round_index))
            started = time.perf_counter()
            generations = engine.generate(requests, sampling, desc=f"pg round {round_index}")
            seconds = time.perf_counter() - started
            candidates = []
            for samples in generations:
                prompt = first_query(samples[0])
                reason = progress.judge(prompt, config.min_chars, config.max_chars)
                candidates.append({"prompt": prompt, "rejected": reason, "raw": samples[0]})
            row = {"round": round_index, "candidates": candidates, "seconds": round(seconds, 3)}
            rounds_log.append([row])
            progress.end_round(row)
            bar.update(min(target, len(progress.accepted)) - bar.n)
            bar.set_postfix(accepted=len(progress.accepted), rejected=sum(progress.rejected.values()), round=round_index)
    finally:
        bar.close()
