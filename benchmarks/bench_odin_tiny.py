"""Does `rm train --length_head` (ODIN) take length out of the saved reward? A small check on a
tiny model, where the answer is known.

Trains a plain RM and an ODIN RM on the same pairs whose chosen answer is always the longer one and
opens with a polite marker ("Sure, happy to help!" vs "No."), then scores a probe set of 40 answers
of 1-16 words where marker and length are independent, and prints Spearman(reward, length) and
Spearman(reward, marker) for each. The model is a tiny random 2-layer LLaMA with SmolLM2's
tokenizer (tests/conftest.py), not SmolLM2: this checks the mechanism, not the proof run. Run by hand:

    python benchmarks/bench_odin_tiny.py --coefficient 5 --seeds 1 2
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coefficient", type=float, default=1.0, help="--length_correlation_coefficient of the ODIN run")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    sys.path.insert(0, str(TESTS))
    from conftest import build_tiny_model
    from scipy.stats import spearmanr
    from test_reward_odin import WORDS, confounded_pairs

    from almost.reward.model import RewardScorerSettings, load_scorer
    from almost.reward.train import main as train_main

    root = Path(tempfile.mkdtemp(prefix="bench-odin-"))
    tiny = build_tiny_model(root / "tiny")
    data = confounded_pairs(root / "pairs.jsonl", n=96)
    rng = random.Random(7)
    probe = []
    for i in range(40):
        k = rng.randint(1, 16)
        marker = "Sure, happy to help! " if i % 2 else "No. "
        answer = marker + " ".join(rng.choice(WORDS) for _ in range(k))
        probe.append(
            (
                [
                    {"role": "user", "content": f"Question {i}: tell me about {rng.choice(WORDS)}."},
                    {"role": "assistant", "content": answer},
                ],
                k,
                i % 2,
            )
        )
    for seed in args.seeds:
        for odin in (False, True):
            out = root / f"rm-{'odin' if odin else 'plain'}-{seed}"
            flags = [
                "--model_name_or_path",
                str(tiny),
                "--data_path",
                str(data),
                "--output_dir",
                str(out),
                "--learning_rate",
                "1e-3",
                "--max_steps",
                str(args.steps),
                "--per_device_train_batch_size",
                "8",
                "--eval_fraction",
                "0",
                "--seed",
                str(seed),
                "--report_to",
                "none",
                "--logging_steps",
                "5",
                "--disable_tqdm",
                "true",
            ]
            if odin:
                flags += ["--length_head", "--length_correlation_coefficient", str(args.coefficient)]
            start = time.time()
            train_main(flags)
            rewards = load_scorer(str(out), RewardScorerSettings()).score([p[0] for p in probe])
            by_length = spearmanr(rewards, [p[1] for p in probe]).statistic
            by_marker = spearmanr(rewards, [p[2] for p in probe]).statistic
            print(
                f"seed {seed} {'odin' if odin else 'plain'}: Spearman(reward, length) {by_length:.3f}, "
                f"Spearman(reward, marker) {by_marker:.3f}, {time.time() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
