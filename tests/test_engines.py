import pytest
from scripted_engine import ScriptedEngine

from almost.engines import Sampling, truncate_at_stop
from almost.engines.hf import MIN_SHARED_PREFIX, HFEngine, shared_prefix_length
from almost.models import resolve_model


def test_truncate_at_stop_cuts_at_earliest():
    assert truncate_at_stop("a b\nHuman: c ----- d", ["-----", "\nHuman:"]) == "a b"
    assert truncate_at_stop("no stop here", ["-----"]) == "no stop here"


def test_scripted_engine_applies_stop_and_n():
    engine = ScriptedEngine(lambda p, i: f"{p}-{i}\nHuman: more")
    out = engine.generate(["x", "y"], Sampling(n=3, stop=("\nHuman:",)))
    assert out == [["x-0", "x-1", "x-2"], ["y-0", "y-1", "y-2"]]


def test_hf_engine_batches_samples_and_is_repeatable(tiny_model_path):
    engine = HFEngine(resolve_model(tiny_model_path).path, batch_size=2)
    prompts = ["Human: hi\n\nAssistant:", "Human: a much longer question about many things\n\nAssistant:", "Q:"]
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=8, n=2, seed=3)
    first = engine.generate(prompts, sampling)
    assert [len(s) for s in first] == [2, 2, 2]
    assert all(isinstance(t, str) for s in first for t in s)
    assert engine.generate(prompts, sampling) == first
    # Order of the prompts in the call does not change what each prompt gets in a batch of one.
    single = HFEngine(resolve_model(tiny_model_path).path, batch_size=1)
    greedy = Sampling(temperature=0.0, max_new_tokens=6)
    assert single.generate(prompts[::-1], greedy)[::-1] == single.generate(prompts, greedy)


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix_length([[1, 2, 3]]) == 2
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0


def test_hf_engine_shared_prefix_gives_what_each_prompt_gets_alone(tiny_model_path):
    """The cached-prefix path (prefix encoded once, padding between prefix and prompt, positions from
    the mask, a fresh copy of the cache per batch) gives each prompt exactly what it gets alone.

    In float64: the cached path and the one-pass path multiply matrices of different shapes, and in
    float32 that rounding alone flipped a greedy argmax on some CPUs. float64 rounding (~1e-16) is
    far below any gap between the two best logits a real bug leaves, so exact tokens stay a sharp
    test: it fails with left padding, with positions that ignore the mask, and with a prefix cache
    that is not copied per batch (each checked by breaking the engine once).
    """
    import torch

    engine = HFEngine(resolve_model(tiny_model_path).path, batch_size=2, dtype="float32")
    # Random weights at their initial scale make a near-uniform model whose greedy choice hardly
    # depends on the context; larger weights make a wrong prefix, position or mask change the text.
    torch.manual_seed(0)
    engine.model.to(torch.float64)
    with torch.no_grad():
        for parameter in engine.model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.3)
    header = "The following is a conversation between a curious person and a helpful, honest assistant.\n\n"
    # Three prompts in batches of two: the second batch must start from a clean copy of the cache.
    prompts = [header + f"Human: {q}\n\nAssistant:" for q in ("hi", "a much longer question about many different things", "why?")]
    token_ids = [engine.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    assert shared_prefix_length(token_ids) >= MIN_SHARED_PREFIX  # the cached path is the one under test
    assert engine._prefix_cache(token_ids[0][:MIN_SHARED_PREFIX]) is not None

    out = engine.generate(prompts, Sampling(temperature=0.0, max_new_tokens=6, n=2))
    for prompt, ids, samples in zip(prompts, token_ids, out):
        with torch.no_grad():
            alone = engine.model.generate(
                torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=engine.tokenizer.pad_token_id
            )
        expected = engine.tokenizer.decode(alone[0, len(ids) :], skip_special_tokens=True)
        assert samples == [expected, expected], prompt


def test_hf_next_token_logprobs_in_a_padded_batch_are_each_prompts_own(tiny_model_path):
    """Left padding in a batch must not move a prompt's positions: each prompt's log-probabilities
    are those it gets alone, they are log-probabilities over the vocabulary, and each is the
    model's own next-token distribution at the prompt's end."""
    import torch

    path = resolve_model(tiny_model_path).path
    prompts = ["Human: hi\n\nAssistant: [[", "Human: a much longer question about many things\n\nAssistant: [[", "Q:"]
    batched = HFEngine(path, batch_size=3)
    token_ids = [batched.tokenizer("A", add_special_tokens=False).input_ids[0], 7]
    together = batched.next_token_logprobs(prompts, token_ids)
    alone = [HFEngine(path, batch_size=1).next_token_logprobs([p], token_ids)[0] for p in prompts]
    for row, own in zip(together, alone):
        assert row == pytest.approx(own, abs=1e-4)
    assert all(lp < 0 for row in together for lp in row)
    ids = batched.tokenizer(prompts[1], add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = torch.log_softmax(batched.model(input_ids=ids).logits[0, -1].float(), -1)[token_ids].tolist()
    assert together[1] == pytest.approx(expected, abs=1e-4)
