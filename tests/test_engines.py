from almost.engines import Sampling, ScriptedEngine, truncate_at_stop
from almost.engines.hf import HFEngine
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
