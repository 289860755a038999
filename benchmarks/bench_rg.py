"""RG throughput: this project's generation vs the seed release's algorithm, in one run (by hand, not CI).

Both sides answer the same prompts under the same configuration with the same model and count the
same thing: tokens of the final (cut) answers per second of wall time.

- seed: fixed batches of 4 in file order, every sequence generated to --max_new_tokens, then cut at
  the next turn (what the original release did with --use_hf);
- almost: ``run_rg``'s path: the HF engine with prompts sorted by length, --batch_size per call, the
  shared demonstration prefix encoded once, and stop strings, so a batch ends when all its answers
  have reached the next turn.

``--cli_backends hf vllm`` also times the whole ``almost rg`` command (model load and engine start
included) for --cli_prompts prompts x 3 configurations, for sizing the demo.

    python benchmarks/bench_rg.py --num_prompts 8 --max_new_tokens 768   # the seed's limit for the faithful file
    python benchmarks/bench_rg.py --num_prompts 0 --cli_backends hf vllm --cli_prompts 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from almost.engines import Sampling
from almost.engines.hf import HFEngine
from almost.feedback import demos
from almost.feedback.pg import read_prompt_file
from almost.models import resolve_model

CLI_CONFIGURATIONS = [(demos.BETTER_DEMONSTRATIONS, 1), (demos.BETTER_DEMONSTRATIONS, 3), (demos.WORSE_DEMONSTRATIONS, 3)]


def seed_generate(engine: HFEngine, prompts: list[str], max_new_tokens: int, seed: int) -> list[str]:
    """Batches of 4 in the given order, no stop strings: a batch runs to max_new_tokens unless all rows end (EOS)."""
    import torch

    torch.manual_seed(seed)
    answers = []
    tok = engine.tokenizer
    for start in range(0, len(prompts), 4):
        enc = tok(prompts[start : start + 4], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = engine.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True,
                                        temperature=1.0, top_p=0.9, top_k=0, pad_token_id=tok.pad_token_id)  # fmt: skip
        answers += [demos.cut_answer(t) for t in tok.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)]
    return answers


def answer_tokens(engine: HFEngine, answers: list[str]) -> int:
    return sum(len(engine.tokenizer(a, add_special_tokens=False).input_ids) for a in answers)


def throughput(args) -> dict:
    model = resolve_model("smollm2-135m")
    engine = HFEngine(model.path, batch_size=args.batch_size)
    d = demos.load_demonstrations(args.prompt_file_path)
    queries = list(read_prompt_file(demos.SEED_PROMPTS).seeds[: args.num_prompts])
    prompts = [demos.few_shot_prompt(d, args.n_shot, [{"role": "user", "content": q}]) for q in queries]
    result = {"prompts": len(prompts), "configuration": f"{d.name}-{args.n_shot}shot", "max_new_tokens": args.max_new_tokens}
    for side in ("seed", "almost"):
        started = time.perf_counter()
        if side == "seed":
            answers = seed_generate(engine, prompts, args.max_new_tokens, args.seed)
        else:
            sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=args.max_new_tokens, stop=demos.ANSWER_STOP, seed=args.seed)
            answers = [demos.cut_answer(s[0]) for s in engine.generate(prompts, sampling)]
        seconds = time.perf_counter() - started
        tokens = answer_tokens(engine, answers)
        result[side] = {"seconds": round(seconds, 1), "answer_tokens": tokens, "tokens_per_s": round(tokens / seconds, 2)}
        print(side, result[side], flush=True)
    result["speedup"] = round(result["almost"]["tokens_per_s"] / result["seed"]["tokens_per_s"], 2)
    return result


def time_cli(backend: str, num_prompts: int, max_new_tokens: int) -> dict:
    queries = read_prompt_file(demos.SEED_PROMPTS).seeds[:num_prompts]
    with tempfile.TemporaryDirectory() as out:
        Path(out, "prompts.txt").write_text("".join(q + "\n" for q in queries))
        command = [sys.executable, "-m", "almost", "rg", "--backend", backend, "--output_dir", out, "--max_new_tokens", str(max_new_tokens)]
        # One call per configuration, as the demo's pipeline runs them (one model load each).
        started = time.perf_counter()
        for path, n_shot in CLI_CONFIGURATIONS:
            subprocess.run([*command, "--prompt_file_path", str(path), "--n_shot", str(n_shot)], check=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
        seconds = time.perf_counter() - started
        bad = sum(json.loads(line)["bad"] for f in Path(out).glob("*.jsonl") for line in f.read_text().splitlines())
    return {"backend": backend, "prompts": len(queries), "configurations": len(CLI_CONFIGURATIONS), "seconds": round(seconds, 1), "bad": bad}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_prompts", type=int, default=16, help="Prompts for the throughput comparison (0 skips it).")
    p.add_argument("--prompt_file_path", default=str(demos.BETTER_DEMONSTRATIONS))
    p.add_argument("--n_shot", type=int, default=1)
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=8, help="Prompts per call on the almost side (the seed used 4).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cli_backends", nargs="*", default=[], help="Also time `almost rg` for 3 configurations on these backends.")
    p.add_argument("--cli_prompts", type=int, default=20)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}
    if args.num_prompts:
        results["throughput"] = throughput(args)
    for backend in args.cli_backends:
        results[f"cli_{backend}"] = time_cli(backend, args.cli_prompts, args.max_new_tokens)
        print(results[f"cli_{backend}"], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
