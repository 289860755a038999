"""Reward-model evaluation on human pairs: every text scored whole vs the shared conversation encoded once.

``almost rm eval`` scores both answers of a pair; in HH-RLHF the two texts share the whole conversation
before the last answer. ``RewardScorer.score`` encodes the 2N texts in length-sorted batches;
``RewardScorer.score_pairs`` (what ``rm eval`` uses) encodes each pair's shared beginning once and both
endings from its cache. One run, same model, same pairs, back to back: seconds, tokens encoded, the
ratio, how far the rewards differ, and whether any pair's verdict (chosen above rejected) changes.

    python benchmarks/bench_rm_eval.py --reward_model_name_or_path RUN/rm --num_pairs 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from almost.allocator import reexec_with_tcmalloc, tcmalloc_loaded
from almost.reward.evaluate import eval_data_path
from almost.reward.formats import load_pairs
from almost.reward.model import RewardScorer, shared_length


def main() -> None:
    reexec_with_tcmalloc([sys.executable, *sys.argv])  # what `almost rm eval` runs under (allocator.py)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward_model_name_or_path", required=True)
    parser.add_argument("--data_path", default="hh-harmless-test", help="a shipped set's short name or a pairs file")
    parser.add_argument("--num_pairs", type=int, default=200, help="the first N pairs of the set")
    parser.add_argument("--batch_size", type=int, default=8, help="texts per forward pass of the whole-text side (rm eval's default)")
    args = parser.parse_args()

    pairs = load_pairs(eval_data_path(args.data_path)).pairs[: args.num_pairs]
    scorer = RewardScorer(args.reward_model_name_or_path, batch_size=args.batch_size)
    first = [p.conversation(p.chosen) for p in pairs]
    second = [p.conversation(p.rejected) for p in pairs]
    ids = [scorer.tokenizer(scorer.texts(side), add_special_tokens=False).input_ids for side in (first, second)]
    whole_tokens = sum(len(t) for side in ids for t in side)
    shared_tokens = sum(len(a) + len(b) - shared_length(a, b) for a, b in zip(*ids))
    scorer.score(first[:2])  # untimed: the first forward pass pays one-time costs

    started = time.perf_counter()
    whole = scorer.score(first + second)
    whole_seconds = time.perf_counter() - started
    started = time.perf_counter()
    chosen, rejected = scorer.score_pairs(first, second)
    pair_seconds = time.perf_counter() - started

    difference = max(abs(x - y) for x, y in zip(whole, chosen + rejected))
    flipped = sum((c > r) != (wc > wr) for c, r, wc, wr in zip(chosen, rejected, whole[: len(pairs)], whole[len(pairs) :]))
    result = {
        "pairs": len(pairs),
        "allocator": "tcmalloc" if tcmalloc_loaded() else "the C library's malloc",
        "whole_texts": {"seconds": round(whole_seconds, 1), "tokens": whole_tokens},
        "shared_conversation_once": {"seconds": round(pair_seconds, 1), "tokens": shared_tokens},
        "speedup": round(whole_seconds / pair_seconds, 2),
        "tokens_ratio": round(whole_tokens / shared_tokens, 2),
        "max_abs_reward_difference": difference,
        "pairs_whose_verdict_changes": flipped,
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    print(
        f"{len(pairs)} pairs: whole texts {whole_seconds:.1f} s ({whole_tokens} tokens), shared conversation once {pair_seconds:.1f} s "
        f"({shared_tokens} tokens): {result['speedup']}x; rewards differ by at most {difference:.2e}, {flipped} verdicts change"
    )


if __name__ == "__main__":
    main()
