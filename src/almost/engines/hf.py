"""transformers ``generate``: batched with left padding, prompts sorted by length, stop strings."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from tqdm.auto import tqdm

from ..models import cpu_bf16_is_fast, load_tokenizer
from .base import Sampling, truncate_at_stop


class HFEngine:
    name = "hf"

    def __init__(
        self,
        model_path: str,
        batch_size: int = 8,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        model=None,
        tokenizer=None,
    ):
        import torch
        from transformers import AutoModelForCausalLM

        self.batch_size = max(1, batch_size)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = tokenizer or load_tokenizer(model_path, trust_remote_code, "left", cache_dir)
        self.tokenizer.padding_side = "left"
        if model is None:
            load_dtype = torch.bfloat16 if (self.device == "cuda" and dtype in ("auto", "bfloat16")) else torch.float32
            if dtype == "float16":
                load_dtype = torch.float16
            model = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=load_dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir
            ).to(self.device)
        self.model = model.eval()
        # On CPU we keep fp32 weights and autocast the matmuls to bf16 where the CPU does that natively.
        self.autocast_bf16 = self.device == "cpu" and (dtype == "bfloat16" or (dtype == "auto" and cpu_bf16_is_fast()))

    def generate(self, prompts: Sequence[str], sampling: Sampling, desc: str | None = None) -> list[list[str]]:
        import torch

        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        lengths = [len(self.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        # Longest first: batches of similar length waste little padding, and a too-long prompt fails early.
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        results: list[list[str]] = [[] for _ in prompts]
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast_bf16 else contextlib.nullcontext()
        with tqdm(total=len(prompts), desc=desc or "generate", unit="prompt", leave=False) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                enc = self.tokenizer(
                    [prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(self.device)
                do_sample = sampling.temperature > 0
                kwargs = dict(
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=do_sample,
                    num_return_sequences=sampling.n,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                if do_sample:
                    kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
                if sampling.stop:
                    kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
                with torch.no_grad(), autocast:
                    out = self.model.generate(**enc, **kwargs)
                new_tokens = out[:, enc.input_ids.shape[1] :]
                texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for k, i in enumerate(batch):
                    samples = texts[k * sampling.n : (k + 1) * sampling.n]
                    results[i] = [truncate_at_stop(t, sampling.stop) for t in samples]
                bar.update(len(batch))
        return results
