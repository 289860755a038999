"""Reading the files a stage is given: text (compressed too), YAML, JSON, JSONL and data rows, each
with one clear error line naming the file for anything missing, damaged or malformed."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from .chat import as_messages as user_turn
from .errors import AlmostError


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise AlmostError(f"{what} not found: {path}")
    if not path.is_file():
        raise AlmostError(f"{what} is not a file: {path}")
    return path


# Compressed inputs are read as they are, by suffix; every text reader goes through ``read_text``.
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def read_text(path: str | os.PathLike, what: str = "text file") -> str:
    """The whole of a UTF-8 text file (``.gz``/``.bz2``/``.xz`` read compressed), with one clear
    error for a missing file, a damaged archive or bytes that are not UTF-8 (naming the line)."""
    path = require_file(path, what)
    opener = _OPENERS.get(path.suffix, open)
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise AlmostError(f"{what} {path} cannot be read ({path.suffix} archive damaged?): {e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise AlmostError(f"{what} {path} is not UTF-8 text (line {line}, byte {e.start})") from None


def yaml_problem(e: Exception) -> str:
    """PyYAML's several-line message as "line L column C: problem"."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"line {mark.line + 1} column {mark.column + 1}: {problem}" if mark is not None else problem


def read_yaml_mapping(path: str | os.PathLike, what: str, holds: str) -> dict:
    """A YAML file that must be a mapping (a config): one line naming the file for anything else."""
    try:
        data = yaml.safe_load(read_text(path, what))
    except yaml.YAMLError as e:
        raise AlmostError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise AlmostError(f"{path} must be a YAML mapping of {holds}")
    return data


def format_suffix(path: Path) -> str:
    """The suffix that says the format: ``rows.jsonl.gz`` → ``.jsonl``."""
    return Path(path.stem).suffix if path.suffix in _OPENERS else path.suffix


def read_lines(path: str | os.PathLike, what: str = "text file", allow_empty: bool = False) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped; an error when there are none unless ``allow_empty``."""
    path = Path(path)
    # split("\n"), not splitlines(): a line as written (PG's prompts) may hold U+2028 and other separators.
    lines = [line.strip() for line in read_text(path, what).split("\n")]
    lines = [line for line in lines if line]
    if not lines and not allow_empty:
        raise AlmostError(f"{what} {path} is empty")
    return lines


def read_prompts(path: str | os.PathLike, as_messages: bool = False, limit: int | None = None) -> list[str] | list[list[dict]]:
    """The prompts a stage answers, in file order (a prompt's index is its position in the list).

    A text file (``prompts.txt`` as PG writes it) holds one prompt per non-empty line; a ``.jsonl`` or
    ``.json`` file (also compressed) holds rows with a ``prompt`` column. With ``as_messages`` every
    prompt is a message list (the conversation before the answer) and a row may hold messages instead
    (in ``prompt`` or ``messages``): a whole conversation loses its trailing assistant turns, and a row
    with nothing else is skipped. Without it a row's prompt must be text. ``limit`` keeps the first ones.
    """
    path = require_file(path, "prompts file")
    if format_suffix(path) not in (".jsonl", ".json"):
        lines = read_lines(path, "prompts file")
        prompts = [user_turn(line) for line in lines] if as_messages else lines
    else:
        prompts = []
        for i, row in enumerate(read_rows(path, "prompts file"), 1):
            value = row.get("prompt", row.get("messages")) if as_messages else row.get("prompt")
            if isinstance(value, str) and value.strip():
                prompts.append(user_turn(value.strip()) if as_messages else value.strip())
            elif not as_messages:
                raise AlmostError(f"{path} row {i}: needs a non-empty string `prompt`")
            elif isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
                messages = [{"role": m["role"], "content": str(m["content"])} for m in value]
                while messages and messages[-1]["role"] == "assistant":  # a whole conversation: answer its last user turn
                    messages.pop()
                if messages:
                    prompts.append(messages)
            else:
                raise AlmostError(f"{path} row {i}: needs a 'prompt' (text or messages) or 'messages' column")
    prompts = prompts[:limit]
    if not prompts:
        raise AlmostError(f"prompts file {path} has no prompts")
    return prompts


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise AlmostError(f"malformed JSON in {path}: line {e.lineno}: {e.msg}") from None


def iter_jsonl(path: str | os.PathLike, what: str = "JSONL file") -> Iterator[dict]:
    path = Path(path)
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line separators raw.
    for lineno, line in enumerate(read_text(path, what).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise AlmostError(f"malformed JSON in {path} line {lineno}: {e.msg}") from None
        if not isinstance(row, dict):
            raise AlmostError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
        yield row


def read_jsonl(path: str | os.PathLike, what: str = "JSONL file") -> list[dict]:
    return list(iter_jsonl(path, what))


def read_rows(path: str | os.PathLike, what: str = "data file") -> list[dict]:
    """Rows of a .jsonl file, a .json list of objects, or a saved HF dataset directory."""
    path = Path(path)
    if path.is_dir():
        try:
            import datasets

            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # any failure here is a bad input path
            raise AlmostError(f"{what} {path} is not a saved dataset: {e}") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        return [dict(r) for r in ds]
    if format_suffix(path) == ".json":
        data = read_json(path, what)
        if isinstance(data, dict):
            # Some exports wrap the rows ({"data": [...]}, {"examples": [...]}).
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) == 1:
                data = lists[0]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise AlmostError(f"{path}: expected a JSON list of objects")
        return data
    return read_jsonl(path, what)


def require_columns(rows: list[dict], columns: Iterable[str], path: str | os.PathLike) -> None:
    if not rows:
        raise AlmostError(f"{path} has no rows")
    for i, row in enumerate(rows, 1):
        missing = [c for c in columns if c not in row]
        if missing:
            raise AlmostError(f"{path} row {i} lacks column(s) {', '.join(missing)} (has: {', '.join(row)})")
