"""Shared fixtures: tiny random models built from SmolLM2's real config and tokenizer, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

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
