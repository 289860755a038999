"""Nothing escapes the run directory, one writer per output directory, no secrets on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from scripted_engine import ScriptedEngine

from almost.cli import main as cli_main
from almost.contracts import LOCK_NAME
from almost.errors import AlmostError
from almost.evaluate.judges import openai_completer
from almost.evaluate.pairwise import PairwiseConfig, build_judge, run_pairwise
from almost.redaction import portable, redact_argv
from almost.run.plan import Planner, load_config
from almost.shipped import QUESTIONS_SAMPLE
from almost.stages import CS
from almost.training import plain_settings

PROMPTS = ["How do I keep basil alive indoors?", "What is a prime number?", "Give me a tip for learning to juggle.", "Why is the sky blue?"]


def rg_outputs(folder: Path) -> Path:
    """Two rg configurations' outputs (as in test_pipeline), enough for cs and a tiny RM."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, lengths in (("big", [160, 80, 170, 70]), ("small", [90, 150, 100, 140])):
        rows = [
            {
                "index": i,
                "prompt": p,
                "response": ("A helpful sentence. " * 20)[:n].rstrip() + ".",
                "bad": False,
                "bad_reasons": [],
                "config": name,
            }
            for i, (p, n) in enumerate(zip(PROMPTS, lengths))
        ]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- every folder the pipeline makes or deletes is inside the run directory ------------------------


@pytest.mark.parametrize("label", ["../..", "../victim", "/tmp/victim", "a/b", ".."])
def test_eval_labels_cannot_name_folders_outside_the_run(tmp_path, label, tiny_model_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    path = write_yaml(tmp_path / "p.yaml", {"eval": {"models": {label.replace("/tmp/victim", str(victim)): tiny_model_path}, "hhh": {}}})
    planner = Planner(load_config(path), (tmp_path / "run").resolve(), path)
    with pytest.raises(AlmostError, match="plain name"):
        planner.plan()
    assert (victim / "keep.txt").read_text() == "mine"


def test_planner_refuses_any_step_folder_outside_the_run(tmp_path):
    path = write_yaml(tmp_path / "p.yaml", {"cs": {"rubric": ["a", "b"]}})
    planner = Planner(load_config(path), (tmp_path / "run").resolve(), path)
    with pytest.raises(AlmostError, match="outside the run directory"):
        planner.add(CS, {}, {}, tmp_path / "run" / ".." / "elsewhere")


# --- launcher strings: shlex, and children die with the pipeline -----------------------------------


def test_launcher_string_keeps_quoted_paths_whole(tmp_path):
    launcher = "accelerate launch --config_file 'my configs/ddp.yaml' --num_processes 2"
    path = write_yaml(tmp_path / "p.yaml", {"cs": {"input_dir": str(tmp_path), "rubric": ["a", "b"], "launcher": launcher}})
    (step,) = Planner(load_config(path), (tmp_path / "run").resolve(), path).plan()
    assert step.launcher == ("accelerate", "launch", "--config_file", "my configs/ddp.yaml", "--num_processes", "2")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state  # a zombie has finished; only its exit status is left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_pipeline_child_dies_with_the_pipeline(tmp_path):
    pidfile = tmp_path / "child pid"  # a space: the launcher's quoting must survive
    # The "stage" is a shell that records its pid and sleeps: exec keeps the pid (and the death signal).
    launcher = f"sh -c 'echo $$ > \"{pidfile}\"; exec sleep 300'"
    config = write_yaml(
        tmp_path / "p.yaml", {"cs": {"input_dir": str(rg_outputs(tmp_path / "rg")), "rubric": ["big", "small"], "launcher": launcher}}
    )
    pipeline = subprocess.Popen(
        [sys.executable, "-m", "almost", "pipeline", str(config), "--output_dir", str(tmp_path / "run")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.time() < deadline and pipeline.poll() is None:
            time.sleep(0.2)
        assert pidfile.exists(), pipeline.stderr.read().decode() if pipeline.poll() is not None else "the child never started"
        child = int(pidfile.read_text())
        assert _alive(child)
        pipeline.kill()  # SIGKILL: the pipeline gets no chance to clean up
        pipeline.wait()
        deadline = time.time() + 10
        while _alive(child) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the stage ran on after the pipeline died"
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
        if pidfile.exists() and pidfile.read_text().strip() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


# --- one writer per output directory -------------------------------------------------------------


HOLD = """
import sys, time
from almost.locks import lock_output_dir
lock_output_dir(sys.argv[1], "almost cs --output_dir " + sys.argv[1])
print("locked", flush=True)
time.sleep(300)
"""


def test_second_run_on_the_same_output_dir_says_who_holds_it(tmp_path, capsys):
    out = tmp_path / "cs"
    rg = rg_outputs(tmp_path / "rg")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = ["cs", "--input_dir", str(rg), "--output_dir", str(out), "--rubric", "big", "small"]
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by pid {holder.pid}" in err[0] and "almost cs" in err[0], err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the second run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the next run goes ahead, and leaves no lock file.
    assert cli_main(argv) == 0
    assert (out / "comparison.jsonl").exists() and not (out / LOCK_NAME).exists()


def test_second_pipeline_on_the_same_run_dir_exits_2(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = write_yaml(
            tmp_path / "p.yaml", {"in_process": True, "cs": {"input_dir": str(rg_outputs(tmp_path / "rg")), "rubric": ["big", "small"]}}
        )
        assert cli_main(["pipeline", str(config), "--output_dir", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0], err
        assert not (run / "cs").exists()
    finally:
        holder.kill()
        holder.wait()


# --- no secrets on disk, no machine paths -----------------------------------------------------------


def test_secrets_never_reach_markers_output_metrics_or_cards(tmp_path, tiny_reward_model_path, capsys):
    secret = "hf_SECRETSECRET"
    run = tmp_path / "run"
    config = write_yaml(
        tmp_path / "p.yaml",
        {
            "in_process": True,
            "cs": {"input_dir": str(rg_outputs(tmp_path / "rg")), "rubric": ["big", "small"]},
            "rm": {
                "train": {
                    "model_name_or_path": tiny_reward_model_path,
                    "max_steps": 1,
                    "per_device_train_batch_size": 2,
                    "eval_fraction": 0.0,
                    "report_to": "none",
                    "hub_token": secret,
                }
            },
        },
    )
    assert cli_main(["pipeline", str(config), "--output_dir", str(run), "--no_report"]) == 0
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err
    assert "--hub_token '<redacted>'" in printed.out or "--hub_token <redacted>" in printed.out
    for path in run.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt", ".jsonl", ".csv", ".yaml"):
            assert secret not in path.read_text(errors="replace"), path
    metrics = json.loads((run / "rm" / "metrics.json").read_text())
    assert metrics["config"]["hub_token"] == "<redacted>"
    # Paths relative to the run directory, not this machine's.
    card, metrics_text = (run / "rm" / "README.md").read_text(), (run / "rm" / "metrics.json").read_text()
    assert str(run) not in card and str(run) not in metrics_text
    assert metrics["config"]["output_dir"] == "rm" and metrics["config"]["data_path"] == "cs/comparison.jsonl"
    assert "`cs/comparison.jsonl`" in card


def test_redaction_helpers():
    from dataclasses import dataclass

    @dataclass
    class Settings:
        hub_token: str | None = "hf_x"
        api_key: str = "k"
        db_password: str = "p"
        max_new_tokens: int = 5
        eos_token: str = "</s>"

    assert plain_settings(Settings()) == {
        "hub_token": "<redacted>",
        "api_key": "<redacted>",
        "db_password": "<redacted>",
        "max_new_tokens": 5,
        "eos_token": "</s>",
    }
    assert redact_argv(["--hub_token", "x", "--max_new_tokens", "5", "--api-key=y", "--judge", "openai:https://u:pw@h/v1"]) == [
        "--hub_token",
        "<redacted>",
        "--max_new_tokens",
        "5",
        "--api-key=<redacted>",
        "--judge",
        "openai:https://<redacted>@h/v1",
    ]
    assert portable({"a": "/r/run/sft", "b": "rm:/r/run/rm", "c": "/r/runner/x"}, "/r/run") == {
        "a": "sft",
        "b": "rm:rm",
        "c": "/r/runner/x",
    }


# --- the OpenAI-compatible judge ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://example.com/v1", "http://10.0.0.5:8000/v1", "http://user:pw@judge.internal/v1"])
def test_openai_judge_refuses_plain_http_to_other_machines(url):
    config = PairwiseConfig(judge=f"openai:{url}", judge_model="m")
    with pytest.raises(AlmostError, match="plain http") as e:
        build_judge(config)
    assert "pw" not in str(e.value)
    assert build_judge(PairwiseConfig(judge=f"openai:{url}", judge_model="m", judge_allow_http=True)) is not None
    assert build_judge(PairwiseConfig(judge="openai:http://127.0.0.1:8000/v1", judge_model="m")) is not None
    assert build_judge(PairwiseConfig(judge="openai:https://example.com/v1", judge_model="m")) is not None


def _server(handler) -> HTTPServer:
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_openai_judge_does_not_send_the_key_across_a_redirect():
    seen: list[tuple[str, str | None]] = []

    class Target(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(("target", self.headers.get("Authorization")))
            data = json.dumps({"choices": [{"message": {"content": "[[A]]"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    target = _server(Target)

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(("origin", self.headers.get("Authorization")))
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)  # another host (localhost vs 127.0.0.1) and port
            self.send_header("Location", f"http://localhost:{target.server_port}/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    origin = _server(Redirect)
    try:
        complete = openai_completer(f"http://127.0.0.1:{origin.server_port}/v1", "m", "sekrit", 8, 10)
        assert complete([[{"role": "user", "content": "x"}]]) == ["[[A]]"]
    finally:
        for server in (origin, target):
            server.shutdown()
            server.server_close()
    assert seen == [("origin", "Bearer sekrit"), ("target", None)]


def test_url_credentials_stay_out_of_pairwise_metrics(tmp_path, tiny_model_path):
    class Judge:
        name = "openai"

        def compare(self, items):
            return [(1.0, 0.0)] * len(items)

    config = PairwiseConfig(
        model_name_or_path=tiny_model_path,
        baseline_model_name_or_path=str(tmp_path),
        data_path=str(QUESTIONS_SAMPLE),
        output_dir=str(tmp_path / "e"),
        max_new_tokens=4,
        max_questions=2,
        judge="openai:https://alice:pa55word@judge.example/v1",
    )
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    run_pairwise(config, ScriptedEngine(lambda p, i: "a"), ScriptedEngine(lambda p, i: "b"), Judge())
    text = (tmp_path / "e" / "metrics.json").read_text()
    assert "pa55word" not in text and "alice" not in text
    assert json.loads(text)["judge"] == "openai:https://<redacted>@judge.example/v1"
