"""A step's fingerprint and its marker: whether a step has finished with the settings and inputs it has now.

The marker (``.almost-step*.json`` in the step's folder) holds the fingerprint of the step's command
line and of what its declared inputs (``stages.Stage.inputs``) name, by content: files, folders,
models (by their config, tokenizer and weights); ``NOT_RESULT_FLAGS`` left out. And its status,
running or done.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..config import settings_to_argv
from ..contracts import ADAPTER_CONFIG, LOCK_NAME, MODEL_CONFIG, STEP_MARKER_PREFIX
from ..digests import digest_file, digest_model, fingerprint
from ..errors import AlmostError
from ..models import unfinished_training
from ..readers import read_json
from .plan import Step

# Flags that do not decide a step's result: left out of its fingerprint. The cache changes by itself
# (downloads, the embedded model's conversion); a model found through it is fingerprinted by content.
# The pairwise answer cache is keyed by model content, sampling settings and question: the folder that
# judge steps share grows as they run, and must not make the earlier ones look changed.
NOT_RESULT_FLAGS = frozenset({"cache_dir", "answers_dir"})


def digest_path(path: Path) -> str:
    """Content hash of a file (sampled when large, see ``digests.digest_file``); a model checkpoint's
    config, tokenizer and weights by content (``digests.digest_model``: its logs, card and intermediate
    checkpoints do not count); names, sizes and mtimes of any other folder's files."""
    if path.is_file():
        return digest_file(path)
    if (path / MODEL_CONFIG).is_file() or (path / ADAPTER_CONFIG).is_file():
        return digest_model(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.name.startswith(STEP_MARKER_PREFIX) or file.name == LOCK_NAME:
            continue
        stat = file.stat()
        h.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def step_fingerprint(step: Step) -> str:
    """The step's command line plus a digest of what each of its inputs names, where that is a file,
    a folder or a local model outside the step's own folder (a hub id, an embedded model's name or a
    URL is in the command line already); both without the flags that do not decide the result
    (``NOT_RESULT_FLAGS``)."""
    inputs = {}
    own = step.output_dir.resolve()
    flags = {k: v for k, v in step.flags.items() if k not in NOT_RESULT_FLAGS}
    for option, source in step.stage.inputs.items():
        value = flags.get(option)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(v, str) or not v:
                continue
            v = source.target(v)
            path = Path(v).expanduser()
            if not path.exists():
                continue
            resolved = path.resolve()
            if resolved == own or own in resolved.parents:
                continue
            inputs[v] = digest_path(path)
    argv = [*step.command[1:], *settings_to_argv(flags)]
    return fingerprint({"command": list(step.command), "argv": argv, "launcher": list(step.launcher), "inputs": inputs})


def read_marker(step: Step) -> dict:
    if not step.marker.exists():
        return {}
    try:
        return read_json(step.marker, "step marker")
    except AlmostError:
        return {}  # a damaged marker means we know nothing: the step runs again


def is_done(step: Step, marker: dict | None = None) -> bool:
    marker = read_marker(step) if marker is None else marker
    # A training step's folder also says itself whether its final model was saved in full.
    return marker.get("status") == "done" and step.product.exists() and unfinished_training(step.output_dir) is None


def clear_outputs(step: Step) -> None:
    for path in step.owned or (step.output_dir,):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    step.marker.unlink(missing_ok=True)
