"""transformers ``generate``: batched with left padding, prompts sorted by length, stop strings, and
the prefix every prompt shares (the few-shot demonstrations) encoded once per call."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from tqdm.auto import tqdm

from ..models import inference_precision, load_tokenizer
from .base import Sampling, truncate_at_stop

# Below this many shared tokens a separate prefix pass costs more than it saves.
MIN_SHARED_PREFIX = 16


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
        from transformers import AutoModelForCausalLM

        self.batch_size = max(1, batch_size)
        self.precision = inference_precision(dtype)
        self.tokenizer = tokenizer or load_tokenizer(model_path, trust_remote_code, "left", cache_dir)
        self.tokenizer.padding_side = "left"
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=self.precision.load_dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir
            ).to(self.precision.device)
        self.model = model.eval()

    def close(self) -> None:
        self.model = None

    def generate(self, prompts: Sequence[str], sampling: Sampling, desc: str | None = None) -> list[list[str]]:
        import torch

        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        token_ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        shared = shared_prefix_length(token_ids) if prompts else 0
        prefix_cache = self._prefix_cache(token_ids[0][:shared]) if shared >= MIN_SHARED_PREFIX else None
        if prefix_cache is None:
            shared = 0
        # Longest first: batches of similar length waste little padding, and a too-long prompt fails early.
        order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
        results: list[list[str]] = [[] for _ in prompts]
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=sampling.temperature > 0, pad_token_id=self.tokenizer.pad_token_id)
        if sampling.temperature > 0:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        with tqdm(total=len(prompts), desc=desc or "generate", unit="prompt", leave=False) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                input_ids, attention_mask = self._batch_tensors([token_ids[i] for i in batch], shared, sampling.n)
                if prefix_cache is not None:
                    kwargs["past_key_values"] = copy.deepcopy(prefix_cache)
                    kwargs["past_key_values"].batch_repeat_interleave(input_ids.shape[0])
                with torch.no_grad(), self.precision.autocast():
                    out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
                texts = self.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)
                for k, i in enumerate(batch):
                    samples = texts[k * sampling.n : (k + 1) * sampling.n]
                    results[i] = [truncate_at_stop(t, sampling.stop) for t in samples]
                bar.update(len(batch))
        return results

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int], desc: str | None = None) -> list[list[float]]:
        import torch

        rows = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(rows[i]))
        results: list[list[float]] = [[] for _ in prompts]
        wanted = torch.tensor(list(token_ids), device=self.precision.device)
        with tqdm(total=len(prompts), desc=desc or "score", unit="prompt", leave=False) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                input_ids, attention_mask = self._batch_tensors([rows[i] for i in batch], 0, 1)
                # Positions follow the mask, as generate() sets them: left padding would shift a model's
                # absolute positions (GPT-2's; rotary ones are relative and do not mind).
                position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
                with torch.no_grad(), self.precision.autocast():
                    out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=1)
                # Left padding: every row's last position is its prompt's last token.
                logits = out.logits[:, -1, :]
                logprobs = torch.log_softmax(logits.float(), dim=-1)[:, wanted]
                for k, i in enumerate(batch):
                    results[i] = logprobs[k].tolist()
                bar.update(len(batch))
        return results

    def _prefix_cache(self, prefix_ids: list[int]):
        """Keys and values of the tokens every prompt starts with (few-shot demonstrations), computed
        once per call instead of once per prompt and sample; None where the model's cache cannot be
        reused this way (sliding windows, linear attention, encoder-decoders)."""
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        if self.model.config.is_encoder_decoder:
            return None
        cache = DynamicCache(config=self.model.config)
        if any(type(layer) is not DynamicLayer for layer in cache.layers):
            return None
        ids = torch.tensor([prefix_ids], device=self.precision.device)
        with torch.no_grad(), self.precision.autocast():
            self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        return cache

    def _batch_tensors(self, rows: list[list[int]], shared: int, n: int):
        """input_ids and attention_mask for one batch, each row repeated for its n samples.

        Rows are padded on the left of the part after the shared prefix, so the prefix sits at the
        same positions in every row (where its cached keys and values are) and every prompt ends
        where generation starts; position ids follow the attention mask, so padding shifts nothing.
        """
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in rows) - shared
        input_ids, attention_mask = [], []
        for row in rows:
            gap = width - (len(row) - shared)
            input_ids.append(row[:shared] + [pad] * gap + row[shared:])
            attention_mask.append([1] * shared + [0] * gap + [1] * (len(row) - shared))

        def as_tensor(x):
            return torch.tensor(x, device=self.precision.device).repeat_interleave(n, dim=0)

        return as_tensor(input_ids), as_tensor(attention_mask)


def shared_prefix_length(token_ids: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all prompts share, leaving each prompt at least one token of its own
    (generation must start from a token that is not in the cache)."""
    first, limit = token_ids[0], min(len(t) for t in token_ids) - 1
    shared = 0
    while shared < limit and all(t[shared] == first[shared] for t in token_ids):
        shared += 1
    return shared
