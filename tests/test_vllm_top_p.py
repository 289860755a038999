"""The CPU top-p of the vLLM engine (engines/vllm_top_p.py) against vLLM's own sort-based top-p."""

import pytest
import torch

pytest.importorskip("vllm")

from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402
from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch  # noqa: E402

from almost.engines.vllm_top_p import TOP_P_ARG, NucleusLogitsProcessor, nucleus_mask  # noqa: E402

# Both sides sum fp32 probabilities (vLLM over the whole sorted vocabulary, nucleus_mask over the top
# k), so a token whose probability mass above it lies this close to p may fall either way, by CPU:
# a sum of n terms rounds by at most n * 2**-24 of its value, 2.4e-4 for n = 4,096, plus the softmax's
# own rounding. Every other token is decided the same on any CPU.
EDGE = 5e-4


def vllm_kept(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    return apply_top_k_top_p_pytorch(logits.clone(), None, top_p).isfinite()


def off_the_edge(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """The tokens whose mass above (in float64) is further than EDGE from their row's p; every token of
    a row at p = 1, which keeps them all."""
    probs = logits.double().softmax(dim=-1)
    ordered, order = probs.sort(dim=-1, descending=True)
    above = torch.empty_like(probs).scatter_(1, order, ordered.cumsum(dim=-1) - ordered)
    return ((above - top_p.double().unsqueeze(1)).abs() > EDGE) | (top_p >= 1.0).unsqueeze(1)


@pytest.mark.parametrize("scale", [0.3, 3.0, 12.0])  # flat to peaked: nuclei of thousands down to one token
def test_nucleus_mask_keeps_the_tokens_vllm_keeps(scale):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(24, 4096, generator=generator) * scale
    top_p = torch.tensor([0.05, 0.5, 0.9, 0.95, 0.99, 1.0] * 4)
    kept = nucleus_mask(logits.clone(), top_p, candidates=16).isfinite()
    decided = off_the_edge(logits, top_p)
    assert (~decided).sum(dim=1).max() <= 64  # the edge is a few dozen of 4,096 tokens at most (flat rows, p = 0.99)
    assert torch.equal(kept[decided], vllm_kept(logits, top_p)[decided])
    assert kept.sum(dim=1).min() >= 1 and kept[top_p == 1.0].all()


def test_processor_follows_requests_through_batch_changes():
    """p per request: set when a request is added, moved or swapped with it, cleared when it leaves."""

    class Params:
        def __init__(self, p):
            self.extra_args = {TOP_P_ARG: p} if p is not None else None

    class Config:
        class scheduler_config:
            max_num_seqs = 4

    processor = NucleusLogitsProcessor(Config, torch.device("cpu"), False)
    processor.update_state(
        BatchUpdate(3, removed=[], added=[(0, Params(0.5), None, []), (1, Params(None), None, []), (2, Params(0.9), None, [])], moved=[])
    )
    assert processor.top_p[:3].tolist() == pytest.approx([0.5, 1.0, 0.9])
    processor.update_state(BatchUpdate(3, removed=[], added=[], moved=[(0, 2, MoveDirectionality.SWAP)]))
    assert processor.top_p[:3].tolist() == pytest.approx([0.9, 1.0, 0.5])
    processor.update_state(BatchUpdate(2, removed=[1], added=[], moved=[(2, 1, MoveDirectionality.UNIDIRECTIONAL)]))
    assert processor.top_p[:3].tolist() == pytest.approx([0.9, 0.5, 1.0])

    logits = torch.randn(2, 1000, generator=torch.Generator().manual_seed(1))
    expected = vllm_kept(logits, torch.tensor([0.9, 0.5]))
    decided = off_the_edge(logits, torch.tensor([0.9, 0.5]))
    assert torch.equal(processor.apply(logits.clone()).isfinite()[decided], expected[decided])
    processor.update_state(BatchUpdate(2, removed=[0], added=[(0, Params(None), None, [])], moved=[]))
    mixed = processor.apply(logits.clone()).isfinite()
    assert mixed[0].all() and torch.equal(mixed[1][decided[1]], expected[1][decided[1]])
