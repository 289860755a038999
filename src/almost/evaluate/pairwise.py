"""``almost eval pairwise``: a model against a baseline on the same questions, judged in both orders.

Both models answer every question of a Vicuna-style question file (JSONL rows with ``question_id``,
``text`` and ``category``; ``question``/``prompt``/``turns`` also work). Answers are cached in
``answers_<model>-<settings>.jsonl`` (written as they are made; a rerun reuses or resumes them),
where ``<settings>`` hashes the model's contents and the sampling settings, and each answer is kept
under its question's id and text: an edited question is answered again. The cache lives in
``--output_dir``, or in ``--answers_dir``: evaluations of the same models by different judges can
share one, so that each answer is generated once.
A judge then compares each pair twice, with the model's answer shown first and then second:

- ``--judge rm:PATH``: a reward model from ``almost rm train`` scores both answers;
- ``--judge llm:MODEL``: a local model (any ``--model_name_or_path`` spelling) reads a judging prompt;
- ``--judge openai:URL``: an OpenAI-compatible chat endpoint (``--judge_model``; the key, if any, from
  the environment variable named by ``--judge_api_key_env``).

Each order gives the two answers a score (RM rewards, 1/0/0.5 for an LLM verdict A/B/tie, or with
``--judge_logprobs`` each answer's share of the judge's next-token P(A) + P(B)); the model wins a
question when its two scores add up to more than the baseline's, so a judge that always says "A"
produces ties, and one that only leans towards A still shows which answer it prefers. Writes ``metrics.json`` (win/tie/loss, win rate
(wins + ties/2) / n with a 95% interval, and split by length: the win rate where the model's answer
is shorter and where it is longer than the baseline's, and their mean, the length-balanced win rate,
with a 95% bootstrap interval; all of these over all questions and per category),
``metrics.txt`` and ``judgments.jsonl``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from ..chat import as_messages, render_prompt
from ..config import EngineArguments, require_option
from ..digests import digest_model, fingerprint
from ..engines import Sampling, engine_model, load_engine, resolve_backend
from ..errors import AlmostError
from ..locks import lock_output_dir
from ..readers import read_jsonl
from ..redaction import redact_url
from ..resumable import ResumableJsonl
from ..reward.model import RewardScorerSettings, load_scorer
from ..shipped import SHIPPED_QUESTIONS, shipped_or_path
from ..stages import EVAL_PAIRWISE
from ..stats import OUTCOME_POINTS, length_balanced, win_rate
from .judges import (
    Judge,
    LLMJudge,
    LogprobJudge,
    RewardModelJudge,
    check_judge_url,
    local_completer,
    local_verdict_logprobs,
    openai_completer,
    parse_judge_spec,
)
from .scoring import write_results


@dataclass(frozen=True)
class Question:
    question_id: str
    text: str
    category: str | None = None


@dataclass
class PairwiseConfig(EngineArguments):
    """Settings of ``almost eval pairwise``; --model_name_or_path is the model being evaluated."""

    baseline_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The model to compare against (same spellings as --model_name_or_path)."}
    )
    data_path: str | None = field(
        default=None,
        metadata={
            "help": (
                "Question JSONL: question_id, text (or question/prompt/turns), category; or a shipped set by name: "
                "proof-questions (60 helpful + 60 harmless held-out questions)."
            )
        },
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where judgments.jsonl, metrics.json and metrics.txt go (and answers_*.jsonl, unless --answers_dir)."},
    )
    answers_dir: str | None = field(
        default=None,
        metadata={
            "help": (
                "Where the cached answers answers_*.jsonl go (default: --output_dir). Runs that differ only in their judge can "
                "share one folder and answer each question once."
            )
        },
    )
    judge: str | None = field(
        default=None,
        metadata={
            "help": (
                "rm:PATH (reward model) or rm:URL (`almost rm serve`; token from $ALMOST_RM_TOKEN), llm:MODEL (local judge "
                "model) or openai:URL (OpenAI-compatible endpoint)."
            )
        },
    )
    judge_model: str | None = field(default=None, metadata={"help": "Model name sent to an openai: judge endpoint."})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the openai: endpoint's API key (unset: no key sent)."}
    )
    judge_max_new_tokens: int = field(default=256, metadata={"help": "Longest judge reply (llm: and openai: judges)."})
    judge_logprobs: bool = field(
        default=False,
        metadata={
            "help": (
                "llm: judges: read the verdict from the judge's next-token probabilities of A and B (one forward pass per "
                "order, no reply to generate or parse, and a judge that favours a position still shows its preference "
                "between the answers) instead of a generated [[A]]/[[B]]/[[C]] verdict. rm: judges ignore it."
            )
        },
    )
    judge_timeout: float = field(default=120.0, metadata={"help": "Seconds to wait for one openai: endpoint reply."})
    judge_allow_http: bool = field(
        default=False,
        metadata={
            "help": (
                "Allow a plain http:// openai: endpoint on another machine (the key and the questions cross the network "
                "unencrypted); loopback hosts are always allowed."
            )
        },
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer of the model and the baseline, in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "Answer sampling temperature (0 = greedy, the same answers every run)."})
    max_questions: int | None = field(default=None, metadata={"help": "Use only the first N questions."})


def question_data_path(data_path: str) -> Path:
    """A shipped question set's short name (``proof-questions``) → its file; anything else is a path."""
    return shipped_or_path(data_path, SHIPPED_QUESTIONS)


def read_questions(path: str | Path, limit: int | None = None) -> list[Question]:
    rows = read_jsonl(path, "question file")
    questions, seen = [], set()
    for i, row in enumerate(rows, 1):
        text = row.get("text") or row.get("question") or row.get("prompt")
        if text is None and isinstance(row.get("turns"), list) and row["turns"]:
            text = row["turns"][0]  # MT-bench: the first turn is the question
        if not isinstance(text, str) or not text.strip():
            raise AlmostError(f"{path} row {i} has no question text (text, question, prompt or turns)")
        qid = str(row.get("question_id", row.get("id", i)))
        if qid in seen:
            raise AlmostError(f"{path} row {i}: question_id {qid} appears twice")
        seen.add(qid)
        questions.append(Question(qid, text.strip(), row.get("category") or row.get("type")))
    questions = questions[:limit]
    if not questions:
        raise AlmostError(f"{path} has no questions")
    return questions


def answer_key(question: Question) -> str:
    """What an answer is cached under: the question's id *and* text, so that a question file edited
    under the same ids gets new answers instead of the old questions' ones."""
    return f"{question.question_id}:{fingerprint({'text': question.text})}"


def generate_answers(
    get_engine: Callable[[], object], questions: Sequence[Question], sampling: Sampling, path: Path, settings: dict, batch_size: int
) -> dict[str, str]:
    """Answers by question id, cached at ``path`` under ``answer_key``: reused when finished,
    resumed when half-written.

    ``get_engine`` is called only when something is left to generate.
    """
    store = ResumableJsonl(path, "key", settings)
    if store.complete:
        rows = read_jsonl(path)
        cached = {r.get("key"): r["answer"] for r in rows}
        if all(answer_key(q) in cached for q in questions):
            return {q.question_id: cached[answer_key(q)] for q in questions}
        store.reset()  # made for other or fewer questions: regenerate the whole file
    with store:
        todo = [q for q in questions if not store.done(answer_key(q))]
        engine = get_engine() if todo else None
        tokenizer = getattr(engine, "tokenizer", None)
        for start in tqdm(range(0, len(todo), batch_size), desc=f"answers {path.stem}", unit="batch"):
            batch = todo[start : start + batch_size]
            prompts = [answer_prompt(tokenizer, q.text) for q in batch]
            # The seed follows the question, not the batch: a resumed run samples what an uninterrupted one does.
            outputs = (
                [
                    engine.generate(
                        [prompt], replace(sampling, seed=(sampling.seed or 0) + int(fingerprint({"q": q.question_id}), 16) % 100_000)
                    )[0]
                    for prompt, q in zip(prompts, batch)
                ]
                if sampling.temperature > 0
                else engine.generate(prompts, sampling)
            )
            store.append(
                {"key": answer_key(q), "question_id": q.question_id, "question": q.text, "answer": out[0].strip()}
                for q, out in zip(batch, outputs)
            )
        rows = store.finalize([answer_key(q) for q in questions])
    return {r["question_id"]: r["answer"] for r in rows}


def answer_prompt(tokenizer, question: str) -> str:
    """The question as the answering model sees it (its chat template, else the seed's transcript)."""
    return render_prompt(tokenizer, as_messages(question))


def build_judge(config: PairwiseConfig) -> Judge:
    kind, target = parse_judge_spec(config.judge)
    if kind == "rm":
        # Loaded, or its server's health asked, now: a judge that cannot be used fails before any answer
        # is generated. --dtype and --trust_remote_code hold for every model this command loads.
        settings = RewardScorerSettings(batch_size=config.batch_size, dtype=config.dtype, trust_remote_code=config.trust_remote_code)
        return RewardModelJudge(load_scorer(target, settings))
    if kind == "llm":
        # Resolved now (a bad --judge fails before any answer is generated), loaded when the answers are
        # made and their engines closed: one model in memory at a time.
        model = engine_model(config, target)
        if config.judge_logprobs:
            if resolve_backend(config.backend) == "openai":
                raise AlmostError("--judge_logprobs reads the judge's token probabilities: it needs --backend hf or vllm")
            return LogprobJudge(local_verdict_logprobs(lambda: load_engine(config, model)))
        return LLMJudge(local_completer(lambda: load_engine(config, model), config.judge_max_new_tokens))
    if config.judge_logprobs:
        raise AlmostError("--judge_logprobs reads a local llm: judge's token probabilities; an openai: endpoint gives only replies")
    check_judge_url(target, config.judge_allow_http)
    return LLMJudge(
        openai_completer(
            target, config.judge_model, os.environ.get(config.judge_api_key_env), config.judge_max_new_tokens, config.judge_timeout
        )
    )


def judge_both_orders(judge: Judge, questions: Sequence[Question], model_answers: dict, baseline_answers: dict) -> list[dict]:
    """Every question judged with the model's answer first, then second; the sums decide. Where both
    answers are the same text the question is a tie, unjudged: a judge's scores of one text would
    differ only by the rounding of the batch it was read in (measured: a logprob judge's 1.3e-6 made
    a win of one)."""
    judged = [q for q in questions if model_answers[q.question_id] != baseline_answers[q.question_id]]
    items = []
    for q in judged:
        a, b = model_answers[q.question_id], baseline_answers[q.question_id]
        items += [(q.text, a, b), (q.text, b, a)]
    scores = judge.compare(items) if items else []
    replies = getattr(judge, "replies", None) or [None] * len(items)
    # Per judged question: its (model first, model second) score pairs and the judge's two replies.
    verdicts = {q.question_id: (scores[2 * k : 2 * k + 2], replies[2 * k : 2 * k + 2]) for k, q in enumerate(judged)}
    rows = []
    for q in questions:
        row = {"question_id": q.question_id, "category": q.category}
        if q.question_id not in verdicts:
            row.update(model_score=None, baseline_score=None, outcome="tie", identical_answers=True)
        else:
            ((m1, b1), (b2, m2)), pair_replies = verdicts[q.question_id]
            model_total, baseline_total = m1 + m2, b1 + b2
            outcome = "win" if model_total > baseline_total else "loss" if model_total < baseline_total else "tie"
            row.update(model_score=model_total, baseline_score=baseline_total, outcome=outcome)
            if pair_replies[0] is not None:
                row["judge_replies"] = pair_replies
        row.update(model_length=len(model_answers[q.question_id]), baseline_length=len(baseline_answers[q.question_id]))
        rows.append(row)
    return rows


def pairwise_metrics(rows: Sequence[dict]) -> dict:
    """The win rate and its length split, over all questions and per category."""
    metrics = outcome_metrics(rows)
    categories = sorted({r["category"] or "(none)" for r in rows})
    metrics["per_category"] = {c: outcome_metrics([r for r in rows if (r["category"] or "(none)") == c]) for c in categories}
    return metrics


def outcome_metrics(rows: Sequence[dict]) -> dict:
    metrics = win_rate([r["outcome"] for r in rows])
    if all("model_length" in r and "baseline_length" in r for r in rows):
        metrics["length_balanced"] = length_split(rows)
    return metrics


def length_split(rows: Sequence[dict]) -> dict:
    """Win rate where the model's answer is shorter and where it is longer than the baseline's
    (characters), and their mean: a judge that only rewards length gives a balanced 0.5."""
    points = [OUTCOME_POINTS[r["outcome"]] for r in rows]
    return length_balanced(points, [r["model_length"] for r in rows], [r["baseline_length"] for r in rows], value="win_rate", side="model")


def pairwise_table(metrics: dict) -> str:
    def line(name: str, m: dict) -> str:
        low, high = m["ci95"]
        return f"{name:<24}{m['win']:>5}{m['tie']:>5}{m['loss']:>5}  {m['win_rate']:>8.3f}  [{low:.3f}, {high:.3f}]"

    lines = [f"{'':<24}{'win':>5}{'tie':>5}{'loss':>5}  {'win rate':>8}  {'95% interval':>14}", line("all", metrics)]
    lines += [line("  " + c, m) for c, m in metrics["per_category"].items()]

    def length_line(split: dict) -> str:
        def rate(part: dict) -> str:
            return f"{part['rate']:.3f} ({part['n']})" if part["rate"] is not None else f"- ({part['n']})"

        balanced = "-" if split["win_rate"] is None else f"{split['win_rate']:.3f}"
        if split["ci95"][0] is not None:
            balanced += f" [{split['ci95'][0]:.3f}, {split['ci95'][1]:.3f}]"
        return (
            f"win rate where the model's answer is shorter: {rate(split['model_shorter'])}, longer: {rate(split['model_longer'])}, "
            f"same length: {split['same_length']}; length-balanced: {balanced}"
        )

    if metrics.get("length_balanced"):
        lines.append(length_line(metrics["length_balanced"]))
        if len(metrics["per_category"]) > 1:
            lines += [f"  {c}: {length_line(m['length_balanced'])}" for c, m in metrics["per_category"].items()]
    return "\n".join(lines)


def _answers_for(role_name: str, model_name: str, engine, questions, config: PairwiseConfig, answers_dir: Path) -> dict[str, str]:
    sampling = Sampling(temperature=config.temperature, max_new_tokens=config.max_new_tokens, seed=config.seed)
    resolved = engine_model(config, model_name)
    # The model by content: a checkpoint retrained in the same folder gets a cache file of its own.
    settings = {"model": digest_model(resolved.path), "sampling": sampling.__dict__, "backend": config.backend, "dtype": config.dtype}
    path = answers_dir / f"answers_{resolved.short_name}-{fingerprint(settings)[:8]}.jsonl"
    if config.overwrite:
        ResumableJsonl(path, "key", settings).reset()
    loaded = []

    def get_engine():
        if engine is not None:
            return engine
        loaded.append(load_engine(config, resolved))
        return loaded[-1]

    print(f"almost eval pairwise: {role_name} answers in {path}")
    try:
        return generate_answers(get_engine, questions, sampling, path, settings, config.batch_size)
    finally:
        for own in loaded:  # the baseline's (or the judge's) engine comes next: one model in memory at a time
            own.close()


def run_pairwise(config: PairwiseConfig, model_engine=None, baseline_engine=None, judge: Judge | None = None) -> dict:
    """Answer, judge and summarise. Engines and judge can be passed in (tests); else they are loaded."""
    if not config.baseline_model_name_or_path:
        raise AlmostError("--baseline_model_name_or_path is required (the model to compare against)")
    require_option(config.data_path, "data_path")
    require_option(config.output_dir, "output_dir")
    questions = read_questions(question_data_path(config.data_path), config.max_questions)
    # The judge is set up first so that a bad --judge fails before any answer is generated.
    judge = judge or build_judge(config)
    answers_dir = Path(config.answers_dir or config.output_dir)
    if config.answers_dir:
        # The cache files have no lock of their own: a shared folder is held like an output directory,
        # so a second run on it at the same time stops instead of appending to the same .partial file.
        lock_output_dir(answers_dir, f"almost eval pairwise --output_dir {config.output_dir}")
    model_answers = _answers_for("model", config.model_name_or_path, model_engine, questions, config, answers_dir)
    baseline_answers = _answers_for("baseline", config.baseline_model_name_or_path, baseline_engine, questions, config, answers_dir)
    rows = judge_both_orders(judge, questions, model_answers, baseline_answers)
    metrics = pairwise_metrics(rows)
    metrics.update(
        task="pairwise",
        model=config.model_name_or_path,
        baseline=config.baseline_model_name_or_path,
        judge=redact_url(config.judge or judge.name),
        data=str(config.data_path),
    )
    write_results(EVAL_PAIRWISE.outputs, config.output_dir, metrics, pairwise_table(metrics), rows)
    return metrics
