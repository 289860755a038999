"""Reward-model training throughput and peak memory: `almost rm train` vs a plain TRL RewardTrainer.

Both train the same model on the same pairs for the same number of steps and batch size; each runs
in its own process so peak memory is its own. "Plain TRL" is RewardTrainer with RewardConfig
defaults (bf16 and gradient checkpointing on, TRL's own tokenization of conversational rows;
use_cpu set on CPU-only machines, without which those defaults refuse to start);
`almost rm train` uses its defaults (hardware-chosen bf16 and checkpointing, texts rendered by
almost.chat). Run by hand:

    python benchmarks/bench_rm_train.py                     # embedded SmolLM2-135M, 64 pairs, 8 steps
    python benchmarks/bench_rm_train.py --steps 4 --batch_size 4 --model /path/to/model

Prints one JSON object: pairs/s (training loop only), wall seconds (with loading), peak memory
(process RSS; plus CUDA peak on GPU) for both, and the almost/trl ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "src" / "almost" / "assets"


def make_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """Prompts from the seed prompt file; the chosen answer is a longer, more detailed variant."""
    rng = random.Random(seed)
    prompts = [line.strip() for line in (ASSETS / "seed_prompts.txt").read_text().splitlines() if line.strip() and not line.startswith("#")]
    vocabulary = (ASSETS / "faithful_prompt.txt").read_text().split()
    with open(path, "w") as f:
        for i in range(n):

            def answer(words: int) -> str:
                return " ".join(rng.choice(vocabulary) for _ in range(words))

            row = {"prompt": prompts[i % len(prompts)], "chosen": answer(rng.randint(60, 160)), "rejected": answer(rng.randint(20, 120))}
            f.write(json.dumps(row) + "\n")
    return path


def peak_memory() -> dict:
    import torch

    peak = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def run_almost(args) -> dict:
    from almost.reward.train import RewardTrainingConfig, run_rm_train

    config = RewardTrainingConfig(
        output_dir=args.output_dir,
        model_name_or_path=args.model,
        data_path=args.data,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        report_to="none",
        eval_fraction=0.0,
        disable_tqdm=True,
        max_length=args.max_length,
    )
    start = time.perf_counter()
    summary = run_rm_train(config)
    return {
        "wall_s": time.perf_counter() - start,
        "train_runtime_s": summary["train"]["train_runtime"],
        "bf16": config.bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
    }


def run_trl(args) -> dict:
    import datasets
    from trl import RewardConfig, RewardTrainer

    from almost.models import resolve_model

    rows = [json.loads(line) for line in open(args.data)]
    dataset = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    )
    import torch

    # TRL's defaults (bf16 on) refuse to start on a CPU-only machine unless use_cpu is set.
    config = RewardConfig(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        max_length=args.max_length,
        use_cpu=not torch.accelerator.is_available(),
    )
    start = time.perf_counter()
    trainer = RewardTrainer(model=resolve_model(args.model).path, args=config, train_dataset=dataset)
    result = trainer.train()
    trainer.save_model(args.output_dir)
    return {
        "wall_s": time.perf_counter() - start,
        "train_runtime_s": result.metrics["train_runtime"],
        "bf16": config.bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
    }


def worker(args) -> None:
    result = run_almost(args) if args.worker == "almost" else run_trl(args)
    result["pairs_per_s"] = args.steps * args.batch_size / result["train_runtime_s"]
    result.update(peak_memory())
    print("BENCH " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=1024)
    parser.add_argument("--worker", choices=["almost", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--output_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    results = {"model": args.model, "pairs": args.pairs, "steps": args.steps, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_pairs(Path(tmp) / "pairs.jsonl", args.pairs)
        for name in ("trl", "almost"):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                name,
                "--data",
                str(data),
                "--output_dir",
                str(Path(tmp) / name),
                "--model",
                args.model,
                "--steps",
                str(args.steps),
                "--batch_size",
                str(args.batch_size),
                "--max_length",
                str(args.max_length),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((out for out in proc.stdout.splitlines() if out.startswith("BENCH ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"{name} run failed:\n{proc.stderr[-3000:]}")
            results[name] = json.loads(line[len("BENCH ") :])
    results["ratio_pairs_per_s"] = results["almost"]["pairs_per_s"] / results["trl"]["pairs_per_s"]
    results["ratio_peak_rss"] = results["almost"]["peak_rss_mib"] / results["trl"]["peak_rss_mib"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
