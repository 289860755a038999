"""``--backend openai`` against a real vLLM OpenAI server on loopback, killed and restarted mid-run.

The server (``python -m vllm.entrypoints.openai.api_server``; ``vllm serve`` does not work with the
CPU wheel) serves the embedded SmolLM2-135M under its name ``smollm2-135m``. Start-up takes 20-60 s
on a CPU, so the module starts it once and each test restarts it only where it kills it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from almost import shipped

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (pip install 'almost[vllm]')"),
]

SERVED_NAME = "smollm2-135m"
STARTUP_SECONDS = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    def __init__(self, model_path: str, port: int, log: Path):
        self.model_path, self.port, self.log = model_path, port, log
        self.url = f"http://127.0.0.1:{port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        cpus = os.cpu_count() or 1
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{cpus - 1}",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        }
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model_path,
            "--served-model-name",
            SERVED_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--enforce-eager",
            "--max-model-len",
            "2048",
            "--seed",
            "0",
        ]
        # Its own session, so that SIGKILL reaches the engine core process too, as a crash would.
        self.process = subprocess.Popen(command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=5) as r:
                    if SERVED_NAME in r.read().decode():
                        return
            except OSError:
                pass
            time.sleep(1)
        self.kill()
        raise RuntimeError(f"vLLM server not ready after {STARTUP_SECONDS} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_path):
    s = VLLMServer(smollm2_path, free_port(), tmp_path_factory.mktemp("vllm-server") / "server.log")
    s.start()
    yield s
    s.kill()


def almost(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "almost", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def rows_in(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith('{"__')]


def wait_for_rows(path: Path, at_least: int, process: subprocess.Popen, seconds: float = 600) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n = len(rows_in(path))
        if n >= at_least:
            return n
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the run ended (rc {process.returncode}) before {at_least} rows were written:\n{err[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} rows in {path} after {seconds} s")


PROMPTS = [
    "How do I boil an egg so the yolk stays soft?",
    "What is the capital of Australia?",
    "How can I sleep better?",
    "What should I pack for a weekend hike?",
    "Why do leaves change colour in autumn?",
    "How do I start learning the piano?",
    "What is a good way to save money each month?",
    "How do vaccines work?",
    "How do I clean a cast iron pan?",
    "What makes a good cover letter?",
    "How do I keep basil alive indoors?",
    "Why is the sea salty?",
]


def test_rg_fails_clearly_when_the_server_dies_and_a_rerun_resumes(server, tmp_path):
    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS))
    args = [
        "rg",
        "--backend",
        "openai",
        "--base_url",
        server.url,
        "--output_dir",
        str(tmp_path),
        "--prompt_file_path",
        str(shipped.WORSE_DEMONSTRATIONS),
        "--n_shot",
        "1",
        "--max_new_tokens",
        "48",
        "--chunk_size",
        "2",
        "--concurrency",
        "2",
        "--seed",
        "3",
        "--max_retries",
        "2",
    ]
    final = tmp_path / "smollm2-135m-basic-1shot.jsonl"
    partial = Path(f"{final}.partial")
    run = almost(*args)
    wait_for_rows(partial, 2, run)
    server.kill()
    before_kill = rows_in(partial)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 2, err[-3000:]
    assert "kept failing after 2 retries" in err and "rerun the same command" in err and "Traceback" not in err
    written = rows_in(partial)
    assert len(written) < len(PROMPTS) and not final.exists()

    server.start()
    rerun = almost(*args)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    rows = rows_in(final)
    assert [(r["index"], r["prompt"]) for r in rows] == list(enumerate(PROMPTS))  # none lost, none twice
    by_index = {r["index"]: r for r in rows}
    assert all(by_index[r["index"]] == r for r in written)  # rows written before the kill are kept as they were
    assert all(r["response"].strip() for r in rows) and before_kill
    assert not list(tmp_path.glob("*.partial*"))


def test_pg_retries_span_a_server_restart(server, tmp_path):
    args = [
        "pg",
        "--backend",
        "openai",
        "--base_url",
        server.url,
        "--output_dir",
        str(tmp_path),
        "--num_generation",
        "4",
        "--batch_size",
        "2",
        "--max_new_tokens",
        "32",
        "--seed",
        "1",
        "--min_chars",
        "5",
        "--rouge_l_threshold",
        "0.9",
        "--max_retries",
        "40",
    ]
    run = almost(*args)
    wait_for_rows(tmp_path / "pg_rounds.jsonl.partial", 1, run)
    server.kill()
    rounds_at_kill = len(rows_in(tmp_path / "pg_rounds.jsonl.partial"))
    server.start()  # the backoff (1, 2, 4, ... then every 30 s, 40 retries: ~19 min) outlasts the restart
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, err[-3000:]
    prompts = (tmp_path / "prompts.txt").read_text().splitlines()
    assert len(prompts) == 4 and len(set(prompts)) == 4
    rounds = rows_in(tmp_path / "pg_rounds.jsonl")
    assert [r["round"] for r in rounds] == list(range(len(rounds))) and len(rounds) > rounds_at_kill
    stats = json.loads((tmp_path / "pg_stats.json").read_text())
    assert stats["accepted"] == 4


def test_rmsp_and_pairwise_answers_use_the_server(server, tmp_path, tiny_reward_model_path):
    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS[:2]))
    run = almost(
        "rmsp",
        "--backend",
        "openai",
        "--base_url",
        server.url,
        "--output_dir",
        str(tmp_path / "rmsp"),
        "--prompts_path",
        str(tmp_path / "prompts.txt"),
        "--reward_model_name_or_path",
        tiny_reward_model_path,
        "--num_candidates",
        "2",
        "--max_turns",
        "2",
        "--max_new_tokens",
        "32",
        "--user_max_new_tokens",
        "24",
        "--n_shot",
        "1",
        "--user_n_shot",
        "1",
        "--seed",
        "2",
    )
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    summary = json.loads((tmp_path / "rmsp" / "rmsp_summary.json").read_text())
    assert summary["dialogues"] == 2, summary
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "text": p, "category": "c"}) + "\n" for i, p in enumerate(PROMPTS[:2])))
    run = almost(
        "eval",
        "pairwise",
        "--backend",
        "openai",
        "--base_url",
        server.url,
        "--baseline_model_name_or_path",
        SERVED_NAME,
        "--data_path",
        str(questions),
        "--output_dir",
        str(tmp_path / "pairwise"),
        "--judge",
        f"rm:{tiny_reward_model_path}",
        "--max_new_tokens",
        "24",
    )
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    answers = sorted((tmp_path / "pairwise").glob("answers_*.jsonl"))
    assert answers, list((tmp_path / "pairwise").iterdir())
    rows = [json.loads(line) for line in answers[0].read_text().splitlines()]
    assert len(rows) == 2 and any(r["answer"].strip() for r in rows), rows
