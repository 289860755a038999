"""Reward-model training: throughput and peak memory against plain TRL (the short case), and where
the memory of training at real lengths goes, for `rm train`, `sft` and `dpo` (the long case).

Short case (default): `almost rm train` vs a plain TRL RewardTrainer on the same synthetic pairs, for
the same steps and batch size, each in its own process so peak memory is its own. "Plain TRL" is
RewardTrainer with RewardConfig defaults (bf16 and gradient checkpointing on, TRL's own tokenization
of conversational rows; use_cpu set on CPU-only machines, without which those defaults refuse to
start); `almost rm train` uses its defaults (hardware-chosen bf16 and checkpointing, texts rendered
by almost.chat).

    python benchmarks/bench_rm_train.py                     # embedded SmolLM2-135M, 64 pairs, 8 steps
    python benchmarks/bench_rm_train.py --steps 4 --batch_size 4 --model /path/to/model

Long case (--case long): real HH-RLHF dialogues, from the shipped hh-harmless-dev half (almost's
evaluation data: read here to measure memory, into a temporary file; the models trained on it are
thrown away, and no training command reads it by default). Only dialogues that render to at least
--max_length tokens are kept (repeated until every step's batch is full), and cut to it, so that
every batch has the shape of the worst batch of a whole epoch: the collators pad a batch to its
longest sequence, and an epoch's peak is set by its first batch holding one such dialogue. Each
variant (the stage's own flags, or an environment variable, on top of the same command) runs `almost
<stage>` through the CLI in its own process for --steps optimizer steps; per step it records the
peak RSS so far (VmHWM) and the step's seconds.

    python benchmarks/bench_rm_train.py --case long --stage rm --variants baseline checkpointing
    python benchmarks/bench_rm_train.py --case long --stage sft --explain --variants baseline checkpointing

--explain runs, instead of training, one forward pass (and the loss) of a worst-case batch per
variant and sums the tensors autograd keeps for the backward pass, by the module that made them.

Prints one JSON object: the short case's pairs/s (training loop only), wall seconds (with loading),
peak memory (process RSS; plus CUDA peak on GPU) and the almost/trl ratios; the long case's command
line, resolved settings, peak RSS per step and at exit, and seconds per step for each variant.
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


# ---------------------------------------------------------------------------------------------
# The long case: real dialogues at --max_length, one process per variant.

# Each variant: the stage's own flags (and environment variables) on top of the same command. "baseline"
# is the run (sdpa attention, fp32, every activation kept); "defaults" is whatever the stage's
# defaults resolve to on this machine.
FP32_ALL_KEPT = {"gradient_checkpointing": "false", "bf16": "false"}
VARIANTS: dict[str, tuple[dict, dict]] = {
    "defaults": ({}, {}),
    "baseline": (FP32_ALL_KEPT, {}),
    "eager": ({**FP32_ALL_KEPT, "model_init_kwargs": '{"attn_implementation": "eager"}'}, {}),
    "bf16": ({"gradient_checkpointing": "false", "bf16": "true"}, {}),
    "checkpointing": ({"gradient_checkpointing": "true", "bf16": "false"}, {}),
    "checkpointing+bf16": ({"gradient_checkpointing": "true", "bf16": "true"}, {}),
    # The same 8 pairs per optimizer step, in 4 passes of 2: a quarter of the activations, no recomputation.
    "accumulate": ({**FP32_ALL_KEPT, "per_device_train_batch_size": "{quarter}", "gradient_accumulation_steps": "4"}, {}),
    # Both: activations kept per layer only, for a quarter of the batch at a time.
    "checkpointing+accumulate": (
        {"gradient_checkpointing": "true", "bf16": "false", "per_device_train_batch_size": "{quarter}", "gradient_accumulation_steps": "4"},
        {},
    ),
    # Asks the device's cache allocator to give memory back each step (CPU has none: accelerate's clear_device_cache).
    "empty_cache": ({**FP32_ALL_KEPT, "torch_empty_cache_steps": "1"}, {}),
    # glibc serves allocations above a fixed threshold with mmap and returns them to the OS when freed
    # (by default the threshold rises with the first large frees, up to 32 MiB, and freed heap memory stays).
    "malloc_mmap": (FP32_ALL_KEPT, {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}),
    "checkpointing+malloc_mmap": ({"gradient_checkpointing": "true", "bf16": "false"}, {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}),
}
STAGE_COMMAND = {"rm": ["rm", "train"], "sft": ["sft"], "dpo": ["dpo"]}


def long_rows(stage: str, model: str, max_length: int) -> list[dict]:
    """The hh-harmless-dev dialogues whose longer side renders to at least max_length tokens (and whose
    conversation before the answers is shorter: DPO drops a pair whose prompt alone fills max_length),
    as the stage reads them."""
    from almost.chat import render_conversation
    from almost.models import load_tokenizer, resolve_model
    from almost.reward.formats import load_pairs
    from almost.shipped import HH_HARMLESS_DEV

    tokenizer = load_tokenizer(resolve_model(model).path, padding_side="right")

    def tokens(messages) -> int:
        return len(tokenizer(render_conversation(tokenizer, messages), add_special_tokens=False).input_ids)

    rows = []
    for pair in load_pairs(HH_HARMLESS_DEV).pairs:
        longer = max((pair.chosen, pair.rejected), key=lambda answer: tokens(pair.conversation(answer)))
        if tokens(pair.conversation(longer)) < max_length or tokens(list(pair.context)) >= max_length:
            continue
        if stage == "sft":
            rows.append({"messages": pair.conversation(longer)})
        else:
            rows.append({"prompt": list(pair.context), "chosen": pair.chosen, "rejected": pair.rejected})
    return rows


def proc_status_mib(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: the peak so far), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def step_recorder(records: list[dict]):
    """A Trainer callback noting, after each optimizer step, the peak RSS so far and the step's seconds."""
    from transformers import TrainerCallback

    class StepMemory(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.last = time.perf_counter()
            attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
            records.append({"step": 0, "peak_rss_mib": proc_status_mib("VmHWM"), "rss_mib": proc_status_mib("VmRSS"), "attn": attention})

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            records.append(
                {
                    "step": state.global_step,
                    "peak_rss_mib": proc_status_mib("VmHWM"),
                    "rss_mib": proc_status_mib("VmRSS"),
                    "seconds": now - self.last,
                    "bf16": args.bf16,
                    "gradient_checkpointing": args.gradient_checkpointing,
                }
            )
            self.last = now

    return StepMemory()


def long_worker(args) -> None:
    """`almost <stage> ARGV` in this process, its trainer reporting memory and time after every step."""
    from transformers import Trainer

    from almost.cli import main as almost

    records: list[dict] = []
    train = Trainer.train

    def recorded_train(self, *a, **kw):
        self.add_callback(step_recorder(records))
        return train(self, *a, **kw)

    Trainer.train = recorded_train
    argv = json.loads(args.argv)
    start = time.perf_counter()
    status = almost(argv)
    result = {"exit_status": status, "wall_s": time.perf_counter() - start, "steps": records, **peak_memory()}
    print("BENCH " + json.dumps(result), flush=True)


def kept_for_backward(args) -> None:
    """One forward pass (and loss) of a worst-case batch: the bytes of every tensor autograd keeps for
    the backward pass (each storage once, weights left out), summed by the kind of module that made it."""
    import collections

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from almost.models import resolve_model

    flags, _ = VARIANTS[args.worker_variant]
    attention = json.loads(flags.get("model_init_kwargs", "{}")).get("attn_implementation", "sdpa")
    kind = AutoModelForSequenceClassification if args.stage == "rm" else AutoModelForCausalLM
    extra = {"num_labels": 1} if args.stage == "rm" else {}
    model = kind.from_pretrained(resolve_model(args.model).path, attn_implementation=attention, **extra)
    model.config.pad_token_id = model.config.pad_token_id or 0
    model.train()
    if flags.get("gradient_checkpointing") == "true":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    sequences = args.batch_size * (1 if args.stage == "sft" else 2)  # rm and dpo: chosen and rejected side by side
    ids = torch.randint(100, model.config.vocab_size, (sequences, args.max_length), generator=torch.Generator().manual_seed(0))
    inside = ["(outside any module)"]
    for module in model.modules():
        name = type(module).__name__
        module.register_forward_pre_hook(lambda m, a, name=name: inside.append(name) and None)
        module.register_forward_hook(lambda m, a, o: inside.pop() and None)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    kept: collections.Counter = collections.Counter()

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen and storage.data_ptr() not in weights:
            seen.add(storage.data_ptr())
            kept[f"{inside[-1]} {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"] += storage.nbytes()
        return tensor

    start = time.perf_counter()
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", torch.bfloat16, enabled=flags.get("bf16") == "true"),
    ):
        out = model(input_ids=ids, labels=None if args.stage == "rm" else ids, use_cache=False)
        (out.logits.float().mean() if args.stage == "rm" else out.loss).item()
    result = {
        "forward_s": time.perf_counter() - start,
        "kept_gib": sum(kept.values()) / 2**30,
        "by_module": {name: round(size / 2**30, 3) for name, size in kept.most_common(12)},
        **peak_memory(),
    }
    print("BENCH " + json.dumps(result), flush=True)


def run_child(cmd: list[str], env: dict, what: str) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((out for out in proc.stdout.splitlines() if out.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"{what} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[len("BENCH ") :])


def long_case(args) -> dict:
    """Every variant of the long case, one after another, each in its own process."""
    results = {"stage": args.stage, "model": args.model, "batch_size": args.batch_size, "max_length": args.max_length, "steps": args.steps}
    results["cpus"], results["load_average_before"] = os.cpu_count(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = long_rows(args.stage, args.model, args.max_length)
        results["dialogues"] = len(rows)
        # Repeated until every step's batch is full: a short last batch would be a smaller one.
        rows = rows * -(-args.steps * args.batch_size // len(rows))
        data = Path(tmp) / "long.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        for name in args.variants:
            flags, env = VARIANTS[name]
            if args.explain:
                cmd = [sys.executable, __file__, "--explain", "--worker_variant", name, "--stage", args.stage, "--model", args.model]
                cmd += ["--batch_size", str(args.batch_size), "--max_length", str(args.max_length)]
                results[name] = run_child(cmd, {**os.environ, **env}, f"--explain {name}")
                continue
            given = {"model_name_or_path": args.model, "data_path": "LONG.jsonl", "output_dir": "OUT", "max_steps": str(args.steps)}
            given |= {"per_device_train_batch_size": str(args.batch_size), "max_length": str(args.max_length), "save_strategy": "no"}
            given |= {"report_to": "none", "disable_tqdm": "true", **({"eval_fraction": "0"} if args.stage == "rm" else {})}
            given |= {key: value.format(quarter=max(1, args.batch_size // 4)) for key, value in flags.items()}
            argv = [*STAGE_COMMAND[args.stage], *(word for key, value in given.items() for word in (f"--{key}", value))]
            shown = " ".join(f"{k}={v}" for k, v in env.items()) + " almost " + " ".join(argv)
            real = [str(data) if a == "LONG.jsonl" else str(Path(tmp) / name) if a == "OUT" else a for a in argv]
            cmd = [sys.executable, __file__, "--worker", "long", "--argv", json.dumps(real)]
            results[name] = {"command": shown.strip(), **run_child(cmd, {**os.environ, **env}, f"{args.stage} {name}")}
    results["load_average_after"] = os.getloadavg()
    return results


def worker(args) -> None:
    result = run_almost(args) if args.worker == "almost" else run_trl(args)
    result["pairs_per_s"] = args.steps * args.batch_size / result["train_runtime_s"]
    result.update(peak_memory())
    print("BENCH " + json.dumps(result), flush=True)


def short_case(args) -> dict:
    results = {"model": args.model, "pairs": args.pairs, "steps": args.steps, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_pairs(Path(tmp) / "pairs.jsonl", args.pairs)
        for name in ("trl", "almost"):
            cmd = [sys.executable, __file__, "--worker", name, "--data", str(data), "--output_dir", str(Path(tmp) / name)]
            cmd += ["--model", args.model, "--steps", str(args.steps), "--batch_size", str(args.batch_size)]
            cmd += ["--max_length", str(args.max_length)]
            results[name] = run_child(cmd, dict(os.environ), f"{name} run")
    results["ratio_pairs_per_s"] = results["almost"]["pairs_per_s"] / results["trl"]["pairs_per_s"]
    results["ratio_peak_rss"] = results["almost"]["peak_rss_mib"] / results["trl"]["peak_rss_mib"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["short", "long"], default="short")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=64, help="short case: synthetic pairs")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: 8 short, 3 long)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, help="tokens (default: 1024 short, 512 long)")
    parser.add_argument("--stage", choices=sorted(STAGE_COMMAND), default="rm", help="long case: the stage to train")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["baseline", "checkpointing"], help="long case")
    parser.add_argument("--explain", action="store_true", help="long case: what one forward pass keeps, instead of training")
    parser.add_argument("--worker", choices=["almost", "trl", "long"], help=argparse.SUPPRESS)
    parser.add_argument("--worker_variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--argv", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--output_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps is None:
        args.steps = 3 if args.case == "long" else 8
    if args.max_length is None:
        args.max_length = 512 if args.case == "long" or args.explain else 1024
    if args.worker == "long":
        long_worker(args)
    elif args.worker:
        worker(args)
    elif args.explain and args.worker_variant:
        kept_for_backward(args)
    else:
        print(json.dumps(long_case(args) if args.case == "long" else short_case(args), indent=2))


if __name__ == "__main__":
    main()
