"""Make the proof run's held-out pairwise questions, ``src/almost/assets/eval/proof_questions.jsonl``.

    python scripts/make_proof_questions.py [--out src/almost/assets/eval/proof_questions.jsonl]

Vicuna-style rows (``question_id``, ``text``, ``category``) in two parts, reported apart by
``almost eval pairwise`` through their category:

- ``helpful``: the hand-written questions of ``helpful_questions.jsonl``, in its order. Each must be
  held out from PG: ROUGE-L F below PG's near-duplicate threshold (0.5) against every line of the
  seed prompt files and against every other helpful question; the script stops if one is not.
- ``harmless``: ``HARMLESS_COUNT`` real human requests, the first human turn of the single-turn
  conversations (exactly one Human: turn) in the HH-RLHF harmless-base **test half**
  (``hh_harmless_test.jsonl.gz``, see ``make_hh_eval_split.py``), each text once, chosen by
  ``numpy.random.default_rng(HARMLESS_SEED)`` and kept in source order. A question's id names its
  row: ``harmless-<id>``, the row's line number in Anthropic's test file.

Needs the ``almost`` package (``pip install -e .``): it reads transcripts and measures ROUGE-L the
way the stages do. The output depends only on the shipped files: a rerun rewrites it byte for byte.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from almost.feedback.pg import rouge_l, rouge_tokens
from almost.reward.formats import parse_transcript, split_shared_prefix
from almost.shipped import ASSETS, HH_HARMLESS_TEST, SAMPLE_DATA

HELPFUL = SAMPLE_DATA / "helpful_questions.jsonl"
SEED_PROMPTS = (ASSETS / "seed_prompts.txt", ASSETS / "seed_prompts_harmless.txt")
DEFAULT_OUT = SAMPLE_DATA / "proof_questions.jsonl"
HARMLESS_COUNT = 60  # as many as the helpful part, so the two categories' intervals compare
HARMLESS_SEED = 11  # the issue that asked for this set; changing it changes every reported figure
ROUGE_L_LIMIT = 0.5  # PG's --rouge_l_threshold: at or above it, PG calls two prompts near-duplicates


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def too_close(texts: list[str], seeds: list[str]) -> list[tuple[str, str, float]]:
    """(question, seed prompt or earlier question, ROUGE-L F) for every pair at or above the limit."""
    found = []
    for i, text in enumerate(texts):
        tokens = rouge_tokens(text)
        for other in [*seeds, *texts[:i]]:
            score = rouge_l(rouge_tokens(other), tokens)
            if score >= ROUGE_L_LIMIT:
                found.append((text, other, score))
    return found


def helpful_questions(helpful_path: Path = HELPFUL, seed_paths: tuple[Path, ...] = SEED_PROMPTS) -> list[dict]:
    rows = read_jsonl(helpful_path)
    seeds = [line for path in seed_paths for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    close = too_close([r["text"] for r in rows], seeds)
    if close:
        lines = "\n".join(f"  {score:.3f}  {text!r} ~ {other!r}" for text, other, score in close)
        raise SystemExit(f"{helpful_path}: not held out from PG (ROUGE-L F >= {ROUGE_L_LIMIT}):\n{lines}")
    return [{"question_id": r["question_id"], "text": r["text"], "category": "helpful"} for r in rows]


def single_turn_requests(rows: list[dict]) -> list[tuple[int, str]]:
    """(row id, the human's request) of each conversation with one Human: turn, in row order; a
    request asked again in a later row is left out."""
    requests, seen = [], set()
    for row in rows:
        shared = split_shared_prefix(parse_transcript(row["chosen"]), parse_transcript(row["rejected"]))
        if shared is None or [m["role"] for m in shared[0]] != ["user"]:
            continue
        text = shared[0][0]["content"]
        if text and text not in seen:
            seen.add(text)
            requests.append((row["id"], text))
    return requests


def harmless_questions(test_path: Path = HH_HARMLESS_TEST, count: int = HARMLESS_COUNT, seed: int = HARMLESS_SEED) -> list[dict]:
    requests = single_turn_requests(read_jsonl(test_path))
    chosen = sorted(np.random.default_rng(seed).choice(len(requests), size=count, replace=False).tolist())
    return [{"question_id": f"harmless-{requests[i][0]}", "text": requests[i][1], "category": "harmless"} for i in chosen]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    helpful, harmless = helpful_questions(), harmless_questions()
    write_jsonl(args.out, helpful + harmless)
    print(f"{len(helpful)} helpful + {len(harmless)} harmless questions → {args.out}")


if __name__ == "__main__":
    main()
