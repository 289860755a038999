"""Outputs that resume and record what made them: the settings sidecar beside every finished output,
and ``ResumableJsonl``, rows appended durably to a partial file that becomes the output at the end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .contracts import PARTIAL_SETTINGS_SUFFIX, PARTIAL_SUFFIX, SETTINGS_SUFFIX
from .digests import fingerprint
from .errors import AlmostError
from .readers import read_json
from .writes import write_json_atomic, write_jsonl_atomic

# --- finished outputs carry the fingerprint of what made them -----------------------------------
#
# Beside every finished output ``X`` lies ``X.settings.json``: the fingerprint of the settings and
# input contents that made it, and a short form of those settings (to say which one changed). A rerun
# with the same fingerprint reuses ``X``; with another one it stops with one line naming
# --overwrite (exit 2), because silently recomputing could throw away hours of paid compute and
# silently reusing would hand stale data to the next stage. The sidecar is written just before
# ``X`` is (atomically) put in place, so ``X`` never exists with a sidecar from other settings.

_SHOWN_VALUE_CHARS = 120


def settings_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + SETTINGS_SUFFIX)


def partial_path(output: str | os.PathLike) -> Path:
    """Where the rows of ``output`` grow until it is finished."""
    output = Path(output)
    return output.with_name(output.name + PARTIAL_SUFFIX)


def output_files(output: str | os.PathLike) -> tuple[Path, ...]:
    """Every file that belongs to ``output``: itself, its settings record, its partial rows and theirs."""
    output = Path(output)
    return output, settings_path(output), partial_path(output), output.with_name(output.name + PARTIAL_SETTINGS_SUFFIX)


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

    Raises AlmostError when it exists but was made otherwise (or records nothing, as a file an older almost made).
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
        self.partial_path = partial_path(self.final_path)
        self.meta_path = self.final_path.with_name(self.final_path.name + PARTIAL_SETTINGS_SUFFIX)
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
