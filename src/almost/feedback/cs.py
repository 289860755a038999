"""Stage CS: synthetic comparisons from the rubric (configurations ranked best first).

For each prompt, the valid answers (not BAD, not empty) are sorted by rank and the pairs (i, j),
i before j, are walked in order, exactly as the seed release does:

- skip when i's configuration or i's rank has already been chosen once, or when i and j share a rank;
- heuristic filter: skip when i's answer is shorter than j's **and** shorter than mean - std/2 of the
  character lengths of all valid answers to that prompt (population std);
- otherwise emit "i's answer is better than j's" and mark i's configuration and rank as used.

Three options control length further (by default the seed's pairs are unchanged):

- ``--length_filter false``: no heuristic filter. With two answers to a prompt (a two-configuration
  rubric) the filter keeps only pairs whose chosen answer is the longer, as mean - std/2 of two
  lengths lies above the shorter; ``--length_balance`` would then leave next to nothing (measured: 1
  pair of 141 on the size run's 1.5B-over-135M rubric).

- ``--max_length_ratio R``: inside the same walk, also skip a pair whose longer answer is more than
  R times as long as its shorter one (characters), so the next candidate may pair instead;
- ``--length_balance``: after the walk, drop a seeded random surplus of the larger group so that
  the chosen answer is the longer one in half of the pairs of unequal length (pairs of equal
  length are all kept). A reward model trained on such pairs cannot win by preferring length.

``cs_stats.json`` counts what each filter dropped.

Inputs are the ``{config}.jsonl`` files of ``almost rg``, or the seed release's layout:
``prompts.txt`` plus ``{config}.json`` lists of answers with ``"BAD"`` for bad ones. When shards
of a configuration lie beside its ``{config}.jsonl``, that file must be the merge of those shards as
they are now (``almost merge`` records them); otherwise cs stops and asks for a new merge.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cards import write_dataset_card
from ..contracts import PARTIAL_SETTINGS_SUFFIX, PARTIAL_SUFFIX, SETTINGS_SUFFIX, write_summary
from ..errors import AlmostError
from ..readers import read_json, read_jsonl, read_prompts
from ..resumable import output_is_current
from ..stages import CS, PG, RG
from ..writes import write_jsonl_atomic
from .merge import find_shard_sets, merge_settings
from .rg import output_path

SEED_BAD = "BAD"


@dataclass
class CSArguments:
    """Options of ``almost cs`` (seed spellings; dash spellings work too)."""

    output_dir: str | None = field(default=None, metadata={"help": "Directory for comparison.jsonl and cs_stats.json (required)."})
    rubric: list[str] = field(
        default_factory=list,
        metadata={"help": "Configuration names best first; 'a,b' gives several configurations the same rank."},
    )
    input_dir: str | None = field(
        default=None, metadata={"help": "Where the rg outputs are (default: --output_dir, as in the seed release)."}
    )
    max_length_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Skip pairs whose longer answer is more than this many times as long as the shorter (characters); off by default."
        },
    )
    length_filter: bool = field(
        default=True,
        metadata={
            "help": (
                "The seed's filter (skip a pair whose chosen answer is shorter than the rejected one and than mean - std/2 of "
                "the prompt's answer lengths). With two answers to a prompt it keeps only pairs whose chosen answer is the "
                "longer; false leaves length to --length_balance."
            )
        },
    )
    length_balance: bool = field(
        default=False,
        metadata={
            "help": "Drop a seeded random surplus so the chosen answer is the longer one in half of the pairs (equal lengths all kept)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of --length_balance's draw."})

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("--output_dir is required")
        if self.max_length_ratio is not None and self.max_length_ratio < 1:
            raise ValueError(f"--max_length_ratio must be at least 1 (longer / shorter), got {self.max_length_ratio}")


@dataclass(frozen=True)
class Answer:
    config: str
    rank: int
    text: str


def parse_rubric(entries: Sequence[str]) -> dict[str, int]:
    """``["A", "B,C", "D"]`` → ``{A: 0, B: 1, C: 1, D: 2}``; a name given twice is an error."""
    ranks: dict[str, int] = {}
    for rank, entry in enumerate(e for e in entries if e.strip()):
        for name in (x.strip() for x in entry.split(",")):
            if not name:
                continue
            if "/" in name or "\\" in name or name in (".", ".."):
                raise AlmostError(f"--rubric takes configuration names (the {{name}}.jsonl files in --input_dir), not paths: got {name!r}")
            if name in ranks:
                raise AlmostError(f"--rubric names {name!r} twice")
            ranks[name] = rank
    if len({r for r in ranks.values()}) < 2:
        raise AlmostError("--rubric needs configurations of at least two ranks, best first (e.g. --rubric A B)")
    return ranks


def length_threshold(lengths: Sequence[int]) -> float:
    """mean - std/2 of the answer lengths (population std, numpy's default)."""
    mean = sum(lengths) / len(lengths)
    std = math.sqrt(sum((x - mean) ** 2 for x in lengths) / len(lengths))
    return mean - std / 2


def length_ratio(a: str, b: str) -> float:
    """Longer over shorter length in characters (inf when one is empty)."""
    short, long = sorted((len(a), len(b)))
    return long / short if short else math.inf


def prompt_pairs(
    answers: Sequence[Answer], max_length_ratio: float | None = None, drops: Counter | None = None, length_filter: bool = True
) -> tuple[list[tuple[Answer, Answer]], int]:
    """The (chosen, rejected) pairs for one prompt's valid answers, and how many the seed's filter
    dropped (none without ``length_filter``). With ``max_length_ratio``, pairs too far apart in length
    are skipped too (counted in ``drops["max_length_ratio"]`` when a Counter is given)."""
    answers = sorted(answers, key=lambda a: a.rank)  # stable: rubric order within a rank
    if len(answers) < 2:
        return [], 0
    threshold = length_threshold([len(a.text) for a in answers])
    used_configs: set[str] = set()
    used_ranks: set[int] = set()
    pairs, dropped = [], 0
    for i, better in enumerate(answers):
        for worse in answers[i + 1 :]:
            if better.config in used_configs or better.rank in used_ranks or better.rank == worse.rank:
                continue
            if length_filter and len(better.text) < len(worse.text) and len(better.text) < threshold:
                dropped += 1
                continue
            if max_length_ratio is not None and length_ratio(better.text, worse.text) > max_length_ratio:
                if drops is not None:
                    drops["max_length_ratio"] += 1
                continue
            pairs.append((better, worse))
            used_configs.add(better.config)
            used_ranks.add(better.rank)
    return pairs, dropped


def balance_by_length(rows: list[dict], seed: int) -> list[dict]:
    """Rows with a seeded random surplus dropped, so the chosen answer is longer in exactly as many
    rows as it is shorter; rows of equal length are all kept, and the order is kept."""
    longer = [i for i, r in enumerate(rows) if len(r["chosen"]) > len(r["rejected"])]
    shorter = [i for i, r in enumerate(rows) if len(r["chosen"]) < len(r["rejected"])]
    surplus = longer if len(longer) > len(shorter) else shorter
    drop = set(random.Random(seed).sample(surplus, abs(len(longer) - len(shorter))))
    return [r for i, r in enumerate(rows) if i not in drop]


# --- inputs ----------------------------------------------------------------------------------------


# In the seed's single output folder, the JSON files of pg and cs sit beside the answers.
_OTHER_STAGES_FILES = {Path(name).stem for stage in (PG, CS) for name in stage.outputs.files.values()}


def load_answers(directory: Path, name: str) -> tuple[list[str], list[str | None]]:
    """(prompts, answers) of one configuration; an answer is None when it is BAD or empty."""
    jsonl = output_path(directory, name)
    if jsonl.exists():
        _check_not_older_than_shards(directory, name, jsonl)
        return _rg_answers(jsonl)
    seed_json = directory / f"{name}.json"
    if seed_json.exists():
        return _seed_answers(seed_json, directory / PG.outputs.files["prompts"])
    shards = [p for p in directory.iterdir() if (RG.outputs.match("shard", p.name) or {}).get("configuration") == name]
    hint = f"; its shards are there: run almost merge --output_dir {directory}" if shards else ""
    answers = {
        p.name.removesuffix(".jsonl").removesuffix(".json")
        for p in directory.glob("*.json*")
        if not p.name.endswith((SETTINGS_SUFFIX, PARTIAL_SUFFIX, PARTIAL_SETTINGS_SUFFIX)) and RG.outputs.match("shard", p.name) is None
    }
    listed = f" (found: {', '.join(sorted(answers - _OTHER_STAGES_FILES)) or 'none'})"
    raise AlmostError(f"--rubric names {name!r}, which has no output in {directory}: expected {name}.jsonl or {name}.json{hint or listed}")


def _check_not_older_than_shards(directory: Path, name: str, jsonl: Path) -> None:
    """With shards of ``name`` beside it, ``{name}.jsonl`` must be their merge as they are now: a
    shard rerun after the merge would otherwise be ignored in favour of the old merged rows."""
    shard_set = find_shard_sets(directory).get(name)
    if shard_set is None:
        return
    try:
        output_is_current(jsonl, merge_settings(directory, shard_set["files"]))
    except AlmostError:
        raise AlmostError(
            f"{jsonl} is not the merge of the shards now beside it ({name}.shard-*): run almost merge --output_dir {directory} --overwrite"
        ) from None


def _rg_answers(path: Path) -> tuple[list[str], list[str | None]]:
    rows = read_jsonl(path, "rg output")
    if not rows:
        raise AlmostError(f"{path} has no rows")
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str) or row.get("index") != n - 1:
            raise AlmostError(f"{path} row {n}: expected index {n - 1} with string prompt and response (an almost rg output)")
    answers = [None if row.get("bad") or not row["response"].strip() else row["response"] for row in rows]
    return [row["prompt"] for row in rows], answers


def _seed_answers(path: Path, prompts_path: Path) -> tuple[list[str], list[str | None]]:
    data = read_json(path, "rg output")
    if not isinstance(data, list) or not all(isinstance(a, str) or a is None for a in data):
        raise AlmostError(f"{path}: expected a JSON list of answer strings (seed layout)")
    if not prompts_path.exists():
        raise AlmostError(f"{path} is in the seed layout, which needs {prompts_path} beside it")
    prompts = read_prompts(prompts_path)
    if len(prompts) != len(data):
        raise AlmostError(f"{path} has {len(data)} answers but {prompts_path} has {len(prompts)} prompts")
    answers = [None if a is None or a.strip() in ("", SEED_BAD) else a for a in data]
    return prompts, answers


def load_rubric_outputs(directory: Path, ranks: dict[str, int]) -> tuple[list[str], dict[str, list[str | None]]]:
    """Every ranked configuration's answers, checked to cover the same prompts in the same order."""
    prompts: list[str] | None = None
    first = None
    answers: dict[str, list[str | None]] = {}
    for name in ranks:
        config_prompts, answers[name] = load_answers(directory, name)
        if prompts is None:
            prompts, first = config_prompts, name
            continue
        if len(config_prompts) != len(prompts):
            raise AlmostError(f"{name} has {len(config_prompts)} answers but {first} has {len(prompts)}: outputs of different prompt lists")
        differ = next((i for i, (a, b) in enumerate(zip(config_prompts, prompts)) if a != b), None)
        if differ is not None:
            raise AlmostError(f"{name} and {first} differ at prompt {differ}: outputs of different prompt lists")
    return prompts, answers


# --- the stage -------------------------------------------------------------------------------------


def run_cs(config: CSArguments) -> dict:
    ranks = parse_rubric(config.rubric)
    directory = Path(config.input_dir or config.output_dir)
    prompts, answers = load_rubric_outputs(directory, ranks)

    rows, per_pair, drops = [], Counter(), Counter()
    dropped = few_valid = 0
    for index, prompt in enumerate(prompts):
        valid = [Answer(name, rank, answers[name][index]) for name, rank in ranks.items() if answers[name][index] is not None]
        if len(valid) < 2:
            few_valid += 1
            continue
        pairs, prompt_dropped = prompt_pairs(valid, config.max_length_ratio, drops, config.length_filter)
        dropped += prompt_dropped
        for better, worse in pairs:
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": better.text,
                    "rejected": worse.text,
                    "chosen_config": better.config,
                    "rejected_config": worse.config,
                }
            )
    if config.length_balance:
        before = len(rows)
        rows = balance_by_length(rows, config.seed)
        drops["length_balance"] = before - len(rows)
    for row in rows:
        per_pair[f"{row['chosen_config']} > {row['rejected_config']}"] += 1
    if not rows:
        raise AlmostError(
            f"no comparisons: {few_valid} of {len(prompts)} prompts have fewer than two valid answers and the filter "
            f"dropped {dropped} pairs" + "".join(f", {k} dropped {v}" for k, v in drops.items() if v)
        )
    # The length options' counts are recorded only when one is on: the seed's cs_stats.json stays as it was.
    length_split = {}
    if config.max_length_ratio is not None or config.length_balance:
        length_split = {
            "chosen_longer": sum(len(r["chosen"]) > len(r["rejected"]) for r in rows),
            "chosen_shorter": sum(len(r["chosen"]) < len(r["rejected"]) for r in rows),
        }
    stats = {
        "prompts": len(prompts),
        "pairs": len(rows),
        "dropped_by_filter": dropped,
        **({"dropped_by_max_length_ratio": drops["max_length_ratio"]} if config.max_length_ratio is not None else {}),
        **({"dropped_by_length_balance": drops["length_balance"]} if config.length_balance else {}),
        "prompts_with_fewer_than_two_valid": few_valid,
        "valid_answers": {name: sum(a is not None for a in answers[name]) for name in ranks},
        "pairs_per_configuration_pair": dict(per_pair.most_common()),
        "rubric": [sorted((n for n, r in ranks.items() if r == rank), key=list(ranks).index) for rank in sorted(set(ranks.values()))],
        **length_split,
    }
    out = Path(config.output_dir)
    write_summary(CS.outputs, out, stats)
    write_jsonl_atomic(out / CS.outputs.product_file, rows)
    write_dataset_card(out, CS, {"comparisons": CS.outputs.product_file}, {"input": directory.name, **stats})
    print(
        f"almost cs: {stats['pairs']} pairs from {stats['prompts']} prompts → {out / CS.outputs.product_file} "
        f"(dropped by the length filter: {dropped}; prompts with < 2 valid answers: {few_valid})"
    )
    extra = [
        f"{name}: {stats[key]}"
        for name, key in (("--max_length_ratio", "dropped_by_max_length_ratio"), ("--length_balance", "dropped_by_length_balance"))
        if key in stats
    ]
    if extra:
        print(
            f"  dropped by {'; '.join(extra)}; chosen answer longer in {stats['chosen_longer']} pairs, shorter in {stats['chosen_shorter']}"
        )
    for pair, count in stats["pairs_per_configuration_pair"].items():
        print(f"  {count:6d}  {pair}")
    return stats
