"""``almost merge``: join the shards of ``almost rg --shard i/n`` runs into ``{config}.jsonl``.

Every set ``{config}.shard-{i}-of-{n}.jsonl`` in ``--output_dir`` is checked before anything is
written: all n shards present and finished, each holding exactly the prompts with index i modulo n,
no index twice, no gap, and (when ``prompts.txt`` is there) the same prompts. Then each set becomes
``{config}.jsonl`` in prompt order; the shard files are kept. The merged file records the contents of
the shards it was made from (``{config}.jsonl.settings.json``): a rerun after a shard changed stops
and asks for ``--overwrite``, and ``almost cs`` refuses a merged file older than its shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cards import write_dataset_card
from ..digests import digest_file
from ..errors import AlmostError
from ..readers import read_jsonl, read_prompts, require_columns
from ..resumable import output_is_current, partial_path, record_settings
from ..stages import MERGE, PG, RG
from ..writes import write_jsonl_atomic
from .rg import output_path


@dataclass
class MergeArguments:
    """Options of ``almost merge``."""

    output_dir: str | None = field(default=None, metadata={"help": "Directory holding the shard files of almost rg (required)."})
    overwrite: bool = field(default=False, metadata={"help": "Merge again even if {config}.jsonl exists."})

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("--output_dir is required")


def find_shard_sets(directory: Path) -> dict[str, dict]:
    """``{config: {"n": n, "files": {i: path}}}`` for the finished shard files in ``directory``."""
    sets: dict[str, dict] = {}
    for path in sorted(directory.iterdir()):
        match = MERGE.outputs.match("shard", path.name)
        if not match:
            continue
        name, i, n = match["configuration"], match["i"], match["n"]
        if not 0 <= i < n:
            raise AlmostError(f"{path}: shard {i} of {n} is not a shard (need 0 <= i < n); remove or rename it")
        entry = sets.setdefault(name, {"n": n, "files": {}})
        if entry["n"] != n:
            raise AlmostError(f"{directory}: {name} has shards of two splits (of {entry['n']} and of {n}); remove one set")
        entry["files"][i] = path
    return sets


def merged_rows(directory: Path, name: str, n: int, files: dict[int, Path], prompts: list[str] | None) -> list[dict]:
    """The rows of one complete shard set in prompt order; AlmostError if the set is not exactly right."""
    missing = [i for i in range(n) if i not in files]
    if missing:
        running = [i for i in missing if partial_path(output_path(directory, name, (i, n))).exists()]
        detail = f" (shard {running[0]} is unfinished: rerun it)" if running else ""
        raise AlmostError(f"{name}: shard(s) {', '.join(map(str, missing))} of {n} are missing{detail}; nothing merged")
    rows: dict[int, dict] = {}
    for i, path in sorted(files.items()):
        shard_rows = read_jsonl(path, "shard file")
        require_columns(shard_rows, MERGE.outputs.row_keys, path)
        for row in shard_rows:
            index = row["index"]
            if not isinstance(index, int) or index % n != i:
                raise AlmostError(f"{path}: row index {index!r} does not belong to shard {i}/{n}; nothing merged")
            if index in rows:
                raise AlmostError(f"{name}: prompt {index} appears twice (overlapping shards); nothing merged")
            rows[index] = row
    total = len(prompts) if prompts is not None else max(rows) + 1
    gaps = [i for i in range(total) if i not in rows]
    if gaps or len(rows) != total:
        raise AlmostError(
            f"{name}: the shards hold {len(rows)} prompts, expected {total} (first missing index: "
            f"{gaps[0] if gaps else total}); nothing merged"
        )
    if prompts is not None:
        wrong = next((i for i in range(total) if rows[i]["prompt"] != prompts[i]), None)
        if wrong is not None:
            raise AlmostError(f"{name}: prompt {wrong} differs from prompts.txt (shards made from another prompt list?); nothing merged")
    return [rows[i] for i in range(total)]


def merge_settings(directory: Path, files: dict[int, Path]) -> dict:
    """What a merged file is made of: the contents of its shards (and of prompts.txt, which the
    merge checks them against). ``almost cs`` compares it too, to refuse a merged file older than
    the shards beside it."""
    prompts = directory / PG.outputs.files["prompts"]
    return {
        "shards": {path.name: digest_file(path) for _, path in sorted(files.items())},
        "prompts": digest_file(prompts) if prompts.exists() else None,
    }


def run_merge(config: MergeArguments) -> dict:
    directory = Path(config.output_dir)
    if not directory.is_dir():
        raise AlmostError(f"output directory not found: {directory}")
    sets = find_shard_sets(directory)
    if not sets:
        raise AlmostError(f"no shard files ({{config}}.shard-i-of-n.jsonl) in {directory}")
    prompts_file = directory / PG.outputs.files["prompts"]
    prompts = read_prompts(prompts_file) if prompts_file.exists() else None
    todo = {}
    for name, entry in sets.items():
        target = output_path(directory, name)
        # A merged file made from other shards (rerun, changed) is refused, not kept.
        if not config.overwrite and output_is_current(target, merge_settings(directory, entry["files"])):
            print(f"almost merge: {target} is up to date with its shards; skipped")
            continue
        todo[name] = merged_rows(directory, name, entry["n"], entry["files"], prompts)
    # Written only once every set has passed its checks.
    for name, rows in todo.items():
        record_settings(output_path(directory, name), merge_settings(directory, sets[name]["files"]))
        write_jsonl_atomic(output_path(directory, name), rows)
        print(f"almost merge: {len(sets[name]['files'])} shards → {output_path(directory, name)} ({len(rows)} rows)")
    if todo:
        about = {
            name: {"shards": len(sets[name]["files"]), "rows": len(rows), "bad": sum(bool(r.get("bad")) for r in rows)}
            for name, rows in todo.items()
        }
        write_dataset_card(directory, RG, {name: output_path(directory, name).name for name in todo}, {"configurations": about})
    return {name: len(rows) for name, rows in todo.items()}
