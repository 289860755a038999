"""``almost rm serve`` on loopback with a tiny reward model, its client, ``load_scorer``, and rmsp/pairwise using it."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from scripted_engine import ScriptedEngine

from almost.errors import AlmostError
from almost.policy.selfplay import RMSPArguments, run_rmsp
from almost.readers import read_jsonl
from almost.reward import model as reward_model
from almost.reward.client import RemoteRewardScorer, is_url
from almost.reward.model import RewardScorer, RewardScorerSettings, load_scorer
from almost.reward.serve import make_server

pytestmark = pytest.mark.timeout(300)

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris is the capital of France."}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road? To get to the other side."},
    ],
]


@pytest.fixture(scope="module")
def scorer(tiny_reward_model_path):
    return RewardScorer(tiny_reward_model_path, batch_size=4)


class Served:
    def __init__(self, scorer, token=None, max_rows=16):
        self.httpd = make_server(scorer, "127.0.0.1", 0, token=token, max_rows=max_rows, model_name="tiny")
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def post(self, body: bytes | dict | list, path="/score", headers=None) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(scorer):
    s = Served(scorer)
    yield s
    s.close()


def test_scores_prompt_response_rows_and_messages_like_the_scorer(served, scorer):
    expected = scorer.score(CONVERSATIONS)
    rows = [{"prompt": "What is the capital of France?", "response": "Paris is the capital of France."}, {"messages": CONVERSATIONS[1]}]
    status, reply = served.post({"rows": rows})
    assert status == 200
    assert reply["rewards"] == pytest.approx(expected, abs=1e-5)
    assert served.post(rows)[1]["rewards"] == pytest.approx(expected, abs=1e-5)  # a bare list works too
    assert RemoteRewardScorer(served.url, batch_size=1).score(CONVERSATIONS) == pytest.approx(expected, abs=1e-5)
    assert served.post({"rows": []}) == (200, {"rewards": []})


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "not JSON"),
        ({"rows": {"prompt": "x"}}, 400, "rows"),
        ({"rows": [{"prompt": "x"}]}, 400, "row 0 needs 'messages', 'prompt' + 'response'"),
        (
            {"rows": [{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}]},
            400,
            "last message must be the assistant",
        ),
        ({"rows": [{"prompt": "x", "chosen": "a", "rejected": "b"}]}, 400, "one answer per row"),
        ({"rows": [42]}, 400, "row 0: must be an object"),
        ({"rows": [{"prompt": "q", "response": "a"}] * 17}, 413, "at most 16"),
    ],
)
def test_bad_requests_get_a_4xx_and_a_clear_message(served, body, status, message):
    got_status, reply = served.post(body)
    assert got_status == status and message in reply["error"]
    assert served.post({"rows": [{"prompt": "q", "response": "a"}]})[0] == 200  # still serving


def test_wrong_path_and_scoring_failures_do_not_stop_the_server(scorer):
    class Broken:
        def score(self, conversations):
            raise RuntimeError("out of memory")

    s = Served(Broken())
    try:
        assert s.post({"rows": []}, path="/nope")[0] == 404
        status, reply = s.post({"rows": [{"prompt": "q", "response": "a"}]})
        assert status == 500 and "out of memory" in reply["error"]
        assert s.post({"rows": []}) == (200, {"rewards": []})
        with pytest.raises(AlmostError, match="kept failing after 0 retries"):
            RemoteRewardScorer(s.url, max_retries=0).score(CONVERSATIONS)
    finally:
        s.close()


def test_a_token_is_required_when_asked(scorer, monkeypatch):
    s = Served(scorer, token="s3cret")
    try:
        assert s.post({"rows": []})[0] == 401
        assert s.post({"rows": []}, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert s.post({"rows": []}, headers={"Authorization": "Bearer s3cret"}) == (200, {"rewards": []})
        with pytest.raises(AlmostError, match=r"HTTP 401"):
            RemoteRewardScorer(s.url).health()
        monkeypatch.setenv("ALMOST_RM_TOKEN", "s3cret")
        assert RemoteRewardScorer(s.url, "ALMOST_RM_TOKEN").health() == {"status": "ok", "model": "tiny"}
    finally:
        s.close()


def test_load_scorer_gives_the_client_for_a_url_and_the_model_for_a_path(scorer, tiny_reward_model_path, tiny_model_path, monkeypatch):
    # A URL: the client, sending the token of the settings' variable, its server's health asked first.
    s = Served(scorer, token="s3cret")
    try:
        monkeypatch.setenv("RM_TEST_TOKEN", "s3cret")
        remote = load_scorer(s.url, RewardScorerSettings(token_env="RM_TEST_TOKEN", served_batch_size=3))
        assert isinstance(remote, RemoteRewardScorer) and remote.batch_size == 3
        assert remote.score(CONVERSATIONS) == pytest.approx(scorer.score(CONVERSATIONS), abs=1e-5)
        with pytest.raises(AlmostError, match="HTTP 401"):
            load_scorer(s.url, RewardScorerSettings(token_env="RM_TEST_NO_TOKEN"))
    finally:
        s.close()
    # A path: the checked checkpoint with every local setting passed through.
    loaded = []
    monkeypatch.setattr(reward_model, "RewardScorer", lambda *args, **kwargs: loaded.append((args, kwargs)))
    load_scorer(tiny_reward_model_path, RewardScorerSettings(batch_size=3, max_length=77, dtype="float32", trust_remote_code=True))
    assert loaded == [((tiny_reward_model_path,), {"batch_size": 3, "max_length": 77, "dtype": "float32", "trust_remote_code": True})]
    with pytest.raises(AlmostError, match="is not a reward model"):
        load_scorer(tiny_model_path, RewardScorerSettings())


def test_default_settings_are_the_scorers_own():
    # A stage without a flag for a setting scores as before the settings existed.
    local, served, settings = (
        inspect.signature(RewardScorer).parameters,
        inspect.signature(RemoteRewardScorer).parameters,
        RewardScorerSettings(),
    )
    for name in ("batch_size", "max_length", "dtype", "trust_remote_code"):
        assert getattr(settings, name) == local[name].default
    assert settings.served_batch_size == served["batch_size"].default


def test_rmsp_scores_with_the_served_reward_model(tmp_path, served, scorer, tiny_model_path):
    demos = tmp_path / "demos.txt"
    demos.write_text(
        "The following are conversations between a human and a helpful assistant.\n-----\n"
        "Human: What is the capital of France?\n\nAssistant: The capital of France is Paris, which is also its largest city.\n-----\n"
        "Human: How do I boil an egg?\n\nAssistant: Put the egg in boiling water for nine minutes, then cool it in cold water.\n"
    )
    (tmp_path / "prompts.txt").write_text("How do plants grow?\nWhy is the sea salty?\n")
    answers = [
        "Plants grow by turning light, water and carbon dioxide into sugar, and they use it to build new cells.",
        "Plants grow from cells dividing at their tips; roots take up water while leaves capture light for energy.",
    ]
    config = RMSPArguments(
        output_dir=str(tmp_path / "out"),
        prompts_path=str(tmp_path / "prompts.txt"),
        reward_model_name_or_path=served.url,
        model_name_or_path=tiny_model_path,
        prompt_file_path=str(demos),
        n_shot=2,
        num_candidates=2,
        max_turns=1,
    )
    assert is_url(config.reward_model_name_or_path)
    run_rmsp(config, policy=ScriptedEngine(lambda p, i: answers[i]), user=ScriptedEngine(lambda p, i: " Thanks!"))
    for row in read_jsonl(tmp_path / "out" / "demonstrations.jsonl"):
        candidates = row["turns"][0]["candidates"]
        expected = scorer.score([row["messages"][:1] + [{"role": "assistant", "content": c["text"]}] for c in candidates])
        assert [c["reward"] for c in candidates] == pytest.approx(expected, abs=1e-5)
    # A reward server that is down fails before any generation, in one line.
    down = RMSPArguments(**{**config.__dict__, "reward_model_name_or_path": "http://127.0.0.1:9", "output_dir": str(tmp_path / "down")})
    with pytest.raises(AlmostError, match="reward server http://127.0.0.1:9 kept failing"):
        run_rmsp(down, policy=ScriptedEngine(lambda p, i: pytest.fail("generated before checking the reward server")))


def test_the_rm_serve_command_scores_over_http_and_refuses_bad_input(tmp_path, tiny_reward_model_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad = subprocess.run([sys.executable, "-m", "almost", "rm", "serve"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--model_name_or_path is required" in bad.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "almost", "rm", "serve", "--model_name_or_path", tiny_reward_model_path, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("almost rm serve: scoring with") and "http://127.0.0.1:" in line
        url = line.split(" at ")[1].split()[0]
        client = RemoteRewardScorer(url)
        assert client.health()["status"] == "ok"
        rewards = client.score(CONVERSATIONS)
        assert len(rewards) == 2 and all(isinstance(r, float) for r in rewards) and rewards[0] != rewards[1]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_rl_scores_with_the_served_reward_model(tmp_path, scorer, tiny_model_path):
    import csv

    from almost.policy.rl import RLConfig, run_rl

    class Counting:
        def __init__(self):
            self.rows = 0

        def score(self, conversations):
            self.rows += len(conversations)
            return scorer.score(conversations)

    counting = Counting()
    s = Served(counting, max_rows=4096)
    try:
        (tmp_path / "prompts.txt").write_text("What is the capital of France?\nHow do I boil an egg?\n")
        from almost.config import parse

        (config,) = parse(
            "almost rl",
            [RLConfig],
            [
                "--model_name_or_path",
                tiny_model_path,
                "--reward_model_name_or_path",
                s.url,
                "--prompts_path",
                str(tmp_path / "prompts.txt"),
                "--output_dir",
                str(tmp_path / "rl"),
                "--max_steps",
                "1",
                "--max_completion_length",
                "8",
                "--report_to",
                "none",
            ],
        )
        run_rl(config)
        rows = list(csv.DictReader(open(tmp_path / "rl" / "rl_log.csv")))
        assert len(rows) == 1 and rows[0]["rm_reward"] != ""
        assert counting.rows > 0  # every reward came over HTTP
    finally:
        s.close()
