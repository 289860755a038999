"""RG throughput: the seed release's algorithm vs almost's HF and vLLM engines, in one run (by hand, not CI).

All sides answer the same prompts (the first ``--num_prompts`` queries of the PG seed file) under the
same configuration (default: faithful 2-shot) with the same model (SmolLM2-135M) and sampling
(temperature 1.0, top_p 0.9, seeded), cut every answer with the same ``demos.cut_answer``, and count
the same thing: tokens of the final cut answers per second of wall time.

- seed: HF ``generate``, fixed batches of 4 in file order, every sequence generated to
  --max_new_tokens, then cut at the next turn (what the original release did with --use_hf);
- hf: ``almost rg``'s path on the HF engine: chunks of --chunk_size prompts seeded as ``run_rg``
  seeds them, prompts sorted by length, --batch_size per batch, the shared demonstration prefix
  encoded once, and stop strings, so a batch ends when all its answers have reached the next turn;
- vllm: the same path on the vLLM engine (its own scheduling, all of a chunk's prompts at once).

``--seed_prompts K`` lets the seed side answer only the first K prompts: it runs fixed batches of 4
to the token limit, so its tokens/s is a per-batch rate that does not depend on how many batches run
(only on which answers they hold), and at 768 new tokens 64 prompts take ~1.5 hours on the 2-core
machine. Every side reports how many prompts it answered.

Ratios are given against the seed side twice: generation only, and with the start included — the
model load for the seed and hf sides (one load, shared by both and counted for each), the engine
start for vllm (which includes its model load).

**Decode ceiling** (vllm side). Before any engine starts, the benchmark measures this machine with
the thread count vLLM's CPU workers use (all cores, see engines/vllm.py):

- matmul throughput F (GFLOP/s): best of a few ``torch.matmul`` of the model's shapes (rows x
  hidden @ hidden x intermediate and hidden x vocab, rows = the largest decode batch and 512), in
  the dtype vLLM runs in here (``--dtype auto``: fp32, or bf16 on CPUs with native bf16 such as AMX);
- memory bandwidth W (GB/s): best of a few passes of a tensor copy (bytes read + written) and a sum
  (bytes read) over a 256 MiB fp32 tensor; the higher of the two is used.

With P the model's parameters (counted from its config, tied embeddings once), b the bytes per
weight in vLLM's dtype (fp32 on CPUs without native bf16: 4; bf16: 2) and B the rows per decode step, a decode step must read every
weight once and each token costs 2·P FLOPs, so

    ceiling tokens/s = min(W / (P·b) · B,  F / (2·P))

B is the mean number of rows per decode step the vllm side actually ran: its generated tokens over
the sum, across chunks, of the chunk's longest completion (each chunk's requests start together, so
a chunk takes as many decode steps as its longest completion). Achieved decode tokens/s = (generated
tokens − one per request, which the prefill step samples) / (full pass seconds − prefill pass
seconds), where the prefill pass is the same chunks again with ``max_tokens=1`` (prefix cache
cleared before each pass, so both passes encode the same prompts the same way). This subtraction is
approximate: in the full pass prefills of later prompts interleave with decode steps of earlier ones.

What the bound ignores, so the true ceiling is lower and the fraction somewhat understated: KV cache
reads (they grow with context length: ~700 prompt tokens here), attention FLOPs, sampling and
scheduling overhead. It also counts the embedding matrix as read once per step (as the tied lm_head).

Figures taken with the machine's load average above 1 are flagged in the output: they are not
trustworthy.

    python benchmarks/bench_rg.py --max_new_tokens 128          # 64 prompts, faithful 2-shot, all three sides
    python benchmarks/bench_rg.py --max_new_tokens 768 --seed_prompts 8 --sides seed vllm   # the seed's limit for the faithful file
    python benchmarks/bench_rg.py --num_prompts 4 --max_new_tokens 16 --sides seed hf   # a quick check
    python benchmarks/bench_rg.py --num_prompts 0 --cli_backends hf vllm --cli_prompts 20
    python benchmarks/bench_rg.py --sides vllm --chunk_size 64 --profile 25   # where vLLM's time goes
    python benchmarks/bench_rg.py --prefix_cache_cost 3 --num_prompts 256 --chunk_size 64   # what repeatable seeded calls cost

**Prefix cache across calls** (``--prefix_cache_cost R``, vllm only, instead of the comparison above).
A seeded call starts from a prefix cache that depends on the call alone, so that its samples do not
depend on the calls before it (engines/vllm.py). This times RG's chunks on one engine three ways, R
times each in rotating order, every pass starting from an empty cache: ``primed`` (the engine as it
is: the cache emptied, then the prompts' shared prefix cached in a pass of its own), ``emptied`` (the
cache emptied, nothing cached first) and ``kept`` (the cache kept across calls, so later chunks reuse
the demonstrations cached by earlier ones: fastest, not repeatable). It reports the median seconds
of each (wall and CPU: the engine runs in this process), their ratios to ``kept``, whether each way
repeated its answers exactly across passes, and how many answers differ from the engine's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from almost import shipped
from almost.allocator import reexec_with_tcmalloc, tcmalloc_loaded
from almost.config import EngineArguments
from almost.engines import Sampling, load_engine
from almost.engines.vllm import vllm_dtype
from almost.feedback import demos
from almost.feedback.pg import read_prompt_file
from almost.feedback.rg import Configuration, chunk_seed
from almost.models import resolve_model
from almost.readers import read_jsonl

CLI_CONFIGURATIONS = [(shipped.BETTER_DEMONSTRATIONS, 1), (shipped.BETTER_DEMONSTRATIONS, 3), (shipped.WORSE_DEMONSTRATIONS, 3)]
SIDES = ("seed", "hf", "vllm")
MEASURE_REPEATS = 5


def load_note(when: str) -> str | None:
    """A warning when other work shares the machine (1-minute load average above 1)."""
    load = os.getloadavg()[0]
    if load > 1:
        return f"load average {load:.2f} > 1 {when}: other work shares this machine, so these figures are not trustworthy"
    return None


def seed_generate(engine, prompts: list[str], max_new_tokens: int, seed: int) -> list[str]:
    """Batches of 4 in the given order, no stop strings: a batch runs to max_new_tokens unless all rows end (EOS)."""
    import torch

    torch.manual_seed(seed)
    answers = []
    tok = engine.tokenizer
    for start in range(0, len(prompts), 4):
        enc = tok(prompts[start : start + 4], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = engine.model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_p=0.9, top_k=0, pad_token_id=tok.pad_token_id
            )
        answers += [demos.cut_answer(t) for t in tok.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)]
    return answers


def rg_generate(engine, configuration: Configuration, queries: list[str], args, max_new_tokens: int) -> list[str]:
    """``run_rg``'s generation: one engine call per chunk, seeded per chunk; answers cut as RG cuts them."""
    answers = []
    for chunk_index, start in enumerate(range(0, len(queries), args.chunk_size)):
        sampling = Sampling(
            temperature=1.0,
            top_p=0.9,
            max_new_tokens=max_new_tokens,
            stop=demos.ANSWER_STOP,
            seed=chunk_seed(args.seed, configuration.name, chunk_index),
        )
        prompts = [configuration.prompt(q) for q in queries[start : start + args.chunk_size]]
        answers += [demos.cut_answer(s[0]) for s in engine.generate(prompts, sampling)]
    return answers


def warm_up(engine) -> None:
    """One untimed one-token call: the first call of a fresh engine pays one-time costs (kernels, buffers)
    that would otherwise land on whichever side or pass runs first."""
    engine.generate(["Human: Hello.\n\nAssistant:"], Sampling(max_new_tokens=1, seed=0))


def measure_machine(threads: int, shapes: list[tuple[int, int, int]], dtype: str = "float32") -> dict:
    """Matmul GFLOP/s in ``dtype`` (best over ``shapes`` and repeats) and memory GB/s (copy and sum), on ``threads`` threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        matmul = {}
        torch_dtype = getattr(torch, dtype)
        for m, k, n in shapes:
            a, b = torch.randn(m, k, dtype=torch_dtype), torch.randn(k, n, dtype=torch_dtype)
            torch.matmul(a, b)  # warm-up: first calls pick kernels and touch the pages
            best = min(_timed(lambda a=a, b=b: torch.matmul(a, b)) for _ in range(MEASURE_REPEATS))
            matmul[f"{m}x{k}x{n}"] = round(2 * m * k * n / best / 1e9, 1)
        src = torch.randn(64 * 2**20)  # 256 MiB of fp32, far above any cache
        dst = torch.empty_like(src)
        nbytes = src.numel() * src.element_size()
        dst.copy_(src)
        copy = 2 * nbytes / min(_timed(lambda: dst.copy_(src)) for _ in range(MEASURE_REPEATS)) / 1e9
        total = nbytes / min(_timed(lambda: src.sum()) for _ in range(MEASURE_REPEATS)) / 1e9
    finally:
        torch.set_num_threads(before)
    return {
        "threads": threads,
        "allocator": "tcmalloc" if tcmalloc_loaded() else "the C library's malloc",
        "matmul_dtype": dtype,
        "matmul_gflops_by_shape": matmul,
        "matmul_gflops": max(matmul.values()),
        "copy_gb_s": round(copy, 1),
        "sum_gb_s": round(total, 1),
        # The higher one gives the higher (stricter) ceiling.
        "bandwidth_gb_s": round(max(copy, total), 1),
    }


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def model_shape(model_path: str) -> dict:
    """Parameter count (tied weights once, built on the meta device: nothing allocated) and the matmul sizes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden": config.hidden_size,
        "intermediate": getattr(config, "intermediate_size", 4 * config.hidden_size),
        "vocab": config.vocab_size,
    }


def decode_ceiling(machine: dict, parameters: int, bytes_per_weight: int, rows: float) -> dict:
    """min(W / (P·b) · B, F / (2·P)) tokens/s; see the module docstring."""
    memory_bound = machine["bandwidth_gb_s"] * 1e9 / (parameters * bytes_per_weight) * rows
    compute_bound = machine["matmul_gflops"] * 1e9 / (2 * parameters)
    return {
        "rows_per_step": round(rows, 2),
        "memory_bound_tokens_per_s": round(memory_bound, 1),
        "compute_bound_tokens_per_s": round(compute_bound, 1),
        "ceiling_tokens_per_s": round(min(memory_bound, compute_bound), 1),
        "bound_by": "memory" if memory_bound < compute_bound else "compute",
    }


def run_vllm_side(model, configuration: Configuration, queries: list[str], args) -> tuple[dict, dict]:
    """Full pass (the answers), then a prefill-only pass (max_tokens=1) to separate decode time."""
    engine = load_engine(EngineArguments(backend="vllm", seed=args.seed, kv_cache_gib=args.kv_cache_gib), model)
    # Keep vLLM's own outputs: they carry the generated token ids (the engine returns text only).
    outputs = []
    generate = engine.llm.generate

    def recording(*a, **kw):
        result = generate(*a, **kw)
        outputs.append(result)
        return result

    engine.llm.generate = recording
    warm_up(engine)
    passes = {}
    for name, max_new_tokens in (("full", args.max_new_tokens), ("prefill", 1)):
        engine.llm.reset_prefix_cache()
        outputs.clear()
        started = time.perf_counter()
        answers = rg_generate(engine, configuration, queries, args, max_new_tokens)
        seconds = time.perf_counter() - started
        lengths = [[len(c.token_ids) for c in out.outputs] for chunk in outputs for out in chunk]
        chunk_longest = [max(len(c.token_ids) for out in chunk for c in out.outputs) for chunk in outputs]
        passes[name] = {
            "answers": answers,
            "seconds": seconds,
            "generated": sum(map(sum, lengths)),
            "requests": sum(map(len, lengths)),
            "steps": sum(chunk_longest),
        }
    profiled = profile_pass(engine, configuration, queries, args) if args.profile else None
    full, prefill = passes["full"], passes["prefill"]
    model_config = engine.llm.llm_engine.model_config
    decode_seconds = full["seconds"] - prefill["seconds"]
    decode_tokens = full["generated"] - full["requests"]
    decode = {
        "generated_tokens": full["generated"],
        "prefill_pass_seconds": round(prefill["seconds"], 1),
        "decode_seconds": round(decode_seconds, 1),
        "decode_tokens": decode_tokens,
        "decode_tokens_per_s": round(decode_tokens / decode_seconds, 2) if decode_seconds > 0 else None,
        "rows_per_step": full["generated"] / max(1, full["steps"]),
        "dtype": str(model_config.dtype).removeprefix("torch."),
        "bytes_per_weight": _element_size(model_config.dtype),
    }
    if profiled:
        decode["profile"] = profiled
    side = {
        "prompts": len(queries),
        "answers": full["answers"],
        "seconds": full["seconds"],
        "start_seconds": engine.start_seconds,
        "tokenizer": engine.tokenizer,
    }
    del engine
    gc.collect()
    return side, decode


def prefix_cache_cost(args) -> dict:
    """Seconds of RG's chunks with the engine's repeatable prefix cache (primed), the cache only emptied,
    and the cache kept across calls (module docstring); one engine, rotating order, each pass from an
    empty cache."""
    import statistics

    model = resolve_model("smollm2-135m")
    configuration = Configuration(model.short_name, demos.load_demonstrations(args.prompt_file_path), args.n_shot)
    queries = list(read_prompt_file(shipped.SEED_PROMPTS).seeds[: args.num_prompts])
    notes = [n for n in [load_note("at the start")] if n]
    engine = load_engine(EngineArguments(backend="vllm", seed=args.seed, kv_cache_gib=args.kv_cache_gib), model)
    warm_up(engine)
    primed = engine.cache_shared_prefix_only
    # What the engine does before each seeded call, per way.
    ways = {"primed": primed, "emptied": lambda prompts: engine.llm.reset_prefix_cache(), "kept": lambda prompts: None}
    names = list(ways)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    # The engine core runs in this process (engines/vllm.py): its CPU time is the work done, which
    # other jobs on the machine inflate less than the wall time.
    cpu_seconds: dict[str, list[float]] = {name: [] for name in names}
    answers: dict[str, list[list[str]]] = {name: [] for name in names}
    for repeat in range(args.prefix_cache_cost):
        for name in names[repeat % 3 :] + names[: repeat % 3]:
            engine.llm.reset_prefix_cache()
            engine.cache_shared_prefix_only = ways[name]
            started, cpu_started = time.perf_counter(), time.process_time()
            answers[name].append(rg_generate(engine, configuration, queries, args, args.max_new_tokens))
            seconds[name].append(time.perf_counter() - started)
            cpu_seconds[name].append(time.process_time() - cpu_started)
            print(f"prefix cache {name}: {seconds[name][-1]:.1f} s, {cpu_seconds[name][-1]:.1f} CPU-s", flush=True)
    engine.cache_shared_prefix_only = primed
    median = {name: statistics.median(values) for name, values in seconds.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu_seconds.items()}
    notes += [n for n in [load_note("at the end")] if n]
    return {
        "prompts": len(queries),
        "configuration": configuration.name,
        "chunk_size": args.chunk_size,
        "chunks": -(-len(queries) // args.chunk_size),
        "max_new_tokens": args.max_new_tokens,
        "dtype": str(engine.llm.llm_engine.model_config.dtype).removeprefix("torch."),
        "repeats": args.prefix_cache_cost,
        "seconds": {name: [round(v, 1) for v in values] for name, values in seconds.items()},
        "median_seconds": {name: round(v, 1) for name, v in median.items()},
        "time_vs_kept": {name: round(median[name] / median["kept"], 3) for name in names},
        "cpu_seconds": {name: [round(v, 1) for v in values] for name, values in cpu_seconds.items()},
        "cpu_time_vs_kept": {name: round(median_cpu[name] / median_cpu["kept"], 3) for name in names},
        "repeats_exactly": {name: all(a == runs[0] for a in runs) for name, runs in answers.items()},
        "answers_differing_from_primed": {
            name: sum(a != b for a, b in zip(answers["primed"][0], runs[0])) for name, runs in answers.items() if name != "primed"
        },
        "notes": notes,
    }


def profile_pass(engine, configuration: Configuration, queries: list[str], args) -> dict:
    """Where a full pass's time goes: one more full pass under torch.profiler (CPU ops).

    vLLM's engine core runs in this process (engines/vllm.py), so its model, attention and sampling
    ops are all seen. An op's share is its self time over the pass's wall time (torch ops run on the
    calling thread; OpenMP spreads an op's work over the cores inside it); ``outside_ops`` is the
    share of the wall time the calling thread spent in no op at all (Python: scheduling, input
    preparation, detokenizing). The profiler's own cost inflates the pass (its ``seconds`` is not
    the benchmark's figure).
    """
    from torch.profiler import ProfilerActivity, profile

    engine.llm.reset_prefix_cache()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        started = time.perf_counter()
        rg_generate(engine, configuration, queries, args, args.max_new_tokens)
        seconds = time.perf_counter() - started
    events = profiler.key_averages()
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [
        {
            "op": e.key,
            "calls": e.count,
            "self_seconds": round(e.self_cpu_time_total / 1e6, 2),
            "share": round(e.self_cpu_time_total / 1e6 / seconds, 3),
        }
        for e in ranked[: args.profile]
    ]
    in_ops = sum(e.self_cpu_time_total for e in events) / 1e6
    profiled = {"seconds": round(seconds, 1), "outside_ops": round(1 - in_ops / seconds, 3), "top_ops": ops}
    print("profile", json.dumps(profiled, indent=1), flush=True)
    return profiled


def _element_size(dtype) -> int:
    import torch

    return torch.empty(0, dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 2


def throughput(args) -> dict:
    model = resolve_model("smollm2-135m")
    configuration = Configuration(model.short_name, demos.load_demonstrations(args.prompt_file_path), args.n_shot)
    queries = list(read_prompt_file(shipped.SEED_PROMPTS).seeds[: args.num_prompts])
    result = {
        "prompts": len(queries),
        "configuration": configuration.name,
        "max_new_tokens": args.max_new_tokens,
        "sampling": {"temperature": 1.0, "top_p": 0.9, "seed": args.seed},
        "chunk_size": args.chunk_size,
        "hf_batch_size": args.batch_size,
        "sides": args.sides,
    }
    notes = [n for n in [load_note("at the start")] if n]
    machine = shape = None
    if "vllm" in args.sides:
        import torch

        shape = model_shape(model.path)
        rows = min(len(queries), args.chunk_size)
        # vLLM's CPU workers bind one OpenMP thread per core (VLLM_CPU_OMP_THREADS_BIND, engines/vllm.py).
        machine = measure_machine(
            os.cpu_count() or torch.get_num_threads(),
            [(r, shape["hidden"], n) for r in (rows, 512) for n in (shape["intermediate"], shape["vocab"])],
            vllm_dtype("auto", on_gpu=False),
        )
        result["machine"] = machine
        print("machine", machine, flush=True)

    sides: dict[str, dict] = {}
    tokenizer = None
    if {"seed", "hf"} & set(args.sides):
        import torch

        started = time.perf_counter()
        engine = load_engine(EngineArguments(backend="hf", batch_size=args.batch_size), model)
        load_seconds = time.perf_counter() - started
        tokenizer = engine.tokenizer
        warm_up(engine)
        for side in ("seed", "hf"):
            if side in args.sides:
                started = time.perf_counter()
                if side == "seed":
                    side_queries = queries[: args.seed_prompts or None]
                    answers = seed_generate(engine, [configuration.prompt(q) for q in side_queries], args.max_new_tokens, args.seed)
                else:
                    side_queries = queries
                    answers = rg_generate(engine, configuration, queries, args, args.max_new_tokens)
                sides[side] = {
                    "prompts": len(side_queries),
                    "answers": answers,
                    "seconds": time.perf_counter() - started,
                    "start_seconds": load_seconds,
                    "threads": torch.get_num_threads(),
                }
                _report(side, sides[side], tokenizer)
        del engine
        gc.collect()
    if "vllm" in args.sides:
        sides["vllm"], decode = run_vllm_side(model, configuration, queries, args)
        vllm_tokenizer = sides["vllm"].pop("tokenizer")
        tokenizer = vllm_tokenizer if tokenizer is None else tokenizer
        _report("vllm", sides["vllm"], tokenizer)
        ceiling = decode_ceiling(machine, shape["parameters"], decode["bytes_per_weight"], decode["rows_per_step"])
        decode["rows_per_step"] = round(decode["rows_per_step"], 2)
        fraction = decode["decode_tokens_per_s"] / ceiling["ceiling_tokens_per_s"] if decode["decode_tokens_per_s"] else None
        result["decode_ceiling"] = {
            "parameters": shape["parameters"],
            **decode,
            **ceiling,
            "fraction_of_ceiling": round(fraction, 3) if fraction is not None else None,
        }

    for name, side in sides.items():
        answers = side.pop("answers")
        tokens = sum(len(tokenizer(a, add_special_tokens=False).input_ids) for a in answers)
        side.update(
            answer_tokens=tokens,
            seconds=round(side["seconds"], 1),
            start_seconds=round(side["start_seconds"], 1),
            tokens_per_s=round(tokens / side["seconds"], 2),
            tokens_per_s_with_start=round(tokens / (side["seconds"] + side["start_seconds"]), 2),
        )
        result[name] = side
    if "seed" in sides:
        for name in ("hf", "vllm"):
            if name in sides:
                result[f"{name}_vs_seed"] = round(sides[name]["tokens_per_s"] / sides["seed"]["tokens_per_s"], 2)
                result[f"{name}_vs_seed_with_start"] = round(
                    sides[name]["tokens_per_s_with_start"] / sides["seed"]["tokens_per_s_with_start"], 2
                )
    notes += [n for n in [load_note("at the end")] if n]
    result["notes"] = notes
    return result


def _report(name: str, side: dict, tokenizer) -> None:
    tokens = sum(len(tokenizer(a, add_special_tokens=False).input_ids) for a in side["answers"])
    print(f"{name}: {tokens} answer tokens in {side['seconds']:.1f} s (start {side['start_seconds']:.1f} s)", flush=True)


def table(result: dict) -> str:
    """The figures of ``throughput`` as a small text table."""
    lines = [
        f"{result['prompts']} prompts, {result['configuration']}, {result['max_new_tokens']} new tokens",
        (
            f"{'side':6} {'prompts':>7} {'tokens':>7} {'gen s':>8} {'start s':>8} {'tok/s':>8} {'tok/s+start':>12} "
            f"{'x seed':>7} {'x seed+start':>13}"
        ),
    ]
    for name in SIDES:
        if name in result:
            s = result[name]
            ratio = result.get(f"{name}_vs_seed", 1.0 if name == "seed" else "")
            ratio_start = result.get(f"{name}_vs_seed_with_start", 1.0 if name == "seed" else "")
            lines.append(
                f"{name:6} {s.get('prompts', result['prompts']):>7} {s['answer_tokens']:>7} {s['seconds']:>8} "
                f"{s['start_seconds']:>8} {s['tokens_per_s']:>8} "
                f"{s['tokens_per_s_with_start']:>12} {ratio:>7} {ratio_start:>13}"
            )
    lines.append("start: model load (seed, hf: one load, counted for each) or engine start (vllm, model load included)")
    if "decode_ceiling" in result:
        d = result["decode_ceiling"]
        lines.append(
            f"vllm decode: {d['decode_tokens_per_s']} tok/s at {d['rows_per_step']} rows/step; ceiling {d['ceiling_tokens_per_s']} tok/s "
            f"({d['bound_by']}-bound: memory {d['memory_bound_tokens_per_s']}, compute {d['compute_bound_tokens_per_s']}) "
            f"→ {d['fraction_of_ceiling']} of the ceiling"
        )
    lines += [f"NOTE: {n}" for n in result["notes"]]
    return "\n".join(lines)


def time_cli(backend: str, num_prompts: int, max_new_tokens: int) -> dict:
    queries = read_prompt_file(shipped.SEED_PROMPTS).seeds[:num_prompts]
    with tempfile.TemporaryDirectory() as out:
        Path(out, "prompts.txt").write_text("".join(q + "\n" for q in queries))
        command = [sys.executable, "-m", "almost", "rg", "--backend", backend, "--output_dir", out, "--max_new_tokens", str(max_new_tokens)]
        # One call per configuration, as the demo's pipeline runs them (one model load each).
        started = time.perf_counter()
        for path, n_shot in CLI_CONFIGURATIONS:
            subprocess.run(
                [*command, "--prompt_file_path", str(path), "--n_shot", str(n_shot)], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
            )
        seconds = time.perf_counter() - started
        bad = sum(row["bad"] for f in Path(out).glob("*.jsonl") for row in read_jsonl(f))
    return {
        "backend": backend,
        "prompts": len(queries),
        "configurations": len(CLI_CONFIGURATIONS),
        "seconds": round(seconds, 1),
        "bad": bad,
    }


def main() -> None:
    reexec_with_tcmalloc([sys.executable, *sys.argv])  # what `almost rg` runs under (allocator.py); both sides alike
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_prompts", type=int, default=64, help="Prompts for the throughput comparison (0 skips it).")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES), help="Which sides to run (ratios need seed).")
    p.add_argument(
        "--seed_prompts",
        type=int,
        default=None,
        help="The seed side answers only the first K of the prompts (default: all); its rate does not depend on K, see the docstring.",
    )
    p.add_argument("--prompt_file_path", default=str(shipped.BETTER_DEMONSTRATIONS))
    p.add_argument("--n_shot", type=int, default=2)
    p.add_argument("--max_new_tokens", type=int, default=128, help="Run at 128 and at 768 (the seed's limit for the faithful file).")
    p.add_argument("--batch_size", type=int, default=8, help="Prompts per batch on the hf side (the seed used 4).")
    p.add_argument("--chunk_size", type=int, default=32, help="Prompts per engine call on the hf and vllm sides (almost rg's default).")
    p.add_argument("--kv_cache_gib", type=float, default=None, help="vLLM's CPU KV cache (default: the engine's own sizing).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, default=0, metavar="K", help="vllm side: profile one more full pass, print its K costliest ops.")
    p.add_argument(
        "--prefix_cache_cost",
        type=int,
        default=0,
        metavar="R",
        help="Instead of the comparison: RG's chunks on vLLM with the engine's repeatable prefix cache vs emptied vs kept, R times each.",
    )
    p.add_argument("--cli_backends", nargs="*", default=[], help="Also time `almost rg` for 3 configurations on these backends.")
    p.add_argument("--cli_prompts", type=int, default=20)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}
    if args.prefix_cache_cost:
        results["prefix_cache"] = prefix_cache_cost(args)
    elif args.num_prompts:
        results["throughput"] = throughput(args)
    for backend in args.cli_backends:
        results[f"cli_{backend}"] = time_cli(backend, args.cli_prompts, args.max_new_tokens)
        print(results[f"cli_{backend}"], flush=True)
    print(json.dumps(results, indent=2))
    if "throughput" in results:
        print(table(results["throughput"]))


if __name__ == "__main__":
    main()
