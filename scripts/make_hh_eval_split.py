"""Make the shipped human-preference evaluation pairs from Anthropic's HH-RLHF (harmless-base, test split).

    python scripts/make_hh_eval_split.py path/to/harmless-base/test.jsonl.gz [--out src/almost/assets/eval]

Every row of the test split is kept (chosen/rejected transcripts as Anthropic wrote them, plus
``id``: the row's 0-based line number in the source file, and ``subset``: "harmless-base"). A seeded
permutation (numpy ``default_rng(SEED)``) puts the first half in ``hh_harmless_dev.jsonl.gz`` (for
choosing options) and the rest in ``hh_harmless_test.jsonl.gz`` (for reporting), each in source
order. Gzip with mtime 0, so the same input gives byte-identical files. Never train on either half.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

SEED = 11  # the issue that asked for this split; changing it changes every reported figure
SUBSET = "harmless-base"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src" / "almost" / "assets" / "eval"


def read_rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split(rows: list[dict], seed: int = SEED) -> tuple[list[dict], list[dict]]:
    order = np.random.default_rng(seed).permutation(len(rows))
    dev_ids = set(order[: len(rows) // 2].tolist())
    tagged = [{"id": i, "subset": SUBSET, "chosen": r["chosen"], "rejected": r["rejected"]} for i, r in enumerate(rows)]
    return [r for r in tagged if r["id"] in dev_ids], [r for r in tagged if r["id"] not in dev_ids]


def write_gz(path: Path, rows: list[dict]) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        for row in rows:
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="HH-RLHF harmless-base test.jsonl.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    dev, test = split(read_rows(args.source))
    args.out.mkdir(parents=True, exist_ok=True)
    write_gz(args.out / "hh_harmless_dev.jsonl.gz", dev)
    write_gz(args.out / "hh_harmless_test.jsonl.gz", test)
    print(f"{len(dev)} dev + {len(test)} test pairs → {args.out}")


if __name__ == "__main__":
    main()
