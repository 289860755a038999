"""Files on disk: JSON/JSONL reading with clear errors, atomic writes, resumable appends.

Every stage writes its outputs through this module so that a final file appears complete or not at
all, and a long job killed at any moment continues where it stopped, without lost or duplicated rows.
"""

from __future__ import annotations

import atexit
import bz2
import gzip
import hashlib
import json
import lzma
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


class AlmostError(Exception):
    """A problem with the user's input or settings: the CLI prints it as one line and exits 2."""


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
    import yaml

    try:
        data = yaml.safe_load(read_text(path, what))
    except yaml.YAMLError as e:
        raise AlmostError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise AlmostError(f"{path} must be a YAML mapping of {holds}")
    return data


def _strip_suffix(path: Path) -> str:
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
    from .chat import as_messages as user_turn

    path = require_file(path, "prompts file")
    if _strip_suffix(path) not in (".jsonl", ".json"):
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
    if _strip_suffix(path) == ".json":
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


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"))


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    def write(f):
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    return _atomic_write(path, write)


def fingerprint(settings: dict) -> str:
    """A short stable hash of the settings that determine a stage's output."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --- fingerprints of input contents -------------------------------------------------------------
#
# A finished output is reused only when the settings and the *contents* of the inputs that made it
# are the same as now; paths say nothing (a retrained reward model keeps its folder). Files up to
# CONTENT_HASH_LIMIT are hashed whole. Larger ones (model weights) are hashed by size, their first
# and last MiB (the safetensors/GGUF header, and in a safetensors file the last tensors, where a
# reward model's score head sits) and SAMPLED_BLOCKS blocks spread evenly in between: a few MiB read
# per file instead of gigabytes, and any retraining changes the sampled bytes.

CONTENT_HASH_LIMIT = 64 * 2**20
_EDGE_BYTES = 2**20
SAMPLED_BLOCKS = 64
_BLOCK_BYTES = 64 * 2**10


def digest_file(path: str | os.PathLike) -> str:
    """A content hash of one file (whole up to ``CONTENT_HASH_LIMIT``, sampled above it)."""
    # No memo keyed by mtime: a file rewritten within one clock tick keeps its mtime, and reading a
    # few MiB is cheap enough to do every time.
    path = Path(path)
    stat = path.stat()
    h = hashlib.sha256(f"{stat.st_size}\n".encode())
    with open(path, "rb") as f:
        if stat.st_size <= CONTENT_HASH_LIMIT:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        else:
            h.update(f.read(_EDGE_BYTES))
            span = max(0, stat.st_size - 2 * _EDGE_BYTES - _BLOCK_BYTES)
            for k in range(SAMPLED_BLOCKS):
                f.seek(_EDGE_BYTES + span * k // max(1, SAMPLED_BLOCKS - 1))
                h.update(f.read(_BLOCK_BYTES))
            f.seek(stat.st_size - _EDGE_BYTES)
            h.update(f.read(_EDGE_BYTES))
    return h.hexdigest()[:16]


# Files of a checkpoint folder that do not decide what the model computes: training logs, the model
# card (it records paths and dates), trainer state; and the stage's metrics (``contracts.METRICS_FILE``).
# Hidden files (locks, pipeline markers) and subfolders (intermediate checkpoints) are left out too.
_NOT_MODEL_FILES = frozenset(
    {"README.md", "training_args.bin", "trainer_state.json", "all_results.json", "train_results.json", "eval_results.json"}
)
_MODEL_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken", ".safetensors", ".bin", ".pt", ".pth", ".gguf")


def digest_model(name_or_path: str | os.PathLike) -> str:
    """What identifies a model's behaviour: for a checkpoint folder the contents of its config,
    tokenizer and weight files (weights sampled, see ``digest_file``); for a file its content; for
    anything else (a hub id not downloaded, an embedded model's name) the name itself."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return digest_file(path)
    if not path.is_dir():
        return str(name_or_path)
    from .contracts import METRICS_FILE  # here, not at the top: contracts imports this module

    not_model = _NOT_MODEL_FILES | {METRICS_FILE}
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in not_model and p.name.endswith(_MODEL_SUFFIXES)
    )
    return fingerprint({p.name: digest_file(p) for p in files})


# --- finished outputs carry the fingerprint of what made them -----------------------------------
#
# Beside every finished output ``X`` lies ``X.settings.json``: the fingerprint of the settings and
# input contents that made it, and a short form of those settings (to say which one changed). A rerun
# with the same fingerprint reuses ``X``; with another one it stops with one line naming
# --overwrite (exit 2), because silently recomputing could throw away hours of paid compute and
# silently reusing would hand stale data to the next stage. The sidecar is written just before
# ``X`` is (atomically) put in place, so ``X`` never exists with a sidecar from other settings.

SETTINGS_SUFFIX = ".settings.json"
_SHOWN_VALUE_CHARS = 120


def settings_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + SETTINGS_SUFFIX)


def settings_record(settings: dict) -> dict:
    """The fingerprint, and each setting as it is (or its hash, when long) for messages."""
    shown = {}
    for key, value in settings.items():
        text = json.dumps(value, sort_keys=True, default=str)
        shown[key] = value if len(text) <= _SHOWN_VALUE_CHARS else f"#{fingerprint({'v': value})}"
    return {"fingerprint": fingerprint(settings), "settings": json.loads(json.dumps(shown, default=str))}


def changed_settings(recorded: dict, settings: dict) -> str:
    """``temperature 1.0 → 0.5, model`` from a recorded ``settings_record`` and the settings now."""
    before, now = recorded.get("settings") or {}, settings_record(settings)["settings"]
    changes = []
    for key in sorted(set(before) | set(now)):
        if before.get(key) == now.get(key):
            continue
        a, b = before.get(key), now.get(key)
        short = all(isinstance(v, (int, float, str, bool, type(None))) and len(str(v)) <= 40 for v in (a, b))
        changes.append(f"{key} {a!r} → {b!r}" if short else key)
    return ", ".join(changes) or "settings"


def recorded_settings(output: str | os.PathLike) -> dict:
    """The settings record beside ``output`` (``settings_record``'s form), or {} when it has none."""
    sidecar = settings_path(output)
    recorded = read_json(sidecar, "settings record") if sidecar.exists() else {}
    return recorded if isinstance(recorded, dict) else {}


def output_is_current(output: str | os.PathLike, settings: dict) -> bool:
    """True when ``output`` exists and was made with ``settings``; False when it does not exist.

    Raises AlmostError when it exists but was made otherwise (or records nothing: an older almost).
    """
    output = Path(output)
    if not output.exists():
        return False
    recorded = recorded_settings(output)
    if recorded.get("fingerprint") == fingerprint(settings):
        return True
    why = changed_settings(recorded, settings) if recorded else "it records no settings"
    raise AlmostError(f"{output} was made with different settings or inputs ({why}); pass --overwrite to make it again")


def record_settings(output: str | os.PathLike, settings: dict) -> None:
    """Write ``output``'s sidecar; call it just before writing ``output`` itself."""
    write_json_atomic(settings_path(output), settings_record(settings))


def remove_output(output: str | os.PathLike) -> None:
    """--overwrite: the output first, then its sidecar (never a sidecar-less stale output)."""
    Path(output).unlink(missing_ok=True)
    settings_path(output).unlink(missing_ok=True)


class ResumableJsonl:
    """Rows appended to ``<final>.partial`` as they are made, then moved to ``<final>`` at the end.

    Each row carries a key (``key_field``). On a rerun the rows already in the partial file are kept
    and their keys reported as done, so the job skips them; a torn last line (the process was killed
    mid-write) is dropped. A sidecar ``<final>.partial.json`` holds the fingerprint of the settings
    that made the rows: resuming with different settings is refused instead of mixing outputs. The
    finished file keeps that fingerprint in ``<final>.settings.json`` (see ``output_is_current``).
    """

    def __init__(self, final_path: str | os.PathLike, key_field: str, settings: dict):
        self.final_path = Path(final_path)
        self.partial_path = self.final_path.with_name(self.final_path.name + ".partial")
        self.meta_path = self.final_path.with_name(self.final_path.name + ".partial.json")
        self.key_field = key_field
        self.settings = settings
        self.fingerprint = fingerprint(settings)
        self.rows: dict[Any, dict] = {}
        self._file = None

    @property
    def complete(self) -> bool:
        """The final file exists and was made with these settings; AlmostError if made with others."""
        return output_is_current(self.final_path, self.settings)

    def open(self) -> ResumableJsonl:
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        if self.partial_path.exists():
            meta = read_json(self.meta_path) if self.meta_path.exists() else {}
            if meta.get("fingerprint") != self.fingerprint:
                raise AlmostError(
                    f"{self.partial_path} was started with different settings or inputs ({changed_settings(meta, self.settings)}); "
                    "rerun with the same settings to resume, or pass --overwrite to start again"
                )
            self._load_partial()
        else:
            write_json_atomic(self.meta_path, settings_record(self.settings))
        self._file = open(self.partial_path, "a", encoding="utf-8")
        return self

    def reopen_finished(self) -> None:
        """Make a finished file made with these settings the partial one again, so that rows can be
        added to it (AlmostError when it was made with others)."""
        if self.partial_path.exists() or not self.complete:
            return
        write_json_atomic(self.meta_path, settings_record(self.settings))
        os.replace(self.final_path, self.partial_path)

    def _load_partial(self) -> None:
        good_bytes = 0
        with open(self.partial_path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn write from a killed process
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break
                self.rows[row[self.key_field]] = row
                good_bytes += len(line)
        with open(self.partial_path, "r+b") as f:
            f.truncate(good_bytes)

    def done(self, key: Any) -> bool:
        return key in self.rows

    def append(self, rows: Iterable[dict]) -> None:
        """Write rows durably (one fsync per call: call it once per batch)."""
        assert self._file is not None, "call open() first"
        for row in rows:
            key = row[self.key_field]
            if key in self.rows:
                continue
            self.rows[key] = row
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def finalize(self, order: Iterable[Any] | None = None, drop_key: bool = False) -> list[dict]:
        """Move the rows to the final file (in ``order`` of keys, else sorted by key).

        ``drop_key`` leaves the key field out of the final rows, for outputs that must keep their
        input's columns (the key was only there to resume).
        """
        self.close()
        keys = list(order) if order is not None else sorted(self.rows)
        missing = [k for k in keys if k not in self.rows]
        if missing:
            raise AlmostError(f"{len(missing)} rows missing from {self.partial_path}; rerun to finish them")
        rows = [self.rows[k] for k in keys]
        if drop_key:
            rows = [{c: v for c, v in row.items() if c != self.key_field} for row in rows]
        record_settings(self.final_path, self.settings)
        write_jsonl_atomic(self.final_path, rows)
        self.partial_path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)
        return rows

    def discard(self) -> None:
        self.close()
        self.partial_path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)

    def reset(self) -> None:
        """--overwrite: the partial file and the finished one (with its settings record) go."""
        self.discard()
        remove_output(self.final_path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ResumableJsonl:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# One writer per output directory


LOCK_NAME = ".almost.lock"
_locks: dict[Path, tuple[int, Path, Path | None]] = {}  # resolved dir → (fd, dir, topmost folder we created)


def lock_output_dir(path: str | os.PathLike, command: str) -> None:
    """Hold ``<path>/.almost.lock`` (``flock``) for this process: a second run on the same output
    directory stops with one line naming the holder instead of interleaving its writes.

    The kernel drops the lock when the process dies however it dies, so a crash never leaves the
    directory locked. Creates the directory; if this run then writes nothing (a bad input found
    later), ``release_output_dirs`` removes what it created. Only the main process of a
    multi-process launch (``RANK``/``LOCAL_RANK`` 0) locks: the others write nothing of their own.
    """
    import fcntl

    if int(os.environ.get("RANK") or 0) or int(os.environ.get("LOCAL_RANK") or 0):
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AlmostError(f"output directory {path} is an existing file")
    key = path.resolve()
    if key in _locks:
        fd, _, _ = _locks[key]
        try:
            if os.fstat(fd).st_ino == os.stat(key / LOCK_NAME).st_ino:
                return  # already ours (a stage called twice in one process)
        except FileNotFoundError:
            pass
        os.close(fd)  # the folder was emptied under us (the pipeline starts a step again): lock anew
        del _locks[key]
    created = next((p for p in reversed([key, *key.parents]) if not p.exists()), None)
    try:
        key.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AlmostError(f"cannot create output directory {path}: {e.strerror}") from None
    lock_path = key / LOCK_NAME
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise AlmostError(f"{path} is in use by {holder}; wait for it to finish or choose another output directory") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and flock: lock the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} ({command})\n".encode(), 0)
    _locks[key] = (fd, key, created)


def release_output_dirs(keep: Iterable[Path] = ()) -> None:
    """Give up the locks taken since ``keep`` was current; remove folders we created and left empty."""
    keep = set(keep)
    for key in [k for k in _locks if k not in keep]:
        fd, path, created = _locks.pop(key)
        try:
            if os.fstat(fd).st_ino == os.stat(path / LOCK_NAME).st_ino:
                os.unlink(path / LOCK_NAME)  # before closing: nobody can lock a file that is gone
        except FileNotFoundError:
            pass
        os.close(fd)
        if created is not None:
            for folder in [path, *path.parents]:
                try:
                    folder.rmdir()  # only if empty: this run wrote nothing there
                except OSError:
                    break
                if folder == created:
                    break


def held_output_dirs() -> list[Path]:
    return list(_locks)


atexit.register(release_output_dirs)


# ----------------------------------------------------------------------------------------------
# What may be recorded: no secrets, no machine paths


REDACTED = "<redacted>"
_SECRET_WORD = re.compile(r"(?:^|_)(?:token|key|secret|password|passwd|credentials?)$|secret|password", re.I)
_NOT_SECRET = frozenset({"pad_token", "eos_token", "bos_token", "unk_token"})  # tokenizer settings, not credentials


def is_secret(name: str) -> bool:
    """A setting whose name says token/key/secret/password (``hub_token``, ``api_key``)."""
    name = name.lstrip("-").replace("-", "_")
    return name not in _NOT_SECRET and bool(_SECRET_WORD.search(name))


def redact(settings: dict) -> dict:
    """``settings`` with every secret's value replaced by ``<redacted>`` (unset ones stay unset)."""
    return {k: REDACTED if is_secret(k) and v not in (None, "", False) else v for k, v in settings.items()}


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact_url(text: str) -> str:
    """``https://user:pass@host/...`` → ``https://<redacted>@host/...`` wherever a URL appears."""
    return _URL_CREDENTIALS.sub(REDACTED + "@", text)


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line with the values of secret options (``--hub_token X``, ``--api_key=X``) and the
    credentials inside URLs hidden."""
    out: list[str] = []
    hide_next = False
    for arg in map(redact_url, argv):
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif arg.startswith("--") and "=" in arg and is_secret(arg.split("=", 1)[0]):
            out.append(arg.split("=", 1)[0] + "=" + REDACTED)
        else:
            out.append(arg)
            hide_next = arg.startswith("--") and is_secret(arg)
    return out


def portable(value: Any, base: str | os.PathLike) -> Any:
    """Strings (in dicts and lists too) with absolute paths under ``base`` made relative to it and
    paths under the home folder written ``~/...``: what cards and metrics record says nothing about
    the machine it ran on. ``base`` is the run directory (the parent of a stage's output folder)."""
    if isinstance(value, dict):
        return {k: portable(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable(v, base) for v in value)
    if not isinstance(value, str) or "/" not in value:
        return value
    base = str(Path(base).resolve())
    replacements = [(base, "")] if base != "/" else []
    home = str(Path.home())
    if home not in ("/", base):
        replacements.append((home, "~/"))
    for prefix, replacement in replacements:
        # Only a whole path: at the start or after a space, quote, backtick, bracket, "=" or a scheme's
        # ":" (rm:PATH); the prefix followed by "/" or by the end of the path.
        pattern = rf"(?:^|(?<=[\s`'\"(\[=:,])){re.escape(prefix)}(/|(?=[\s`'\")\],]|$))"
        whole = replacement.rstrip("/") or "."  # the prefix itself: "." for the run directory, "~" for home
        value = re.sub(pattern, lambda m, replacement=replacement, whole=whole: replacement if m.group(1) == "/" else whole, value)
    return value
