"""Top-p (nucleus) sampling for vLLM on CPU without sorting the whole vocabulary.

vLLM's CPU sampler applies top-p by sorting every row of logits over the whole vocabulary at every
decode step (``apply_top_k_top_p_pytorch``). Profiled on the 2-core AMX machine (``bench_rg.py
--profile``, 64 two-shot prompts, 128 new tokens), that sort was 43% of the generation's wall time,
more than the model's matmuls and attention together. A nucleus of p = 0.9 holds a few hundred of
SmolLM2's 49,152 tokens, so the same mask can be found from the largest probabilities alone.

``NucleusLogitsProcessor`` is a vLLM logits processor (vLLM's public extension point) that does it:
the engine passes ``top_p=1.0`` to vLLM, which then skips its sort, and the request's p in
``extra_args``. vLLM runs argmax-invariant processors after temperature and just before its own
top-k/top-p, so the mask falls where vLLM's would. ``nucleus_mask`` keeps vLLM's rule (a token is kept
when the probability of the tokens ranked above it is below p, so the top token always is) and is
exact: it looks at the k most probable tokens, and a row whose k tokens hold less than p in all is
looked at again with twice as many, up to the whole vocabulary. Two things can differ from vLLM's
sort: which of several tokens with the same logit at the nucleus' edge is kept, and the rounding of
the summed probabilities there (vLLM sums the whole sorted vocabulary, this sums only the top); so
the same seed gives other samples than vLLM's own top-p, from the same distribution, and the same
samples on every run.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

# The SamplingParams.extra_args key the engine puts each request's p under.
TOP_P_ARG = "almost_top_p"
# Candidates looked at first: at p = 0.9 most rows of SmolLM2's decode steps fit (then 2x, 4x, ...).
FIRST_CANDIDATES = 256


def nucleus_mask(logits: torch.Tensor, top_p: torch.Tensor, candidates: int = FIRST_CANDIDATES) -> torch.Tensor:
    """``logits`` (rows x vocabulary) with every token outside its row's top-p nucleus set to -inf, in place.

    ``top_p`` holds one p per row, each in (0, 1]; a row at 1 keeps every token, as in vLLM.
    """
    probs = logits.softmax(dim=-1)
    vocabulary = logits.shape[-1]
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep[top_p >= 1.0] = True
    rows = (top_p < 1.0).nonzero().squeeze(1)
    k = min(candidates, vocabulary)
    while len(rows):
        top, index = probs[rows].topk(k, dim=-1)  # largest first
        cumulative = top.cumsum(dim=-1)
        # Probability of the tokens ranked above each one: below p → in the nucleus (vLLM's rule).
        kept = (cumulative - top) < top_p[rows].unsqueeze(1)
        # A row whose k tokens hold at least p has its whole nucleus among them; else look further.
        done = (cumulative[:, -1] >= top_p[rows]) | (k == vocabulary)
        keep[rows[done]] = keep[rows[done]].scatter(1, index[done], kept[done])
        rows = rows[~done]
        k = min(2 * k, vocabulary)
    return logits.masked_fill_(~keep, float("-inf"))


class NucleusLogitsProcessor(LogitsProcessor):
    """Applies each request's ``extra_args[TOP_P_ARG]`` with ``nucleus_mask`` (module docstring)."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        # One p per row of vLLM's persistent batch; 1.0 = no top-p.
        self.top_p = torch.ones(vllm_config.scheduler_config.max_num_seqs, dtype=torch.float32)

    def is_argmax_invariant(self) -> bool:
        return True  # the most probable token is always kept

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        # vLLM's order: removed, then added, then moved.
        for index in batch_update.removed:
            self.top_p[index] = 1.0
        for index, params, _, _ in batch_update.added:
            self.top_p[index] = float((params.extra_args or {}).get(TOP_P_ARG, 1.0))
        for source, target, direction in batch_update.moved:
            moving = self.top_p[source].item()
            if direction == MoveDirectionality.SWAP:
                self.top_p[source] = self.top_p[target]
            else:
                self.top_p[source] = 1.0
            self.top_p[target] = moving

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        top_p = self.top_p[: logits.shape[0]]
        return nucleus_mask(logits, top_p) if bool((top_p < 1.0).any()) else logits
