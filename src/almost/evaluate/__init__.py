"""Evaluation (step 7): static HHH A/B accuracy, TruthfulQA MC1, and pairwise model-vs-baseline judging.

The sample files are small, hand-written by this project (not copies of the public benchmarks): they
check that the evaluations run and show the shape of their input; report numbers on the real data.
"""

from pathlib import Path

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "assets" / "eval"
HHH_SAMPLE = SAMPLE_DATA / "hhh_sample.jsonl"  # Anthropic-HH transcripts with `type`
TRUTHFULQA_SAMPLE = SAMPLE_DATA / "truthfulqa_sample.jsonl"  # HF truthful_qa multiple_choice layout
QUESTIONS_SAMPLE = SAMPLE_DATA / "questions.jsonl"  # Vicuna-style questions with categories
