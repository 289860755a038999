"""PG near-duplicate filtering: the indexed exact check vs pairwise ROUGE-L, same decisions, in one run.

    python benchmarks/bench_pg_dedup.py [--num_prompts 2000] [--seed 0]

Candidates are assembled deterministically from the project's seed prompts by splicing two prompts,
editing a few words of an earlier one, or drawing fresh words, so that many are near-duplicates
and many are not. They are judged in order as PG does (a candidate is compared with the seeds and
every candidate accepted before it), once with ``NearDuplicateIndex`` and once pairwise with the
dynamic-programming ROUGE-L, stopping at the first match (the cheapest way to do it pairwise).
When the ``rouge_score`` package is importable, it is run pairwise too, as the reference the
decisions must equal; it is not a dependency of almost (``pip install rouge-score`` to include it).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from almost.feedback.pg import NearDuplicateIndex, read_prompt_file, rouge_tokens
from almost.shipped import SEED_PROMPTS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the dynamic-programming reference lives with the tests
from rouge_reference import rouge_l_reference  # noqa: E402

THRESHOLD = 0.5


def assemble_candidates(seeds: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = [w for s in seeds for w in s.split()]
    made: list[str] = []
    for _ in range(count):
        source = rng.choice(seeds + made)
        kind = rng.random()
        if kind < 0.35:  # splice: the start of one prompt, the end of another
            other = rng.choice(seeds + made).split()
            head = source.split()
            text = head[: rng.randint(1, len(head))] + other[rng.randint(0, len(other) - 1) :]
        elif kind < 0.7:  # edit a few words
            text = source.split()
            for _ in range(rng.randint(1, 5)):
                i = rng.randrange(len(text) + 1)
                op = rng.choice(("replace", "delete", "insert")) if i < len(text) else "insert"
                if op == "replace":
                    text[i] = rng.choice(words)
                elif op == "delete" and len(text) > 1:
                    del text[i]
                else:
                    text.insert(i, rng.choice(words))
        else:  # fresh words
            text = [rng.choice(words) for _ in range(rng.randint(5, 18))]
        made.append(" ".join(text))
    return made


def decide_indexed(seeds: list[str], candidates: list[str]) -> list[bool]:
    index = NearDuplicateIndex(THRESHOLD)
    for s in seeds:
        index.add(s)
    decisions = []
    for c in candidates:
        duplicate = index.find_duplicate(c) is not None
        if not duplicate:
            index.add(c)
        decisions.append(duplicate)
    return decisions


def decide_pairwise(seeds: list[str], candidates: list[str], tokenize, fmeasure) -> list[bool]:
    kept = [tokenize(s) for s in seeds]
    decisions = []
    for c in candidates:
        tokens = tokenize(c)
        duplicate = any(fmeasure(tokens, other) >= THRESHOLD for other in kept)
        if not duplicate:
            kept.append(tokens)
        decisions.append(duplicate)
    return decisions


def timed(label: str, decide, *args) -> tuple[list[bool], float]:
    started = time.perf_counter()
    decisions = decide(*args)
    seconds = time.perf_counter() - started
    print(f"{label:<42} {seconds:9.3f} s   rejected {sum(decisions)} of {len(decisions)}")
    return decisions, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_prompts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    seeds = list(read_prompt_file(SEED_PROMPTS).seeds)
    candidates = assemble_candidates(seeds, args.num_prompts, args.seed)
    print(f"{len(candidates)} candidates against {len(seeds)} seeds, ROUGE-L F >= {THRESHOLD} is a duplicate")

    fast, fast_s = timed("indexed (almost NearDuplicateIndex)", decide_indexed, seeds, candidates)
    naive, naive_s = timed("pairwise DP ROUGE-L (rouge_l_reference)", decide_pairwise, seeds, candidates, rouge_tokens, rouge_l_reference)
    assert fast == naive, "the index and pairwise ROUGE-L disagree"
    try:
        from rouge_score import rouge_scorer, tokenize
    except ImportError:
        print("rouge_score not installed: skipped the comparison with it")
    else:
        reference, _ = timed(
            "pairwise rouge_score (the reference)",
            decide_pairwise,
            seeds,
            candidates,
            lambda text: tokenize.tokenize(text, None),
            lambda a, b: rouge_scorer._score_lcs(a, b).fmeasure,
        )
        assert fast == reference, "the index and rouge_score disagree"
    print(f"identical decisions; speed-up {naive_s / fast_s:.1f}x over pairwise DP ROUGE-L")
    return 0


if __name__ == "__main__":
    sys.exit(main())
