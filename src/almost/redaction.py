"""What may be recorded: no secrets, no machine paths."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
