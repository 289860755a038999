"""Scoring (conversation, answer) pairs with a trained reward model.

``RewardScorer`` is the one way the project reads rewards: ``almost rm score``, ``almost rm eval``,
self-play and RL all call it, so the text an RM sees is always made by ``almost.chat``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..chat import render_conversation
from ..io import AlmostError, read_json
from ..models import cpu_bf16_is_fast, load_tokenizer, resolve_model


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
        import torch
        from transformers import AutoModelForSequenceClassification

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if model is None:
            check_reward_model(model_path)
            load_dtype = torch.bfloat16 if self.device == "cuda" and dtype in ("auto", "bfloat16") else torch.float32
            if is_adapter(model_path):
                from peft import AutoPeftModelForSequenceClassification

                # The adapter holds LoRA weights and the trained score head; merging makes scoring as
                # fast as with a full checkpoint.
                from trl.trainer.reward_trainer import suppress_seqcls_warning

                with suppress_seqcls_warning():  # the base lacks the score head the adapter brings
                    model = AutoPeftModelForSequenceClassification.from_pretrained(
                        model_path, num_labels=1, dtype=load_dtype, trust_remote_code=trust_remote_code
                    ).merge_and_unload()
            else:
                model = AutoModelForSequenceClassification.from_pretrained(
                    model_path, num_labels=1, dtype=load_dtype, trust_remote_code=trust_remote_code
                )
            model = model.to(self.device)
        self.model = model.eval()
        self.tokenizer = tokenizer or load_tokenizer(model_path, trust_remote_code, padding_side="right")
        # The score head reads the last non-pad token: the model must know the pad id.
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = max(1, batch_size)
        self.max_length = max_length
        self.autocast_bf16 = self.device == "cpu" and (dtype == "bfloat16" or (dtype == "auto" and cpu_bf16_is_fast()))

    def texts(self, conversations: Sequence[list[dict]]) -> list[str]:
        return [render_conversation(self.tokenizer, c) for c in conversations]

    def score(self, conversations: Sequence[list[dict]], progress: bool = False) -> list[float]:
        """One reward per conversation; the last message is the answer being judged."""
        import torch

        texts = self.texts(conversations)
        # Truncate from the left so the answer being judged is always seen whole.
        self.tokenizer.truncation_side = "left"
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # similar lengths share a batch
        rewards = [0.0] * len(texts)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast_bf16 else contextlib.nullcontext()
        with tqdm(total=len(texts), desc="reward", unit="text", disable=not progress, leave=False) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in batch],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    add_special_tokens=False,
                ).to(self.device)
                with torch.no_grad(), autocast:
                    logits = self.model(**enc).logits[:, 0].float()
                for i, r in zip(batch, logits.tolist()):
                    rewards[i] = r
                bar.update(len(batch))
        return rewards
