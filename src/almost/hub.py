"""``almost push RUN_DIR --repo_id ORG/NAME``: a run's datasets and models, with their cards, to the Hub.

What goes up is what has a card: every folder whose README.md is a dataset card written by almost
(``almost.cards``) becomes a dataset repository, and every folder with a model checkpoint
(``config.json`` or ``adapter_config.json``) and its model card becomes a model repository. With one
folder to push, it goes to ``--repo_id`` as it is; with several, each goes to
``{repo_id}-{folder}`` (``ORG/NAME-cs``, ``ORG/NAME-rm``, ...). ``--stage`` picks folders by name.

Unfinished files (``*.partial``, their sidecars), the pipeline's step markers and Trainer's
intermediate checkpoints stay behind. The token comes from the environment variable named by
``--token_env`` (default ``HF_TOKEN``) and is never written anywhere; without it the command refuses
before anything else. ``--dry_run`` lists what would go where, without a token.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .cards import read_card_metadata
from .config import parse
from .contracts import ADAPTER_CONFIG, CARD_FILE, MODEL_CONFIG
from .errors import AlmostError

IGNORE_PATTERNS = ["*.partial", "*.partial.*", ".almost-step*", "checkpoint-*", "*.lock", ".*"]


@dataclass
class PushArguments:
    """Settings of ``almost push``."""

    run_dir: str | None = field(
        default=None, metadata={"help": "A run directory (from `almost pipeline`/`almost demo`) or one stage's output folder (required)."}
    )
    repo_id: str | None = field(
        default=None, metadata={"help": "ORG/NAME on the Hub; with several folders each goes to ORG/NAME-<folder> (required)."}
    )
    stage: list[str] = field(
        default_factory=list, metadata={"help": "Only these folders of the run (e.g. cs rm); default: every folder with a card."}
    )
    private: bool = field(default=False, metadata={"help": "Create the repositories as private."})
    token_env: str = field(default="HF_TOKEN", metadata={"help": "Environment variable holding the Hub token (never written anywhere)."})
    dry_run: bool = field(default=False, metadata={"help": "Only print what would be uploaded where (no token needed)."})


@dataclass(frozen=True)
class Upload:
    folder: Path
    repo_id: str
    repo_type: str  # "dataset" or "model"
    files: tuple[str, ...]  # paths relative to folder


def card_kind(folder: Path) -> str | None:
    """'dataset' for a folder with an almost dataset card, 'model' for a checkpoint with a card, else None."""
    if not (folder / CARD_FILE).exists():
        return None
    if (folder / MODEL_CONFIG).exists() or (folder / ADAPTER_CONFIG).exists():
        return "model"
    if read_card_metadata(folder).get("almost"):
        return "dataset"
    return None


def _kept(folder: Path) -> tuple[str, ...]:
    from huggingface_hub.utils import filter_repo_objects

    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return tuple(filter_repo_objects(files, ignore_patterns=IGNORE_PATTERNS))


def plan_uploads(run_dir: str | Path, repo_id: str, stages: list[str] | None = None) -> list[Upload]:
    """Which folders go to which repositories, checked before anything is sent."""
    root = Path(run_dir)
    if not root.is_dir():
        raise AlmostError(f"{run_dir} is not a directory")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise AlmostError(f"--repo_id must look like ORG/NAME, got {repo_id!r}")
    if card_kind(root):
        candidates = {root.name: root}
    else:
        candidates = {}
        for folder in sorted(p for p in root.rglob("*") if p.is_dir() and card_kind(p)):
            if any(parent in candidates.values() for parent in folder.parents):
                continue  # a model's adapter/ subfolder goes up with the model
            candidates["-".join(folder.relative_to(root).parts)] = folder
    if stages:
        unknown = [s for s in stages if s not in candidates]
        if unknown:
            raise AlmostError(
                f"--stage {' '.join(unknown)}: no such folder with a card in {run_dir} (has: {', '.join(candidates) or 'none'})"
            )
        candidates = {name: candidates[name] for name in stages}
    if not candidates:
        raise AlmostError(f"{run_dir} holds no dataset or model with a card (run a stage first)")
    single = len(candidates) == 1
    return [
        Upload(folder, repo_id if single else f"{repo_id}-{name}", card_kind(folder), _kept(folder)) for name, folder in candidates.items()
    ]


def push(uploads: list[Upload], token: str, private: bool, api=None) -> list[str]:
    """Create each repository (if needed) and upload its folder; returns the repository URLs."""
    from huggingface_hub import HfApi

    api = api or HfApi(token=token)
    urls = []
    for u in uploads:
        url = api.create_repo(u.repo_id, repo_type=u.repo_type, private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(u.folder),
            repo_id=u.repo_id,
            repo_type=u.repo_type,
            ignore_patterns=IGNORE_PATTERNS,
            commit_message=f"almost push: {u.folder.name}",
        )
        urls.append(str(url))
        print(f"almost push: {u.folder} → {u.repo_type} {u.repo_id}")
    return urls


def run_push(config: PushArguments, api=None) -> list[Upload]:
    if not config.run_dir or not config.repo_id:
        raise AlmostError("usage: almost push RUN_DIR --repo_id ORG/NAME (both are required)")
    token = os.environ.get(config.token_env) or None
    if not token and not config.dry_run:
        raise AlmostError(f"no Hub token: set {config.token_env} (or pass --token_env NAME), or use --dry_run to see what would be pushed")
    uploads = plan_uploads(config.run_dir, config.repo_id, config.stage)
    for u in uploads:
        print(f"{u.repo_type:<8} {u.repo_id:<40} {u.folder}  ({len(u.files)} files)")
    if not config.dry_run:
        push(uploads, token, config.private, api)
    return uploads


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--run_dir", argv[0], *argv[1:]]  # RUN_DIR may come first, without its flag
    (config,) = parse("almost push", [PushArguments], argv, description=__doc__.split("\n\n")[0])
    run_push(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
