"""Scoring (conversation, answer) pairs with a trained reward model.

``RewardScorer`` is the one way the project reads rewards: ``almost rm score``, ``almost rm eval``,
self-play and RL all call it, so the text an RM sees is always made by ``almost.chat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..chat import render_conversation
from ..io import AlmostError, read_json
from ..models import inference_precision, length_sorted_batches, load_tokenizer, resolve_model
from ..training import load_merged_adapter


def is_adapter(path: str) -> bool:
    """A PEFT adapter folder (``almost rm train --lora`` writes one to ``<output_dir>/adapter``)."""
    p = Path(path)
    return (p / "adapter_config.json").exists() and not (p / "config.json").exists()


def reward_model_path(name_or_path: str | None) -> str:
    """What the user typed for a reward model → a checked local path (one clear error otherwise)."""
    if not name_or_path:
        raise AlmostError("--model_name_or_path is required (a reward model from `almost rm train`)")
    path = resolve_model(name_or_path).path
    check_reward_model(path)
    return path


def check_reward_model(path: str) -> None:
    """Fail with one clear line when ``path`` is not a sequence-classification checkpoint with one label."""
    from transformers import AutoConfig

    p = Path(path)
    if p.is_dir() and not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
        raise AlmostError(f"{path} is not a model checkpoint (no config.json)")
    if is_adapter(path):
        adapter = read_json(p / "adapter_config.json", "adapter config")
        if adapter.get("task_type") != "SEQ_CLS":
            raise AlmostError(f"{path} is a LoRA adapter for {adapter.get('task_type')}, not a reward model (needs SEQ_CLS)")
        return
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise AlmostError(f"cannot read a model config from {path}: {str(e).splitlines()[0]}") from None
    architectures = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures) or config.num_labels != 1:
        raise AlmostError(
            f"{path} is not a reward model (needs a sequence-classification head with one label; "
            f"has {', '.join(architectures) or 'no architecture'}, {config.num_labels} labels); train one with `almost rm train`"
        )


class RewardScorer:
    """Batched, gradient-free rewards for lists of conversations (``[{role, content}, ...]``)."""

    def __init__(
        self,
        model_path: str,
        batch_size: int = 8,
        max_length: int = 1024,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        model=None,
        tokenizer=None,
    ):
        from transformers import AutoModelForSequenceClassification

        self.precision = inference_precision(dtype)
        if model is None:
            check_reward_model(model_path)
            if is_adapter(model_path):
                # The adapter holds LoRA weights and the trained score head; merged, it scores as fast
                # as a full checkpoint.
                model = load_merged_adapter(model_path, "SEQ_CLS", trust_remote_code, self.precision.load_dtype)
            else:
                model = AutoModelForSequenceClassification.from_pretrained(
                    model_path, num_labels=1, dtype=self.precision.load_dtype, trust_remote_code=trust_remote_code
                )
            model = model.to(self.precision.device)
        self.model = model.eval()
        self.tokenizer = tokenizer or load_tokenizer(model_path, trust_remote_code, padding_side="right")
        # The score head reads the last non-pad token: the model must know the pad id.
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = max(1, batch_size)
        self.max_length = max_length

    def texts(self, conversations: Sequence[list[dict]]) -> list[str]:
        return [render_conversation(self.tokenizer, c) for c in conversations]

    def score(self, conversations: Sequence[list[dict]], progress: bool = False) -> list[float]:
        """One reward per conversation; the last message is the answer being judged."""
        import torch

        texts = self.texts(conversations)
        rewards = [0.0] * len(texts)
        batches = length_sorted_batches(
            self.tokenizer, texts, self.batch_size, self.max_length, self.precision.device, "reward", "text", progress
        )
        for batch, enc in batches:
            with torch.no_grad(), self.precision.autocast():
                logits = self.model(**enc).logits[:, 0].float()
            for i, r in zip(batch, logits.tolist()):
                rewards[i] = r
        return rewards
