"""``almost sft``: supervised fine-tuning on demonstrations, with TRL's ``SFTTrainer``.

Reads ``demonstrations.jsonl`` from ``almost rmsp`` (or any JSONL/JSON/saved dataset with a
``messages`` column, or ``prompt``/``completion`` rows). The loss falls on assistant turns only:
every assistant turn of a multi-turn dialogue, and nothing the user (or system) wrote.

TRL's own ``assistant_only_loss`` needs ``{% generation %}`` markers in the chat template, which
SmolLM2's (and most) templates lack. So the masks are built here: the dialogue is rendered with
the model's chat template one assistant turn at a time, the text is cut at the turn boundaries,
and each piece is tokenized on its own, so an assistant piece holds exactly the tokens the model
produces after the generation prompt (its answer and the end-of-turn token). The dataset goes to
``SFTTrainer`` as ``input_ids`` + ``assistant_masks``, and TRL turns the masks into labels (-100
elsewhere). One sequence per dialogue trains all its answers in one pass; expanding a dialogue into
one prompt/completion row per answer would re-encode the early turns once per later answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from trl import SFTConfig, SFTTrainer

from ..cards import SUPERVISED_HYPERPARAMETERS, shown_path, write_training_card
from ..chat import as_messages, check_chat_template
from ..config import require_option
from ..errors import AlmostError
from ..lora import lora_config
from ..models import DEFAULT_MODEL, load_tokenizer, resolve_model
from ..readers import read_rows, read_text
from ..stages import SFT
from ..training import TrainingStageArguments, plain_settings, run_recipe

ROLES = ("system", "user", "assistant")
# For tokenizers without a chat template: the seed's transcript format (as almost.chat renders it),
# with the end-of-sequence token after each answer so the model learns to stop. It is saved with
# the checkpoint, so every later stage renders conversations the same way.
TRANSCRIPT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '\\n\\nHuman: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '\\n\\nAssistant: ' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}"
)


@dataclass
class SFTArguments(TrainingStageArguments, SFTConfig):
    """Settings of ``almost sft``: every TRL SFTConfig / TrainingArguments field, with the seed
    release's defaults, plus the data options below and the LoRA, hardware and checkpoint options
    the three training stages share (``training.TrainingStageArguments``)."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": f"Model to fine-tune: hub id, local checkpoint, .gguf file, or embedded name (default {DEFAULT_MODEL})."},
    )
    data_path: str | None = field(
        default=None,
        metadata={
            "help": (
                "demonstrations.jsonl from `almost rmsp`, or any JSONL/JSON/saved dataset with `messages` or "
                "`prompt`/`completion` (required)."
            )
        },
    )
    # Defaults of the seed release (Alpaca-style SFT), not TRL's.
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the demonstrations."})
    max_length: int | None = field(
        default=512, metadata={"help": "Longest training sequence in tokens; longer dialogues are cut at the end."}
    )


# ---------------------------------------------------------------------------------------------
# Data: rows → (messages, first message that is trained) → token ids with assistant masks.


def _check_messages(messages, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise AlmostError(f"{where}: `messages` must be a non-empty list of {{role, content}} objects")
    for k, m in enumerate(messages, 1):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise AlmostError(f"{where}: message {k} must be {{role: system|user|assistant, content: text}}, got {str(m)[:80]}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def row_to_dialogue(row: dict, where: str) -> tuple[list[dict], int]:
    """(messages, index of the first message that may be trained): every assistant turn of a
    ``messages`` row; only the completion of a ``prompt``/``completion`` row."""
    if "messages" in row:
        messages, first_trained = _check_messages(row["messages"], where), 0
    elif "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str):
            prompt = as_messages(prompt)
        prompt = _check_messages(prompt, f"{where} prompt")
        completion = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
        completion = _check_messages(completion, f"{where} completion")
        messages, first_trained = prompt + completion, len(prompt)
    else:
        raise AlmostError(f"{where}: needs a `messages` column or `prompt` and `completion` columns (has: {', '.join(row)})")
    if not any(m["role"] == "assistant" for m in messages[first_trained:]):
        raise AlmostError(f"{where}: no assistant turn to train on")
    return messages, first_trained


def load_dialogues(path: str | Path) -> list[tuple[list[dict], int]]:
    rows = read_rows(path, "SFT data")
    if not rows:
        raise AlmostError(f"{path} has no rows")
    return [row_to_dialogue(row, f"{path} row {i}") for i, row in enumerate(rows, 1)]


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def encode_dialogue(tokenizer, messages: list[dict], first_trained: int = 0) -> tuple[list[int], list[int]]:
    """Token ids of the whole dialogue and a mask that is 1 exactly on the trained assistant turns.

    Each assistant turn's text is what the chat template adds after the generation prompt (the
    answer and the end-of-turn marker). This needs a template that renders a dialogue's prefix the
    same way whatever follows it, which is checked.
    """
    segments: list[tuple[str, int]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or i < first_trained:
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True)
        after = _render(tokenizer, messages[: i + 1])
        if not before.startswith(done) or not after.startswith(before):
            raise AlmostError(
                "the chat template renders earlier turns differently once later turns follow, so answer-only "
                "masks cannot be cut from it; pass a template without that behaviour via --chat_template_path"
            )
        segments += [(before[len(done) :], 0), (after[len(before) :], 1)]
        done = after
    full = _render(tokenizer, messages)
    if not full.startswith(done):
        raise AlmostError("the chat template renders the dialogue differently from its prefixes; pass another --chat_template_path")
    segments.append((full[len(done) :], 0))
    input_ids: list[int] = []
    mask: list[int] = []
    for text, trained in segments:
        if text:
            ids = tokenizer(text, add_special_tokens=False).input_ids
            input_ids += ids
            mask += [trained] * len(ids)
    return input_ids, mask


def policy_tokenizer(path: str, chat_template_path: str | None, trust_remote_code: bool = False, cache_dir: str | None = None):
    """The tokenizer a policy trains with and is saved with (``sft``, ``dpo``): the chat template of
    ``--chat_template_path``, else the model's own, else the seed's transcript (``TRANSCRIPT_CHAT_TEMPLATE``)."""
    tokenizer = load_tokenizer(path, trust_remote_code, padding_side="right", cache_dir=cache_dir)
    if chat_template_path:
        template = Path(chat_template_path)
        if template.suffix not in (".jinja", ".j2") or not template.is_file():
            raise AlmostError(f"--chat_template_path must be a .jinja file, got {template}")
        tokenizer.chat_template = read_text(template, "chat template")
        check_chat_template(tokenizer, str(template))
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = TRANSCRIPT_CHAT_TEMPLATE
    return tokenizer


def prepare_tokenizer(path: str, config: SFTArguments):
    tokenizer = policy_tokenizer(path, config.chat_template_path, config.trust_remote_code, config.cache_dir)
    # Applied here, before tokenization; TRL would otherwise apply it again after the data is encoded.
    config.chat_template_path = None
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Training and saving.


def write_card(config: SFTArguments, summary: dict) -> None:
    """The model card: data, hyperparameters, and the training losses (no held-out evaluation here:
    ``almost eval`` measures the policies)."""
    data_path = shown_path(config.data_path, Path(config.output_dir).resolve().parent)
    hyperparameters = [*SUPERVISED_HYPERPARAMETERS, "max_length", "bf16", "seed"]
    data, train = summary["data"], summary["train"]
    facts = {
        "Data": f"`{data_path}`: {data['dialogues']} dialogues, {data['assistant_turns']} trained assistant turns, "
        f"{data['tokens']} tokens of which {data['trained_tokens']} carry loss; {data['truncated']} cut at {config.max_length} tokens.",
        "Loss": "assistant turns only (every turn of a multi-turn dialogue; user and system tokens get label -100).",
        "Training": f"{train['global_step']} steps.",
        "Chat format": "the tokenizer's chat template, saved with this checkpoint.",
    }
    losses = [
        ("loss, first logged step", train["first_loss"]),
        ("loss, last logged step", train["last_loss"]),
        ("mean training loss", train.get("train_loss")),
    ]
    evaluation = {
        "name": "training demonstrations",
        "data": data_path,
        "split": "train",
        "source": "almost sft",
        "note": "figures logged during training, on the training data; `almost eval` measures the model on held-out questions",
        "metrics": [{"type": "loss", "name": name, "value": value, "ci95": None, "n": None} for name, value in losses if value is not None],
    }
    write_training_card(config, SFT, facts=facts, hyperparameters=hyperparameters, evaluations=[evaluation])


class SFTTraining:
    """``almost sft`` as a ``training.Recipe``: dialogues encoded with their assistant masks, TRL's SFTTrainer."""

    stage = SFT
    task_type = "CAUSAL_LM"
    product = "the finished model"

    def __init__(self, config: SFTArguments):
        self.config = config

    def check(self) -> None:
        require_option(self.config.data_path, "data_path", "demonstrations.jsonl from `almost rmsp`, or messages / prompt+completion rows")

    def setup(self):
        config = self.config
        dialogues = load_dialogues(config.data_path)
        model = resolve_model(config.model_name_or_path, config.cache_dir)
        self.tokenizer = prepare_tokenizer(model.path, config)
        encoded = [encode_dialogue(self.tokenizer, messages, first) for messages, first in dialogues]
        limit = config.max_length or math.inf
        self.data = {
            "dialogues": len(dialogues),
            "assistant_turns": sum(sum(m["role"] == "assistant" for m in msgs[first:]) for msgs, first in dialogues),
            "tokens": sum(len(ids) for ids, _ in encoded),
            "trained_tokens": sum(sum(mask) for _, mask in encoded),
            "truncated": sum(len(ids) > limit for ids, _ in encoded),
        }
        dataset = datasets.Dataset.from_dict({"input_ids": [ids for ids, _ in encoded], "assistant_masks": [m for _, m in encoded]})
        trainer = SFTTrainer(
            model=model.path,
            args=config,
            train_dataset=dataset,
            processing_class=self.tokenizer,
            peft_config=lora_config(config, "CAUSAL_LM", model.path) if config.use_peft else None,
        )
        if trainer.is_world_process_zero():
            data = self.data
            print(
                f"almost sft: {data['dialogues']} dialogues, {data['assistant_turns']} assistant turns, "
                f"{data['trained_tokens']}/{data['tokens']} tokens trained, {data['truncated']} cut at {config.max_length}",
                flush=True,
            )
        return trainer

    def save(self, trainer) -> None:
        self.tokenizer.save_pretrained(self.config.output_dir)

    def summarize(self, trainer, result) -> dict:
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        loss_change = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged"
        print(f"almost sft: {result.global_step} steps, {loss_change}; saved {Path(self.config.output_dir)}")
        return {
            "model": str(Path(self.config.output_dir)),
            "base_model": self.config.model_name_or_path,
            "data": self.data,
            "train": {
                **result.metrics,
                "global_step": result.global_step,
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
                "losses": losses,
            },
            "config": plain_settings(self.config),
        }

    def write_card(self, summary: dict) -> None:
        write_card(self.config, summary)


def run_sft(config: SFTArguments) -> dict:
    return run_recipe(SFTTraining(config))
