"""Preference data in the formats users have, turned into one shape: ``Pair``.

A pair is a conversation (messages before the answer being judged) plus a chosen and a rejected
final answer. Readers for:

- prompt/chosen/rejected rows (``almost cs``'s ``comparison.jsonl``, TRL's explicit-prompt format;
  the prompt may be text or messages, the answers text or ``[{role: assistant, ...}]``);
- rows whose ``chosen`` and ``rejected`` are whole conversations with no ``prompt``: Anthropic-HH
  transcripts (``\\n\\nHuman: ...\\n\\nAssistant: ...``) or message lists; the shared conversation is
  split from the two final answers;
- BIG-bench ``hhh_alignment`` task JSON (``examples`` with ``input`` and ``target_scores``), one file
  or a directory of subtask folders each holding a ``task.json``.

An optional ``subset`` (or ``type``) column names the subset a row belongs to.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from ..chat import as_messages
from ..errors import AlmostError
from ..readers import read_json, read_rows
from ..shipped import SAMPLE_DATA, SHIPPED_PAIRS

SUBSET_COLUMNS = ("subset", "type")
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class Pair:
    context: tuple[dict, ...]  # messages before the answers; the last one is the user's turn
    chosen: str
    rejected: str
    subset: str | None = None

    @property
    def context_key(self) -> str:
        """The conversation as a string: pairs with the same key share a prompt."""
        return json.dumps(self.context, sort_keys=True, ensure_ascii=False)

    def conversation(self, answer: str) -> list[dict]:
        return [*self.context, {"role": "assistant", "content": answer}]


@dataclass
class PairSet:
    """Pairs read from a file, and how many rows were set aside (with why)."""

    pairs: list[Pair]
    rows: int  # rows (or BIG-bench comparisons) read
    identical: int = 0  # chosen == rejected: no preference to learn or measure
    unsplittable: int = 0  # whole-conversation rows whose two sides differ before the final answer


def parse_transcript(text: str) -> list[dict]:
    """``\\n\\nHuman: a\\n\\nAssistant: b ...`` → messages. Text before the first turn is dropped."""
    parts = _TURN.split(text)
    # split() with one group gives [before, role, content, role, content, ...]
    return [{"role": _ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]


def is_transcript(text: object) -> bool:
    return isinstance(text, str) and _TURN.search(text) is not None and "Human:" in text


def split_shared_prefix(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], str, str] | None:
    """Two whole conversations → (shared context, chosen answer, rejected answer), or None.

    Both must end with an assistant turn and agree on every message before it.
    """
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None
    context = chosen[:-1]
    if [(m["role"], m["content"]) for m in rejected[:-1]] != [(m["role"], m["content"]) for m in context]:
        return None
    return list(context), chosen[-1]["content"], rejected[-1]["content"]


def _answer_text(value, column: str, where: str) -> str:
    """An answer given as text or as ``[{role: assistant, content}]`` (TRL's conversational format)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and "content" in value[0]:
        return str(value[0]["content"])
    raise AlmostError(f"{where}: column {column!r} must be text or one assistant message, got {type(value).__name__}")


def _as_conversation(value, column: str, where: str) -> list[dict]:
    if isinstance(value, str):
        return parse_transcript(value)
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": m["role"], "content": str(m["content"])} for m in value]
    raise AlmostError(f"{where}: column {column!r} must be a transcript or a list of messages")


def context_messages(prompt, where: str) -> list[dict]:
    """A prompt given as text, an HH transcript, or messages → the messages before the answer."""
    if isinstance(prompt, str) and prompt.lstrip().startswith("Human:"):
        messages = parse_transcript(prompt)
        # HH-style prompts end with an open "Assistant:" turn: the answers fill it.
        if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
            messages.pop()
        return messages
    if isinstance(prompt, str):
        return as_messages(prompt)
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        return [{"role": m["role"], "content": str(m["content"])} for m in prompt]
    raise AlmostError(f"{where}: column 'prompt' must be text or a list of messages")


def pairs_from_rows(rows: list[dict], source: str) -> PairSet:
    """Preference rows (explicit prompt, or whole conversations) → pairs."""
    if not rows:
        raise AlmostError(f"{source} has no rows")
    result = PairSet(pairs=[], rows=len(rows))
    for i, row in enumerate(rows, 1):
        where = f"{source} row {i}"
        missing = [c for c in ("chosen", "rejected") if c not in row]
        if missing:
            raise AlmostError(f"{where} lacks column(s) {', '.join(missing)} (has: {', '.join(row) or 'nothing'})")
        subset = next((str(row[c]) for c in SUBSET_COLUMNS if row.get(c) not in (None, "")), None)
        if "prompt" in row:
            context = context_messages(row["prompt"], where)
            chosen, rejected = _answer_text(row["chosen"], "chosen", where), _answer_text(row["rejected"], "rejected", where)
        else:
            if isinstance(row["chosen"], str) and not is_transcript(row["chosen"]):
                raise AlmostError(f"{where} has no 'prompt' column and 'chosen' is not a Human/Assistant transcript or message list")
            split = split_shared_prefix(
                _as_conversation(row["chosen"], "chosen", where), _as_conversation(row["rejected"], "rejected", where)
            )
            if split is None:
                result.unsplittable += 1
                continue
            context, chosen, rejected = split
        if chosen.strip() == rejected.strip():
            result.identical += 1
            continue
        result.pairs.append(Pair(tuple(context), chosen, rejected, subset))
    return result


def pairs_from_bigbench(task: dict, source: str, subset: str | None = None) -> PairSet:
    """A BIG-bench task (``examples``: ``input`` + ``target_scores``) → every better/worse pair."""
    examples = task.get("examples")
    if not isinstance(examples, list) or not examples:
        raise AlmostError(f"{source}: a BIG-bench task needs a non-empty 'examples' list")
    result = PairSet(pairs=[], rows=0)
    for i, example in enumerate(examples, 1):
        scores = example.get("target_scores") if isinstance(example, dict) else None
        if not isinstance(scores, dict) or "input" not in example:
            raise AlmostError(f"{source} example {i} lacks 'input' or 'target_scores'")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()):
            raise AlmostError(
                f"{source} example {i}: every target_scores value must be a number, got "
                f"{sorted({type(v).__name__ for v in scores.values()})}"
            )
        context = context_messages(str(example["input"]), f"{source} example {i}")
        for (a, score_a), (b, score_b) in combinations(scores.items(), 2):
            if score_a == score_b:
                continue
            result.rows += 1
            chosen, rejected = (a, b) if score_a > score_b else (b, a)
            if chosen.strip() == rejected.strip():
                result.identical += 1
                continue
            result.pairs.append(Pair(tuple(context), chosen, rejected, subset))
    return result


def _read_jsonl_gz(path: Path) -> list[dict]:
    """Anthropic ships HH as ``*.jsonl.gz``: read it without unpacking."""
    rows = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise AlmostError(f"malformed JSON in {path} line {lineno}: {e.msg}") from None
    except (OSError, EOFError) as e:
        raise AlmostError(f"{path} is not a readable gzip file: {e}") from None
    if not all(isinstance(r, dict) for r in rows):
        raise AlmostError(f"{path}: every line must be a JSON object")
    return rows


def _merge(sets: list[PairSet]) -> PairSet:
    return PairSet(
        pairs=[p for s in sets for p in s.pairs],
        rows=sum(s.rows for s in sets),
        identical=sum(s.identical for s in sets),
        unsplittable=sum(s.unsplittable for s in sets),
    )


def load_pairs(path: str | Path) -> PairSet:
    """Read preference pairs from a JSONL/JSON file, a saved HF dataset, or BIG-bench task JSON.

    Raises AlmostError when nothing usable is left (every pair identical or unsplittable).
    """
    path = Path(path)
    if not path.exists():
        raise AlmostError(f"data file not found: {path}")
    if path.is_dir() and any(path.glob("*/task.json")):
        # A BIG-bench task folder: one subtask (subset) per subfolder.
        sets = [pairs_from_bigbench(read_json(task), str(task), subset=task.parent.name) for task in sorted(path.glob("*/task.json"))]
        result = _merge(sets)
    elif path.is_file() and path.suffix == ".json" and isinstance(data := read_json(path), dict) and "examples" in data:
        name = str(data.get("name") or path.parent.name or path.stem)
        result = pairs_from_bigbench(data, str(path), subset=name.split(":")[-1])
    elif path.is_file() and path.name.endswith(".gz"):
        result = pairs_from_rows(_read_jsonl_gz(path), str(path))
    else:
        result = pairs_from_rows(read_rows(path), str(path))
    if not result.pairs:
        reasons = []
        if result.identical:
            reasons.append(f"{result.identical} have chosen == rejected")
        if result.unsplittable:
            reasons.append(f"{result.unsplittable} differ before the final answer")
        raise AlmostError(f"{path}: no usable preference pairs in {result.rows} rows ({'; '.join(reasons) or 'empty'})")
    return result


def refuse_evaluation_data(data_path: str) -> None:
    """The human pairs shipped for evaluation measure the method; a model trained on them (``rm train``,
    ``dpo``) proves nothing."""
    path = Path(data_path)
    if data_path in SHIPPED_PAIRS or (path.exists() and path.resolve().is_relative_to(SAMPLE_DATA.resolve())):
        raise AlmostError(f"--data_path {data_path} is almost's evaluation data (assets/eval); never train on it")
