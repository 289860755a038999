"""RMSP throughput: N samples per engine call vs N separate calls, in one run (by hand, not CI).

Both modes run the same self-play (``run_rmsp``: policy answers, RM scoring, user simulator) on the
same prompts with the same loaded model; only the policy's sampling differs:

- per-call: one engine call per turn with ``Sampling(n=N)``: the prompt is encoded once and the N
  samples decode together (what ``almost rmsp`` does);
- separate: N engine calls with ``n=1`` per turn (what a loop over candidates would do).

The whole loop's candidates/s bounds what N per call can gain, since the user turns and the RM scoring
cost the same in both modes; so the policy's engine calls are also timed on their own (``policy_seconds``,
``policy_candidates_per_s``, and the ratio of those: what N per call gains where it acts).

Both modes run on each backend named by ``--backend`` (default: hf, and vllm where it is installed),
on one engine per backend loaded once and shared by the two modes (policy and user simulator are
the same model, as ``almost rmsp`` shares them). Per backend: wall seconds, assistant turns,
candidate answers per second, the ratio of the two modes, and the engine's start (model load;
vLLM's engine start), which neither mode's seconds include. A note is printed when the machine's
load average is above 1: figures are then not trustworthy.
It also times ``almost sft`` on the demonstrations of the first backend's per-call run, for sizing
the demo (``--sft_epochs 0`` skips it).

    python benchmarks/bench_rmsp.py --reward_model_name_or_path RM --num_prompts 4 --num_candidates 4
    python benchmarks/bench_rmsp.py --reward_model_name_or_path RM --backend hf   # without vLLM
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from almost.allocator import reexec_with_tcmalloc, tcmalloc_loaded
from almost.config import EngineArguments
from almost.engines import BACKENDS, Sampling, load_engine
from almost.models import resolve_model
from almost.policy.selfplay import RMSPArguments, run_rmsp
from almost.readers import read_prompts
from almost.shipped import SEED_PROMPTS


class SeparateCalls:
    """Turns one call for N samples into N calls for one sample each (other seeds, same prompts)."""

    name = "separate"

    def __init__(self, engine):
        self.engine = engine

    def generate(self, prompts, sampling: Sampling, desc=None):
        columns = [
            self.engine.generate(prompts, dataclasses.replace(sampling, n=1, seed=(sampling.seed or 0) + k), desc)
            for k in range(sampling.n)
        ]
        return [[column[i][0] for column in columns] for i in range(len(prompts))]


class TimedCalls:
    """Passes calls through to an engine and adds up the seconds they take."""

    def __init__(self, engine):
        self.engine, self.seconds = engine, 0.0

    def generate(self, prompts, sampling: Sampling, desc=None):
        started = time.perf_counter()
        try:
            return self.engine.generate(prompts, sampling, desc)
        finally:
            self.seconds += time.perf_counter() - started


def load_note(when: str) -> str | None:
    """A warning when other work shares the machine (1-minute load average above 1)."""
    load = os.getloadavg()[0]
    if load > 1:
        return f"load average {load:.2f} > 1 {when}: other work shares this machine, so these figures are not trustworthy"
    return None


def main() -> None:
    reexec_with_tcmalloc([sys.executable, *sys.argv])  # what `almost rmsp` runs under (allocator.py); both modes alike
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward_model_name_or_path", required=True)
    parser.add_argument("--model_name_or_path", default="smollm2-135m")
    parser.add_argument(
        "--backend",
        nargs="+",
        choices=BACKENDS,
        default=None,
        help="engines to compare the two modes on (default: hf, and vllm where it is installed)",
    )
    parser.add_argument("--prompts_path", default=None, help="default: the first prompts of the PG seed file")
    parser.add_argument("--num_prompts", type=int, default=4)
    parser.add_argument("--num_candidates", type=int, default=4)
    parser.add_argument("--max_turns", type=int, default=2)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--n_shot", type=int, default=1, help="demonstrations in the policy's prompt")
    parser.add_argument("--user_n_shot", type=int, default=2, help="examples in the user simulator's prompt")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sft_epochs", type=float, default=1.0, help="0 skips the SFT timing")
    args = parser.parse_args()
    backends = args.backend or ["hf", *(["vllm"] if importlib.util.find_spec("vllm") else [])]

    work = Path(tempfile.mkdtemp(prefix="bench_rmsp."))
    prompts_path = args.prompts_path
    if prompts_path is None:
        prompts_path = work / "prompts.txt"
        # The seed file's first line is an instruction, not a prompt.
        prompts = [p for p in read_prompts(SEED_PROMPTS) if not p.startswith("###")]
        prompts_path.write_text("\n".join(prompts[: args.num_prompts]) + "\n")
    model = resolve_model(args.model_name_or_path)
    results = {
        "allocator": "tcmalloc" if tcmalloc_loaded() else "the C library's malloc",
        "notes": [n for n in [load_note("at the start")] if n],
    }
    for backend in backends:
        started = time.perf_counter()
        engine = load_engine(EngineArguments(backend=backend, batch_size=args.batch_size, seed=args.seed), model)
        results[backend] = {"start_seconds": round(time.perf_counter() - started, 1)}
        # Untimed: a fresh engine's first call pays one-time costs that would land on the first mode.
        engine.generate(["Human: Hello.\n\nAssistant:"], Sampling(max_new_tokens=1, seed=0))
        for mode in ("per_call", "separate"):
            config = RMSPArguments(
                output_dir=str(work / backend / mode),
                prompts_path=str(prompts_path),
                reward_model_name_or_path=args.reward_model_name_or_path,
                model_name_or_path=model.path,
                backend=backend,
                num_candidates=args.num_candidates,
                max_turns=args.max_turns,
                max_new_tokens=args.max_new_tokens,
                n_shot=args.n_shot,
                user_n_shot=args.user_n_shot,
                max_prompts=args.num_prompts,
                batch_size=args.batch_size,
                seed=args.seed,
            )
            policy = TimedCalls(engine if mode == "per_call" else SeparateCalls(engine))
            start = time.perf_counter()
            summary = run_rmsp(config, policy=policy, user=engine)
            seconds = time.perf_counter() - start
            candidates = sum(t["dialogues"] for t in summary["per_turn"]) * args.num_candidates
            results[backend][mode] = {
                "seconds": round(seconds, 1),
                "assistant_turns": summary["assistant_turns"],
                "candidates": candidates,
                "candidates_per_s": round(candidates / seconds, 3),
                "policy_seconds": round(policy.seconds, 1),
                "policy_candidates_per_s": round(candidates / policy.seconds, 3),
            }
            print(backend, mode, results[backend][mode], flush=True)
        for key, rate in (
            ("speedup_per_call_vs_separate", "candidates_per_s"),
            ("policy_speedup_per_call_vs_separate", "policy_candidates_per_s"),
        ):
            results[backend][key] = round(results[backend]["per_call"][rate] / results[backend]["separate"][rate], 2)
        # One engine at a time: vLLM's CPU KV cache is sized from the memory free when it starts.
        del engine, policy
        gc.collect()

    from almost.policy.sft import SFTArguments, run_sft

    demos = work / backends[0] / "per_call" / "demonstrations.jsonl"
    if args.sft_epochs > 0 and demos.read_text().strip():
        start = time.perf_counter()
        sft = run_sft(
            SFTArguments(
                model_name_or_path=model.path,
                data_path=str(demos),
                output_dir=str(work / "sft"),
                num_train_epochs=args.sft_epochs,
                per_device_train_batch_size=4,
                report_to="none",
            )
        )
        results["sft"] = {
            "seconds": round(time.perf_counter() - start, 1),
            "steps": sft["train"]["global_step"],
            "dialogues": sft["data"]["dialogues"],
        }
    results["settings"] = vars(args)
    results["notes"] += [n for n in [load_note("at the end")] if n]
    print(json.dumps(results, indent=2))
    for backend in backends:
        r = results[backend]
        print(
            f"{backend}: N per call {r['per_call']['candidates_per_s']} candidates/s, N calls {r['separate']['candidates_per_s']}: "
            f"{r['speedup_per_call_vs_separate']}x; the policy's calls alone {r['per_call']['policy_candidates_per_s']} "
            f"vs {r['separate']['policy_candidates_per_s']}: {r['policy_speedup_per_call_vs_separate']}x "
            f"(engine start {r['start_seconds']} s, not in either)"
        )
    for note in results["notes"]:
        print(f"NOTE: {note}")


if __name__ == "__main__":
    main()
