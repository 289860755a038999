"""The files almost ships in ``assets/``, by path: every package reads them through this module.

PG's seed queries, RG's demonstration files (a high-quality and a deliberately weaker one), the
prompt that makes an LM play the user in RMSP, and the evaluation data in ``assets/eval``. The
opt-in harmless files give a rubric that can carry harmlessness at all: demonstrations whose better
side also declines harmful requests politely, with a reason and an alternative, and PG seed queries
that include such requests; the defaults stay the seed release's contrast.

The evaluation samples are small, hand-written by this project (not copies of the public
benchmarks): they check that the evaluations run and show the shape of their input; report numbers
on the real data. The exception is real human preference data: ``hh_harmless_{dev,test}.jsonl.gz``,
the whole test split of Anthropic's HH-RLHF harmless-base (MIT), halved once by a seeded permutation
(``scripts/make_hh_eval_split.py``; see ``assets/eval/README.md``). Never train on them.
``proof_questions.jsonl`` is the proof run's held-out pairwise question set: our own helpful
questions, held out from PG's seeds, and real human requests from that test half
(``scripts/make_proof_questions.py``).
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SEED_PROMPTS = ASSETS / "seed_prompts.txt"
BETTER_DEMONSTRATIONS = ASSETS / "faithful_prompt.txt"
WORSE_DEMONSTRATIONS = ASSETS / "basic_prompt.txt"
USER_SIMULATOR_PROMPT = ASSETS / "user_simulator_prompt.txt"
HARMLESS_DEMONSTRATIONS = ASSETS / "harmless_prompt.txt"
HARMLESS_SEED_PROMPTS = ASSETS / "seed_prompts_harmless.txt"

SAMPLE_DATA = ASSETS / "eval"
HHH_SAMPLE = SAMPLE_DATA / "hhh_sample.jsonl"  # Anthropic-HH transcripts with `type`
TRUTHFULQA_SAMPLE = SAMPLE_DATA / "truthfulqa_sample.jsonl"  # HF truthful_qa multiple_choice layout
QUESTIONS_SAMPLE = SAMPLE_DATA / "questions.jsonl"  # Vicuna-style questions with categories
HH_HARMLESS_DEV = SAMPLE_DATA / "hh_harmless_dev.jsonl.gz"  # choose options on this half
HH_HARMLESS_TEST = SAMPLE_DATA / "hh_harmless_test.jsonl.gz"  # report on this half
PROOF_QUESTIONS = SAMPLE_DATA / "proof_questions.jsonl"  # 60 helpful + 60 harmless held-out questions
# Short names `almost rm eval --data_path` accepts for the shipped human preference pairs.
SHIPPED_PAIRS = {"hh-harmless-dev": HH_HARMLESS_DEV, "hh-harmless-test": HH_HARMLESS_TEST}
# Short names `almost eval pairwise --data_path` accepts for the shipped question sets.
SHIPPED_QUESTIONS = {"proof-questions": PROOF_QUESTIONS}


def asset_or_path(path: str | Path) -> Path:
    """A file name that is not a local file but a shipped asset (``harmless_prompt.txt``,
    ``eval/hhh_sample.jsonl``) → the asset; anything else is returned as it is, so an existing local
    file always wins."""
    path = Path(path)
    if not path.exists() and not path.is_absolute() and (ASSETS / path).is_file():
        return ASSETS / path
    return path


def shipped_or_path(data_path: str, shipped: dict[str, Path]) -> Path:
    """A shipped set's short name (``hh-harmless-dev``, ``proof-questions``) → its file; anything
    else, or a local file of that name, is a path."""
    if data_path in shipped and not Path(data_path).exists():
        return shipped[data_path]
    return Path(data_path)
