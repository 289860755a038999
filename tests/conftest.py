"""Shared fixtures: tiny random models built from SmolLM2's real config and tokenizer, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# Every automatic dtype choice in fp32, on any CPU, in this process and the commands tests start: the
# floats the tests compare are then the same computation on every kind of CI machine (AMX, Zen 4,
# AVX2), and only fp32 summation order differs between them. The choice itself is tested per CPU
# kind in test_cpu_dtype.py; the bf16 paths run in test_bf16.py; the seeded vLLM test takes auto.
os.environ["ALMOST_CPU_BF16"] = "0"

FIXTURES = Path(__file__).parent / "fixtures"
SMOLLM2_FILES = FIXTURES / "smollm2-135m"  # config + tokenizer of the real model (Apache-2.0)


def build_tiny_model(target: Path, kind: str = "causal-lm", seed: int = 0) -> Path:
    """A 2-layer LLaMA with SmolLM2's vocabulary and tokenizer, saved like a real checkpoint."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    config = AutoConfig.from_pretrained(SMOLLM2_FILES)
    config.update(
        dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    )
    torch.manual_seed(seed)
    if kind == "reward-model":
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    # Quietly: a test that builds the fixture first must not find its progress bar in its own stderr.
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(target)
        AutoTokenizer.from_pretrained(SMOLLM2_FILES).save_pretrained(target)
    finally:
        hf_logging.enable_progress_bar()
    return target


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-causal-lm")))


@pytest.fixture(scope="session")
def tiny_reward_model_path(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-reward-model"), kind="reward-model"))


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The real embedded SmolLM2-135M (converted once into the cache)."""
    from almost.models import resolve_model

    return resolve_model("smollm2-135m").path


# --- a whole run, made by the stages themselves -----------------------------------------------------

# PG's scripted queries: a tiny random model writes no query that passes PG's filter.
TINY_RUN_QUERIES = [
    "How can I keep basil alive on a windowsill through the winter?",
    "What is a gentle way to teach a puppy to walk on a leash?",
    "Which board games work well for a family with small children?",
    "How do I fix a bicycle chain that keeps slipping off?",
    "Why does bread go stale faster in the refrigerator?",
    "What should I pack for a weekend of hiking in the mountains?",
]


def _scripted_queries():
    from scripted_engine import ScriptedEngine

    asked = iter(range(10**6))
    return ScriptedEngine(lambda request, sample: " " + TINY_RUN_QUERIES[next(asked) % len(TINY_RUN_QUERIES)] + "\n")


def _scripted_answers():
    """RG's and RMSP's policy: a longer answer the more demonstrations the prompt shows, so that the
    rubric's first configuration wins CS's length filter; candidates differ in length for the RM."""
    from scripted_engine import ScriptedEngine

    def respond(prompt: str, sample: int) -> str:
        sentences = 1 + prompt.count("\n-----\n") + sample
        return " " + " ".join(["It helps to take it one small step at a time, and to check the result as you go."] * sentences)

    return ScriptedEngine(respond)


def _scripted_user():
    from scripted_engine import ScriptedEngine

    return ScriptedEngine(lambda prompt, sample: f" Could you say more about point {prompt.count('Assistant:')}, please?\n\nAssistant:")


def build_tiny_run(run: Path, policy: str, reward_model: str) -> Path:
    """A run directory in the pipeline's layout (pg/, rg/, cs/, dpo/, rm/, rm_eval/, rmsp/, sft/, rl/,
    eval/<kind>/<model>/), every stage run in process at the tiniest scale: PG, RG and RMSP generate
    with scripted engines (a random model's text does not pass their filters), everything else trains,
    scores and evaluates the tiny random models."""
    from almost.cli import main as cli
    from almost.feedback.pg import PGArguments, run_pg
    from almost.feedback.rg import RGArguments, run_rg
    from almost.policy.selfplay import RMSPArguments, run_rmsp
    from almost.shipped import HHH_SAMPLE, QUESTIONS_SAMPLE, TRUTHFULQA_SAMPLE
    from almost.stages import CS, PG, RMSP

    prompts = run / "pg" / PG.outputs.product_file
    run_pg(
        PGArguments(
            output_dir=str(run / "pg"),
            model_name_or_path="scripted",
            num_generation=len(TINY_RUN_QUERIES),
            batch_size=len(TINY_RUN_QUERIES),
            seed=0,
        ),
        _scripted_queries(),
    )
    rg = RGArguments(output_dir=str(run / "rg"), prompts_path=str(prompts), model_name_or_path="tiny", n_shot=[2, 1], seed=0)
    run_rg(rg, _scripted_answers())
    comparisons = run / "cs" / CS.outputs.product_file
    steps = [
        ["cs", "--input_dir", str(run / "rg"), "--output_dir", str(run / "cs"), "--rubric", "tiny-faithful-2shot", "tiny-faithful-1shot"],
        [
            "dpo",
            "--model_name_or_path",
            policy,
            "--data_path",
            str(comparisons),
            "--output_dir",
            str(run / "dpo"),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--report_to",
            "none",
        ],
        [
            "rm",
            "train",
            "--model_name_or_path",
            reward_model,
            "--data_path",
            str(comparisons),
            "--output_dir",
            str(run / "rm"),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--eval_fraction",
            "0.34",
            "--report_to",
            "none",
        ],
        ["rm", "eval", "--model_name_or_path", str(run / "rm"), "--data_path", str(comparisons), "--output_dir", str(run / "rm_eval")],
    ]
    for argv in steps:
        assert cli(argv) == 0, argv
    rmsp = RMSPArguments(
        output_dir=str(run / "rmsp"),
        prompts_path=str(prompts),
        model_name_or_path=policy,
        reward_model_name_or_path=str(run / "rm"),
        n_shot=1,
        user_n_shot=1,
        num_candidates=3,
        max_turns=2,
        seed=0,
    )
    run_rmsp(rmsp, policy=_scripted_answers(), user=_scripted_user())
    sft, rl = str(run / "sft"), str(run / "rl")
    steps = [
        [
            "sft",
            "--model_name_or_path",
            policy,
            "--data_path",
            str(run / "rmsp" / RMSP.outputs.product_file),
            "--output_dir",
            sft,
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--report_to",
            "none",
        ],
        [
            "rl",
            "--model_name_or_path",
            sft,
            "--reward_model_name_or_path",
            str(run / "rm"),
            "--prompts_path",
            str(prompts),
            "--output_dir",
            rl,
            "--max_steps",
            "1",
            "--max_completion_length",
            "8",
            "--report_to",
            "none",
        ],
    ]
    for label, model in (("base", policy), ("dpo", str(run / "dpo")), ("sft", sft), ("rl", rl)):
        hhh = run / "eval" / "hhh" / label
        steps.append(["eval", "hhh", "--model_name_or_path", model, "--data_path", str(HHH_SAMPLE), "--output_dir", str(hhh)])
    steps.append(
        [
            "eval",
            "truthfulqa",
            "--model_name_or_path",
            policy,
            "--data_path",
            str(TRUTHFULQA_SAMPLE),
            "--output_dir",
            str(run / "eval" / "truthfulqa" / "base"),
        ]
    )
    for label, model in (("sft", sft), ("dpo", str(run / "dpo"))):
        steps.append(
            [
                "eval",
                "pairwise",
                "--model_name_or_path",
                model,
                "--baseline_model_name_or_path",
                policy,
                "--judge",
                f"rm:{run / 'rm'}",
                "--data_path",
                str(QUESTIONS_SAMPLE),
                "--max_questions",
                "2",
                "--max_new_tokens",
                "4",
                "--backend",
                "hf",
                "--output_dir",
                str(run / "eval" / "pairwise" / f"{label}-vs-base"),
            ]
        )
    for argv in steps:
        assert cli(argv) == 0, argv
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_path, tiny_reward_model_path) -> Path:
    """One whole tiny run per test session (``build_tiny_run``), shared by the tests that read a run."""
    return build_tiny_run(tmp_path_factory.mktemp("tiny-run"), tiny_model_path, tiny_reward_model_path)
