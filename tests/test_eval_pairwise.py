"""Pairwise evaluation: order swapping, verdict parsing, cached answers, an OpenAI-compatible stub judge."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from scripted_engine import ScriptedEngine

from almost.cli import main as cli_main
from almost.errors import AlmostError
from almost.evaluate.judges import VERDICT_FOLLOW_UP, LLMJudge, LogprobJudge, RewardModelJudge, openai_completer, parse_verdict
from almost.evaluate.pairwise import PairwiseConfig, Question, judge_both_orders, read_questions, run_pairwise
from almost.shipped import QUESTIONS_SAMPLE
from almost.stats import win_rate

QUESTIONS = [Question("1", "q1", "math"), Question("2", "q2", "math"), Question("3", "q3", "writing")]
MODEL = {"1": "long good answer", "2": "long good answer", "3": "meh"}
BASELINE = {"1": "bad", "2": "bad", "3": "meh too"}


class ScriptedJudge:
    name = "scripted"

    def __init__(self, decide):
        self.decide = decide

    def compare(self, items):
        return [self.decide(q, a, b) for q, a, b in items]


def test_judge_always_preferring_position_a_gives_ties():
    rows = judge_both_orders(ScriptedJudge(lambda q, a, b: (1.0, 0.0)), QUESTIONS, MODEL, BASELINE)
    assert [r["outcome"] for r in rows] == ["tie", "tie", "tie"]


def test_judge_preferring_content_wins_and_loses():
    rows = judge_both_orders(ScriptedJudge(lambda q, a, b: (float(len(a)), float(len(b)))), QUESTIONS, MODEL, BASELINE)
    assert [r["outcome"] for r in rows] == ["win", "win", "loss"]


def test_llm_judge_parses_verdicts_in_both_orders():
    # A judge that reads the content: prefers the answer containing "good", whatever its position.
    def complete(conversations):
        replies = []
        for messages in conversations:
            text = messages[0]["content"]
            a = text.split("[Response A]\n")[1].split("\n\n[Response B]")[0]
            replies.append("A is better. [[A]]" if "good" in a else "B is better.\n[[B]]" if "good" in text else "Same. [[C]]")
        return replies

    rows = judge_both_orders(LLMJudge(complete), QUESTIONS, MODEL, BASELINE)
    assert [r["outcome"] for r in rows] == ["win", "win", "tie"]
    assert rows[0]["judge_replies"][0].endswith("[[A]]") and rows[0]["judge_replies"][1].endswith("[[B]]")


def test_logprob_judge_leaning_to_position_a_still_shows_its_preference():
    # P(A) is high in every order (a first-position bias a generated verdict would turn into "A" twice,
    # a tie), and a little higher where A is the answer containing "good".
    def verdict_logprobs(conversations):
        pairs = []
        for messages in conversations:
            text = messages[0]["content"]
            assert text.endswith("[[B]] if Response B is better.")
            a = text.split("[Response A]\n")[1].split("\n\n[Response B]")[0]
            b = text.split("[Response B]\n")[1].split("\n\n")[0]
            lean = 0.5 if "good" in a else -0.5 if "good" in b else 0.0
            pairs.append((math.log(0.6) + lean, math.log(0.1)))
        return pairs

    judge = LogprobJudge(verdict_logprobs)
    rows = judge_both_orders(judge, QUESTIONS, MODEL, BASELINE)
    assert [r["outcome"] for r in rows] == ["win", "win", "tie"]
    share = 1 / (1 + 0.1 / (0.6 * math.exp(0.5)))  # A's share where the model's answer is shown first
    assert rows[0]["model_score"] == pytest.approx(share + 1 - 1 / (1 + 0.1 / (0.6 * math.exp(-0.5))))
    assert rows[0]["judge_replies"][0] == f"P(A) {0.6 * math.exp(0.5):.4f}, P(B) 0.1000: A's share {share:.4f}"


def test_llm_judge_without_a_verdict_is_asked_once_more_for_it():
    # First replies argue without the [[X]] line; asked again in the same conversation, the judge
    # names B for the first question and still nothing for the others (a tie, as before).
    calls = []

    def complete(conversations):
        calls.append(conversations)
        if len(conversations[0]) == 1:
            return ["Response B explains more." for _ in conversations]
        return ["[[B]]" if i == 0 else "Both are fine." for i, _ in enumerate(conversations)]

    rows = judge_both_orders(LLMJudge(complete), QUESTIONS[:2], MODEL, BASELINE)
    assert [len(c) for c in calls] == [4, 4]  # both orders of both questions asked twice, in one call each
    follow_up = calls[1][0]
    assert [m["role"] for m in follow_up] == ["user", "assistant", "user"] and follow_up[1]["content"] == "Response B explains more."
    assert follow_up[2]["content"] == VERDICT_FOLLOW_UP
    # Question 1, order (model, baseline): B = the baseline; the other order gave no verdict: baseline 1 + 0.5.
    assert rows[0]["outcome"] == "loss" and rows[0]["judge_replies"][0].endswith(f"[{VERDICT_FOLLOW_UP}]\n[[B]]")
    assert rows[1]["outcome"] == "tie"


@pytest.mark.parametrize("text,verdict", [("[[A]]", "A"), ("x [[B]] then [[ C ]]", "C"), ("no verdict", None)])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_win_rate_interval():
    m = win_rate(["win"] * 6 + ["tie"] * 2 + ["loss"] * 2)
    assert (m["win"], m["tie"], m["loss"], m["n"]) == (6, 2, 2, 10)
    assert m["win_rate"] == pytest.approx(0.7)
    low, high = m["ci95"]
    assert 0.4 < low < 0.7 < high <= 1.0


def test_rm_judge_uses_rewards_of_question_and_answer():
    class LengthScorer:
        def score(self, conversations):
            assert all(c[0]["role"] == "user" and c[-1]["role"] == "assistant" for c in conversations)
            return [float(len(c[-1]["content"])) for c in conversations]

    rows = judge_both_orders(RewardModelJudge(LengthScorer()), QUESTIONS, MODEL, BASELINE)
    assert [r["outcome"] for r in rows] == ["win", "win", "loss"]


def test_run_pairwise_caches_answers(tmp_path, tiny_model_path):
    model = ScriptedEngine(lambda prompt, i: "a good answer")
    baseline = ScriptedEngine(lambda prompt, i: "bad")
    judge = ScriptedJudge(lambda q, a, b: (1.0, 0.0) if "good" in a else (0.0, 1.0))
    config = PairwiseConfig(
        model_name_or_path=tiny_model_path,
        baseline_model_name_or_path=str(tmp_path),  # any other local checkpoint name works for the cache key
        data_path=str(QUESTIONS_SAMPLE),
        output_dir=str(tmp_path / "e"),
        max_new_tokens=8,
    )
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    metrics = run_pairwise(config, model, baseline, judge)
    assert (metrics["win"], metrics["n"]) == (10, 10) and metrics["win_rate"] == 1.0
    assert set(metrics["per_category"]) == {"generic", "knowledge", "writing", "math", "coding", "safety"}
    assert len(list((tmp_path / "e").glob("answers_*.jsonl"))) == 2

    # A rerun reads the cached answers: engines that would fail are never called.
    def fail(prompt, i):
        raise AssertionError("regenerated a cached answer")

    again = run_pairwise(config, ScriptedEngine(fail), ScriptedEngine(fail), judge)
    assert again["win"] == 10


def test_a_second_judge_reuses_the_answers_in_a_shared_answers_dir(tmp_path, tiny_model_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    shared = tmp_path / "answers"

    def evaluate(judge_name, judge):
        model, baseline = ScriptedEngine(lambda prompt, i: "a good answer"), ScriptedEngine(lambda prompt, i: "bad")
        config = PairwiseConfig(
            model_name_or_path=tiny_model_path,
            baseline_model_name_or_path=str(tmp_path),
            data_path=str(QUESTIONS_SAMPLE),
            output_dir=str(tmp_path / f"by-{judge_name}"),
            answers_dir=str(shared),
            max_new_tokens=8,
        )
        return run_pairwise(config, model, baseline, judge), len(model.calls) + len(baseline.calls)

    first, first_calls = evaluate("content", ScriptedJudge(lambda q, a, b: (1.0, 0.0) if "good" in a else (0.0, 1.0)))
    second, second_calls = evaluate("position", ScriptedJudge(lambda q, a, b: (1.0, 0.0)))
    assert first_calls > 0 and second_calls == 0  # the second judge's run generated nothing
    assert (first["win"], second["tie"]) == (10, 10)
    assert len(list(shared.glob("answers_*.jsonl"))) == 2
    assert not list(tmp_path.glob("by-*/answers_*"))  # only judgments and metrics in each step's folder


class _StubChat(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _StubChat.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        text = body["messages"][0]["content"]
        a = text.split("[Response A]\n")[1].split("\n\n[Response B]")[0]
        reply = {"choices": [{"message": {"role": "assistant", "content": "[[A]]" if "good" in a else "[[B]]"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_judge_against_local_stub(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _StubChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("STUB_KEY", "sekrit")
        complete = openai_completer(f"http://127.0.0.1:{server.server_port}/v1", "judge-model", "sekrit", 32, 10)
        rows = judge_both_orders(LLMJudge(complete), QUESTIONS, MODEL, BASELINE)
    finally:
        server.shutdown()
        server.server_close()
    assert [r["outcome"] for r in rows] == ["win", "win", "tie"]
    assert _StubChat.seen[0]["path"] == "/v1/chat/completions"
    assert _StubChat.seen[0]["auth"] == "Bearer sekrit" and _StubChat.seen[0]["body"]["model"] == "judge-model"


def test_openai_judge_unreachable_is_one_clear_error():
    complete = openai_completer("http://127.0.0.1:9/v1", "m", None, 8, 2)
    with pytest.raises(AlmostError, match="cannot reach judge endpoint"):
        complete([[{"role": "user", "content": "x"}]])


def test_read_questions_rejects_duplicates_and_empty_rows(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 1, "text": "b"}\n')
    with pytest.raises(AlmostError, match="twice"):
        read_questions(str(path))
    path.write_text('{"question_id": 1, "category": "x"}\n')
    with pytest.raises(AlmostError, match="no question text"):
        read_questions(str(path))


@pytest.mark.parametrize(
    "judge",
    [
        "nonsense",
        "gpt:foo",
        "openai:ftp://x",
        "rm:/nonexistent/rm",
        "openai:https://x.test --judge_logprobs",
        "LLM --backend openai --base_url http://127.0.0.1:9/v1",
    ],
)
def test_pairwise_bad_judge_exits_2_before_any_output(judge, tmp_path, tiny_model_path, capsys):
    out = tmp_path / "e"
    argv = ["eval", "pairwise", "--model_name_or_path", tiny_model_path, "--baseline_model_name_or_path", tiny_model_path]
    judge = judge.replace("LLM", f"llm:{tiny_model_path} --judge_logprobs")
    argv += ["--data_path", str(QUESTIONS_SAMPLE), "--output_dir", str(out), "--judge", *judge.split()]
    assert cli_main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


def test_one_loaded_model_in_memory_at_a_time(tmp_path, tiny_model_path, monkeypatch):
    """The engines pairwise loads itself (model, baseline, llm judge) are closed before the next one
    loads: an in-process vLLM engine keeps its memory until closed (9 GB peak with two of them)."""
    from almost.evaluate import pairwise

    loaded: list[ScriptedEngine] = []

    def load_engine(config, model):
        assert all(e.closed for e in loaded), "a new engine was loaded while another was still open"

        def respond(prompt, i):
            return "[[A]]" if "[Response A]" in prompt else f"answer of {model.path}"

        engine = ScriptedEngine(respond)
        engine.tokenizer = None
        loaded.append(engine)
        return engine

    monkeypatch.setattr(pairwise, "load_engine", load_engine)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # a second local checkpoint name: its own answers
    config = PairwiseConfig(
        model_name_or_path=tiny_model_path,
        baseline_model_name_or_path=str(tmp_path),
        judge=f"llm:{tiny_model_path}",
        data_path=str(QUESTIONS_SAMPLE),
        output_dir=str(tmp_path / "e"),
        max_new_tokens=8,
        max_questions=2,
    )
    metrics = run_pairwise(config)
    assert len(loaded) == 3 and metrics["n"] == 2  # model, baseline, then the judge


def test_logprob_judge_on_a_local_model(tmp_path, tiny_model_path):
    """--judge llm:MODEL --judge_logprobs end to end on the HF engine: every question judged in both
    orders from one forward pass each, the probabilities kept in judgments.jsonl."""
    # Scripted answers that differ (two tiny random models answer alike: identical answers are not judged).
    model, baseline = ScriptedEngine(lambda prompt, i: "a careful, helpful answer"), ScriptedEngine(lambda prompt, i: "No.")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    config = PairwiseConfig(
        model_name_or_path=tiny_model_path,
        baseline_model_name_or_path=str(tmp_path),
        judge=f"llm:{tiny_model_path}",
        judge_logprobs=True,
        backend="hf",
        data_path=str(QUESTIONS_SAMPLE),
        output_dir=str(tmp_path / "e"),
        max_new_tokens=4,
        max_questions=3,
    )
    metrics = run_pairwise(config, model, baseline)
    rows = [json.loads(line) for line in (tmp_path / "e" / "judgments.jsonl").read_text().splitlines()]
    assert metrics["n"] == len(rows) == 3
    for row in rows:
        assert all(reply.startswith("P(A) ") for reply in row["judge_replies"])
        # Each order's two shares add up to 1, so the two orders' to 2.
        assert row["model_score"] + row["baseline_score"] == pytest.approx(2.0)
        assert row["outcome"] == ("win" if row["model_score"] > row["baseline_score"] else "loss")


def test_identical_answers_are_a_tie_the_judge_is_not_asked_about():
    asked = []

    def decide(q, a, b):
        asked.append(q)
        return (float(len(a)), float(len(b)) + 0.1 * (a == b))  # a judge that would break the tie by rounding

    model = {**MODEL, "3": BASELINE["3"]}
    rows = judge_both_orders(ScriptedJudge(decide), QUESTIONS, model, BASELINE)
    assert [r["outcome"] for r in rows] == ["win", "win", "tie"] and asked == ["q1", "q1", "q2", "q2"]
    assert rows[2]["identical_answers"] and rows[2]["model_score"] is None and "identical_answers" not in rows[0]
