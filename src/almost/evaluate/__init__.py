"""Evaluation (step 7): static HHH A/B accuracy, TruthfulQA MC1, and pairwise model-vs-baseline judging.

The sample files are small, hand-written by this project (not copies of the public benchmarks): they
check that the evaluations run and show the shape of their input; report numbers on the real data.
The exception is real human preference data: ``hh_harmless_{dev,test}.jsonl.gz``, the whole test
split of Anthropic's HH-RLHF harmless-base (MIT), halved once by a seeded permutation
(``scripts/make_hh_eval_split.py``; see ``assets/eval/README.md``). Never train on them.
``proof_questions.jsonl`` is the proof run's held-out pairwise question set: our own helpful
questions, held out from PG's seeds, and real human requests from that test half
(``scripts/make_proof_questions.py``).
"""

from pathlib import Path

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "assets" / "eval"
HHH_SAMPLE = SAMPLE_DATA / "hhh_sample.jsonl"  # Anthropic-HH transcripts with `type`
TRUTHFULQA_SAMPLE = SAMPLE_DATA / "truthfulqa_sample.jsonl"  # HF truthful_qa multiple_choice layout
QUESTIONS_SAMPLE = SAMPLE_DATA / "questions.jsonl"  # Vicuna-style questions with categories
HH_HARMLESS_DEV = SAMPLE_DATA / "hh_harmless_dev.jsonl.gz"  # choose options on this half
HH_HARMLESS_TEST = SAMPLE_DATA / "hh_harmless_test.jsonl.gz"  # report on this half
# Short names `almost rm eval --data_path` accepts for the shipped human preference pairs.
SHIPPED_PAIRS = {"hh-harmless-dev": HH_HARMLESS_DEV, "hh-harmless-test": HH_HARMLESS_TEST}
PROOF_QUESTIONS = SAMPLE_DATA / "proof_questions.jsonl"  # 60 helpful + 60 harmless held-out questions
# Short names `almost eval pairwise --data_path` accepts for the shipped question sets.
SHIPPED_QUESTIONS = {"proof-questions": PROOF_QUESTIONS}


def shipped_or_path(data_path: str, shipped: dict[str, Path]) -> Path:
    """A shipped set's short name (``hh-harmless-dev``, ``proof-questions``) → its file; anything
    else, or a local file of that name, is a path."""
    if data_path in shipped and not Path(data_path).exists():
        return shipped[data_path]
    return Path(data_path)
