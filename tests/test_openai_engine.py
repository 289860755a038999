"""The openai backend against a small fake completions server on loopback (no model, fast)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from scripted_engine import ScriptedEngine

from almost import shipped
from almost.engines import Sampling, engine_model, load_engine
from almost.engines.openai import OpenAIEngine, normalize_base_url, split_base_urls
from almost.errors import AlmostError
from almost.feedback.pg import PGArguments, run_pg
from almost.feedback.rg import RGArguments, run_rg

pytestmark = pytest.mark.timeout(60)


class FakeServer:
    """Answers ``POST /v1/completions`` with ``echo:<prompt>:<sample>:<seed>``; ``fail`` holds the
    statuses to answer first (one per request), ``requests`` records every body and header."""

    def __init__(self, reply=None):
        self.requests: list[dict] = []
        self.fail: list[int] = []
        self.reply = reply or (lambda body, k: f"echo:{body['prompt']}:{k}:{body.get('seed')}")
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization"), "port": owner.port})
                    status = owner.fail.pop(0) if owner.fail else 200
                if status != 200:
                    payload = {"error": {"message": f"fake failure {status}"}}
                else:
                    choices = [{"index": k, "text": owner.reply(body, k)} for k in range(body["n"])]
                    payload = {"choices": list(reversed(choices))}  # servers need not return them in order
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


def test_requests_carry_the_sampling_and_answers_come_back_in_order(server):
    engine = OpenAIEngine(server.url, "served-name", concurrency=3)
    prompts = [f"p{i}" for i in range(7)]
    out = engine.generate(prompts, Sampling(temperature=0.7, top_p=0.9, max_new_tokens=12, n=2, stop=("\n",), seed=5))
    assert out == [[f"echo:p{i}:0:{5 + i}", f"echo:p{i}:1:{5 + i}"] for i in range(7)]
    body = server.requests[0]["body"]
    assert server.requests[0]["path"] == "/v1/completions"
    assert {k: body[k] for k in ("model", "max_tokens", "temperature", "top_p", "n", "stop")} == {
        "model": "served-name",
        "max_tokens": 12,
        "temperature": 0.7,
        "top_p": 0.9,
        "n": 2,
        "stop": ["\n"],
    }
    assert sorted(r["body"]["prompt"] for r in server.requests) == prompts


def test_stop_strings_cut_the_text_even_if_the_server_overshoots():
    s = FakeServer(reply=lambda body, k: "first line\nQuery: second")
    try:
        out = OpenAIEngine(s.url, "m").generate(["x"], Sampling(n=1, stop=("\n", "Query:")))
        assert out == [["first line"]]
        # Greedy decoding sends top_p 1 and no seed when none is asked for.
        greedy = OpenAIEngine(s.url, "m").request_body("x", Sampling(temperature=0.0, top_p=0.5), None)
        assert greedy["top_p"] == 1.0 and "seed" not in greedy and "stop" not in greedy
    finally:
        s.close()


def test_the_key_goes_in_the_authorization_header_from_the_named_variable(server, monkeypatch):
    monkeypatch.setenv("MY_SERVER_KEY", "sk-test-123")
    config = RGArguments(output_dir="x", backend="openai", base_url=[server.url], api_key_env="MY_SERVER_KEY")
    engine = load_engine(config, engine_model(config, "smollm2-135m"))
    engine.generate(["a"], Sampling())
    assert server.requests[-1]["auth"] == "Bearer sk-test-123"
    monkeypatch.delenv("MY_SERVER_KEY")
    load_engine(config, engine_model(config, "smollm2-135m")).generate(["a"], Sampling())
    assert server.requests[-1]["auth"] is None


def test_transient_failures_are_retried_with_exponential_backoff(server):
    delays: list[float] = []
    server.fail = [429, 503, 500]
    engine = OpenAIEngine(server.url, "m", max_retries=3, backoff=0.5, sleep=delays.append)
    assert engine.generate(["a"], Sampling()) == [["echo:a:0:None"]]
    assert delays == [0.5, 1.0, 2.0] and len(server.requests) == 4


def test_the_last_retry_fails_with_one_clear_line(server):
    server.fail = [503] * 10
    engine = OpenAIEngine(server.url, "m", max_retries=2, sleep=lambda d: None)
    with pytest.raises(AlmostError, match=r"kept failing after 2 retries \(HTTP 503 .*fake failure 503\); rerun"):
        engine.generate(["a"], Sampling())
    assert len(server.requests) == 3


def test_a_refused_connection_is_retried_then_reported():
    s = FakeServer()
    url = s.url
    s.close()  # nothing listens there any more
    engine = OpenAIEngine(url, "m", max_retries=1, sleep=lambda d: None)
    with pytest.raises(AlmostError, match="kept failing after 1 retries"):
        engine.generate(["a"], Sampling())


def test_client_errors_are_not_retried(server):
    server.fail = [400]
    engine = OpenAIEngine(server.url, "m", max_retries=5, sleep=lambda d: pytest.fail("a 400 must not be retried"))
    with pytest.raises(AlmostError, match=r"refused the request \(HTTP 400\): fake failure 400"):
        engine.generate(["a"], Sampling())
    assert len(server.requests) == 1


def test_several_servers_take_turns_and_a_retry_moves_to_the_next():
    a, b = FakeServer(), FakeServer()
    try:
        engine = OpenAIEngine(f"{a.url},{b.url}", "m", concurrency=1, sleep=lambda d: None)
        engine.generate([f"p{i}" for i in range(6)], Sampling())
        assert len(a.requests) == 3 and len(b.requests) == 3
        a.fail = [503]
        engine.generate(["q"], Sampling())  # 7th request: a (fails), then b
        assert [r["body"]["prompt"] for r in a.requests[-1:]] == ["q"] and b.requests[-1]["body"]["prompt"] == "q"
    finally:
        a.close()
        b.close()


def test_base_urls_are_normalized_and_checked():
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert split_base_urls(["http://a:1,http://b:2", "http://a:1/v1"]) == ["http://a:1/v1", "http://b:2/v1"]
    with pytest.raises(AlmostError, match="http"):
        split_base_urls("a:1")


def test_the_backend_needs_a_base_url_and_never_resolves_the_served_name():
    with pytest.raises(ValueError, match="--base_url"):
        RGArguments(output_dir="x", backend="openai")
    config = RGArguments(output_dir="x", backend="openai", base_url=["http://h:1"], model_name_or_path="no/such-model", model="served")
    assert engine_model(config, "no/such-model").path == "served"
    assert engine_model(config, "other-user-model").path == "other-user-model"
    with pytest.raises(ValueError, match="--model names the model an openai server serves"):
        RGArguments(output_dir="x", model="smollm2-135m")  # --model used to abbreviate --model_name_or_path


def test_rg_and_pg_run_through_the_openai_backend(server, tmp_path):
    server.reply = lambda body, k: (
        " It is a fine question, and here is a complete answer to it."
        if "Assistant:" in body["prompt"]
        else " How do I plant tomatoes in a small garden?"
    )
    prompts = ["What is a cat?", "How do I cook rice?", "Why is the sky blue?"]
    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in prompts))
    config = RGArguments(
        output_dir=str(tmp_path),
        backend="openai",
        base_url=[server.url],
        prompt_file_path=[str(shipped.WORSE_DEMONSTRATIONS)],
        n_shot=[1],
        chunk_size=2,
    )
    summary = run_rg(config)
    (name,) = summary
    rows = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == prompts
    assert {r["body"]["model"] for r in server.requests} == {"smollm2-135m"}
    pg_dir = tmp_path / "pg"
    run_pg(PGArguments(output_dir=str(pg_dir), backend="openai", base_url=[server.url], num_generation=1, batch_size=2))
    assert (pg_dir / "prompts.txt").read_text() == "How do I plant tomatoes in a small garden?\n"


def test_a_pipeline_can_point_its_generation_stages_at_servers(tmp_path):
    """Served model names are not looked up locally; a configuration may name its own servers."""
    import yaml

    from almost.run.checks import validate
    from almost.run.plan import Planner

    config_path = tmp_path / "served.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "shared": {"backend": "openai", "base_url": ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"], "concurrency": 16},
                "pg": {"model_name_or_path": "llama-2-7b", "num_generation": 4},
                "rg": {
                    "model_name_or_path": "llama-2-7b",
                    "configurations": [
                        {"prompt_file_path": "faithful_prompt.txt", "n_shot": 1},
                        {
                            "model_name_or_path": "llama-2-13b",
                            "base_url": ["http://gpu2:8000/v1"],
                            "prompt_file_path": "faithful_prompt.txt",
                            "n_shot": 1,
                        },
                    ],
                },
                "cs": {"rubric": ["llama-2-13b-faithful-1shot", "llama-2-7b-faithful-1shot"]},
            }
        )
    )
    planner = Planner(yaml.safe_load(config_path.read_text()), tmp_path / "run", config_path)
    steps = planner.plan()
    validate(steps, planner)  # resolving "llama-2-7b" locally would fail: it is a served name
    rg13 = next(s for s in steps if s.name == "rg/llama-2-13b-faithful-1shot")
    assert rg13.flags["base_url"] == ["http://gpu2:8000/v1"] and rg13.flags["backend"] == "openai"
    assert "--base_url" in rg13.argv and "http://gpu2:8000/v1" in rg13.argv
    broken = {**planner.config, "shared": {"backend": "hf"}}
    with pytest.raises(AlmostError, match="llama-2-7b"):
        plan = Planner(broken, tmp_path / "run2", config_path)
        validate(plan.plan(), plan)


def test_rmsp_resumes_after_the_transport_settings_change(tmp_path, tiny_model_path):
    """Raising --max_retries (or moving to other servers) after a failed run must not refuse the resume."""
    from almost.policy.selfplay import RMSPArguments, run_rmsp

    (tmp_path / "prompts.txt").write_text("How do plants grow?\nWhy is the sea salty?\n")
    answer = "Plants grow by turning light, water and carbon dioxide into sugar, and they use it to build new cells."

    class Scorer:
        def score(self, conversations):
            return [1.0] * len(conversations)

    def config(**transport):
        return RMSPArguments(
            output_dir=str(tmp_path / "out"),
            prompts_path=str(tmp_path / "prompts.txt"),
            reward_model_name_or_path="scripted",
            model_name_or_path=tiny_model_path,
            prompt_file_path=str(shipped.BETTER_DEMONSTRATIONS),
            n_shot=1,
            num_candidates=1,
            max_turns=1,
            batch_size=1,
            **transport,
        )

    calls = []

    def failing(prompt, i):
        calls.append(prompt)
        if len(calls) > 1:
            raise AlmostError("the completions endpoint kept failing after 2 retries")
        return answer

    with pytest.raises(AlmostError):
        run_rmsp(config(max_retries=2), policy=ScriptedEngine(failing), user=ScriptedEngine(lambda p, i: " Thanks!"), scorer=Scorer())
    resumed = ScriptedEngine(lambda p, i: answer)
    run_rmsp(
        config(max_retries=20, concurrency=2, request_timeout=5.0),
        policy=resumed,
        user=ScriptedEngine(lambda p, i: " Thanks!"),
        scorer=Scorer(),
    )
    assert len(resumed.calls) == 1  # only the second dialogue was played
