"""RMSP throughput: N samples per engine call vs N separate calls, in one run (by hand, not CI).

Both modes run the same self-play (``run_rmsp``: policy answers, RM scoring, user simulator) on the
same prompts with the same loaded model; only the policy's sampling differs:

- per-call: one engine call per turn with ``Sampling(n=N)``: the prompt is encoded once and the N
  samples decode together (what ``almost rmsp`` does);
- separate: N engine calls with ``n=1`` per turn (what a loop over candidates would do).

Reported: wall seconds, assistant turns, and candidate answers per second; the ratio of the two.
It also times ``almost sft`` on the demonstrations of the per-call run, for sizing the demo.

    python benchmarks/bench_rmsp.py --reward_model_name_or_path RM --num_prompts 4 --num_candidates 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from almost.engines import Sampling, load_engine
from almost.feedback.demos import SEED_PROMPTS
from almost.models import resolve_model
from almost.selfplay import RMSPArguments, read_prompts, run_rmsp


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward_model_name_or_path", required=True)
    parser.add_argument("--model_name_or_path", default="smollm2-135m")
    parser.add_argument("--prompts_path", default=None, help="default: the first prompts of the PG seed file")
    parser.add_argument("--num_prompts", type=int, default=4)
    parser.add_argument("--num_candidates", type=int, default=4)
    parser.add_argument("--max_turns", type=int, default=2)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--n_shot", type=int, default=1, help="demonstrations in the policy's prompt")
    parser.add_argument("--user_n_shot", type=int, default=2, help="examples in the user simulator's prompt")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--sft_epochs", type=float, default=1.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_rmsp."))
    prompts_path = args.prompts_path
    if prompts_path is None:
        prompts_path = work / "prompts.txt"
        # The seed file's first line is an instruction, not a prompt.
        prompts = [p for p in read_prompts(SEED_PROMPTS) if not p.startswith("###")]
        prompts_path.write_text("\n".join(prompts[: args.num_prompts]) + "\n")
    model = resolve_model(args.model_name_or_path)
    engine = load_engine("hf", model, batch_size=args.batch_size)
    results = {}
    for mode in ("per_call", "separate"):
        config = RMSPArguments(
            output_dir=str(work / mode),
            prompts_path=str(prompts_path),
            reward_model_name_or_path=args.reward_model_name_or_path,
            model_name_or_path=model.path,
            num_candidates=args.num_candidates,
            max_turns=args.max_turns,
            max_new_tokens=args.max_new_tokens,
            n_shot=args.n_shot,
            user_n_shot=args.user_n_shot,
            max_prompts=args.num_prompts,
            batch_size=args.batch_size,
        )
        policy = engine if mode == "per_call" else SeparateCalls(engine)
        start = time.perf_counter()
        summary = run_rmsp(config, policy=policy, user=engine)
        seconds = time.perf_counter() - start
        candidates = sum(t["dialogues"] for t in summary["per_turn"]) * args.num_candidates
        results[mode] = {
            "seconds": round(seconds, 1),
            "assistant_turns": summary["assistant_turns"],
            "candidates": candidates,
            "candidates_per_s": round(candidates / seconds, 3),
        }
        print(mode, results[mode], flush=True)
    results["speedup_per_call_vs_separate"] = round(results["per_call"]["candidates_per_s"] / results["separate"]["candidates_per_s"], 2)

    from almost.sft import SFTArguments, run_sft

    demos = work / "per_call" / "demonstrations.jsonl"
    if demos.read_text().strip():
        start = time.perf_counter()
        sft = run_sft(
            SFTArguments(
                model_name_or_path=model.path, data_path=str(demos), output_dir=str(work / "sft"),
                num_train_epochs=args.sft_epochs, per_device_train_batch_size=4, report_to="none",
            )  # fmt: skip
        )
        results["sft"] = {"seconds": round(time.perf_counter() - start, 1), "steps": sft["train"]["global_step"], "dialogues": sft["data"]["dialogues"]}
    results["settings"] = vars(args)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
