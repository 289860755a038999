"""Fingerprints of settings and digests of input contents: what decides whether an output is current."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .contracts import CARD_FILE, METRICS_FILE, TRAINER_STATE, TRAINING_ARGS


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
# card (it records paths and dates), trainer state, and the stage's metrics. Hidden files (locks,
# pipeline markers) and subfolders (intermediate checkpoints) are left out too.
_NOT_MODEL_FILES = frozenset(
    {CARD_FILE, METRICS_FILE, TRAINING_ARGS, TRAINER_STATE, "all_results.json", "train_results.json", "eval_results.json"}
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
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in _NOT_MODEL_FILES and p.name.endswith(_MODEL_SUFFIXES)
    )
    return fingerprint({p.name: digest_file(p) for p in files})
