"""``almost rm train``: a reward model from preference pairs, with TRL's ``RewardTrainer``.

The pairs (``comparison.jsonl`` from ``almost cs``, or any format ``reward.formats`` reads) are
rendered by ``almost.chat`` and tokenized here, so training sees exactly the token ids that
``almost rm score`` / ``rm eval`` / self-play / RL will score later. A slice of the pairs, split by
prompt so no prompt is in both parts, is held out; after training the saved checkpoint is loaded
back and its accuracy on that slice (agreement with the rubric) goes into ``metrics.json`` and the
model card. Works the same under ``accelerate launch`` (DDP, FSDP, DeepSpeed): every process
prepares the same data, only the main process writes files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from trl import RewardConfig, RewardTrainer

from ..cards import SUPERVISED_HYPERPARAMETERS, shown_path, write_training_card
from ..chat import render_conversation
from ..config import require_option
from ..errors import AlmostError
from ..lora import load_merged_adapter, lora_config
from ..models import DEFAULT_MODEL, inference_precision, load_tokenizer, resolve_model
from ..stages import RM_TRAIN
from ..training import TrainingStageArguments, plain_settings, run_recipe
from .evaluate import card_evaluation, evaluate_pairs
from .formats import Pair, load_pairs, refuse_evaluation_data
from .model import RewardScorer
from .odin import DisentangledRewardTrainer

TRUNCATION_SIDES = ("left", "right", "drop")


@dataclass
class RewardTrainingConfig(TrainingStageArguments, RewardConfig):
    """Settings of ``almost rm train``: every TRL RewardConfig / TrainingArguments field, with the
    seed release's defaults, plus the data options below and the LoRA, hardware and checkpoint
    options the three training stages share (``training.TrainingStageArguments``)."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": f"Base model: hub id, local checkpoint, .gguf file, or embedded name (default {DEFAULT_MODEL})."},
    )
    data_path: str | None = field(
        default=None,
        metadata={
            "help": (
                "Preference pairs: comparison.jsonl from `almost cs`, any prompt/chosen/rejected JSONL/JSON, Anthropic-HH "
                "rows, or a saved HF dataset."
            )
        },
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of prompts held out to measure rubric agreement after training (0 turns it off)."},
    )
    truncation_side: str = field(
        default="left",
        metadata={
            "help": (
                "Pairs longer than --max_length: left (drop the beginning, as the seed did; keeps the answer), right (drop the "
                "end), or drop (skip the pair)."
            )
        },
    )
    model_max_length: int | None = field(default=None, metadata={"help": "Seed-release spelling of --max_length."})
    length_head: bool = field(
        default=False,
        metadata={
            "help": (
                "Train a length-disentangled reward (ODIN): a second head takes the length part of the preference and the "
                "saved `score` head is decorrelated from length (see almost.reward.odin)."
            )
        },
    )
    length_correlation_coefficient: float = field(
        default=1.0,
        metadata={"help": "--length_head: weight of |corr(quality, length)| and of -corr(length head, length) within each batch."},
    )
    orthogonality_coefficient: float = field(
        default=1.0, metadata={"help": "--length_head: weight of |cosine| between the quality and the length head's weights."}
    )
    # Defaults of the seed release (its train.py run for the reward model), not TRL's.
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training pairs."})
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP: look for parameters without gradients each step (every RM parameter gets one; off saves a graph walk)."},
    )

    def __post_init__(self):
        if self.truncation_side not in TRUNCATION_SIDES:
            raise ValueError(f"--truncation_side must be one of {', '.join(TRUNCATION_SIDES)}, got {self.truncation_side!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.model_max_length is not None:
            self.max_length = self.model_max_length
        super().__post_init__()


@dataclass
class EncodedPairs:
    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    truncated: int = 0  # pairs with at least one side cut to max_length
    dropped_long: int = 0  # pairs skipped because a side was too long (truncation_side=drop)
    identical_after_truncation: int = 0  # both sides the same once cut: nothing to learn


def split_by_prompt(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): whole prompts are held out, so no prompt is seen in both parts."""
    if fraction == 0 or len(pairs) < 2:
        return pairs, []
    contexts = sorted({p.context_key for p in pairs})
    random.Random(seed).shuffle(contexts)
    n_held = max(1, round(len(contexts) * fraction)) if len(contexts) > 1 else 0
    held = set(contexts[:n_held])
    return [p for p in pairs if p.context_key not in held], [p for p in pairs if p.context_key in held]


def encode_pairs(tokenizer, pairs: list[Pair], max_length: int | None, truncation_side: str) -> EncodedPairs:
    """Token ids of both sides of every pair, rendered exactly as RewardScorer renders them."""
    texts = [render_conversation(tokenizer, p.conversation(a)) for p in pairs for a in (p.chosen, p.rejected)]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out = EncodedPairs([], [])
    for chosen, rejected in zip(ids[0::2], ids[1::2]):
        if max_length is not None and max(len(chosen), len(rejected)) > max_length:
            if truncation_side == "drop":
                out.dropped_long += 1
                continue
            out.truncated += 1
            cut = (lambda x: x[-max_length:]) if truncation_side == "left" else (lambda x: x[:max_length])
            chosen, rejected = cut(chosen), cut(rejected)
            if chosen == rejected:
                out.identical_after_truncation += 1
                continue
        out.chosen_ids.append(chosen)
        out.rejected_ids.append(rejected)
    return out


def saved_adapter_alone(config: RewardTrainingConfig):
    """With ``--use_peft --merge_lora false``: the adapter this run saved alone, merged for its held-out
    scoring (RewardScorer refuses the folder until the run is marked finished); None otherwise."""
    if not (config.use_peft and not config.merge_lora):
        return None
    precision = inference_precision()
    model = load_merged_adapter(config.output_dir, "SEQ_CLS", config.trust_remote_code, precision.load_dtype, _own_run=True)
    return model.to(precision.device)


def write_card(config: RewardTrainingConfig, summary: dict) -> None:
    """The model card: data, hyperparameters, and the held-out rubric agreement (``rm eval`` adds more rows)."""
    data_path = shown_path(config.data_path, Path(config.output_dir).resolve().parent)
    hyperparameters = [*SUPERVISED_HYPERPARAMETERS, "max_length", "truncation_side", "bf16", "seed"]
    if config.length_head:
        hyperparameters += ["length_head", "length_correlation_coefficient", "orthogonality_coefficient"]
    data = summary["data"]
    facts = {
        "Data": f"`{data_path}`: {data['pairs']} usable pairs from {data['rows']} rows; {data['train_pairs']} trained on, "
        f"{data['heldout_pairs']} held out (whole prompts); {data['truncated']} truncated ({config.truncation_side}), "
        f"{data['dropped_long']} dropped as too long, {data['skipped_identical']} skipped as chosen == rejected.",
        "Text format": "`almost.chat.render_conversation` (the tokenizer's chat template, else `\\n\\nHuman: ...\\n\\nAssistant: ...`). "
        "Score with `almost rm score` or `almost.reward.model.RewardScorer` to get the same format.",
    }
    if summary["heldout"]:
        evaluations = [card_evaluation(summary["heldout"], "held-out comparisons", data_path, None, "almost rm train", "rubric agreement")]
    else:
        evaluations = [
            {
                "name": "held-out comparisons",
                "data": data_path,
                "split": None,
                "source": "almost rm train",
                "note": "not measured (--eval_fraction 0: no held-out pairs)",
                "metrics": [],
            }
        ]
    write_training_card(config, RM_TRAIN, facts=facts, hyperparameters=hyperparameters, evaluations=evaluations)


class RewardTraining:
    """``almost rm train`` as a ``training.Recipe``: pairs split by prompt, encoded as the scorer will
    read them, TRL's RewardTrainer (or the length-disentangled one), then the held-out pairs scored by
    the saved checkpoint."""

    stage = RM_TRAIN
    task_type = "SEQ_CLS"
    product = "the finished reward model"

    def __init__(self, config: RewardTrainingConfig):
        self.config = config

    def check(self) -> None:
        require_option(self.config.data_path, "data_path", "comparison.jsonl from `almost cs`, or prompt/chosen/rejected rows")
        refuse_evaluation_data(self.config.data_path)

    def setup(self):
        config = self.config
        pair_set = load_pairs(config.data_path)
        model = resolve_model(config.model_name_or_path, config.cache_dir)
        self.tokenizer = load_tokenizer(model.path, config.trust_remote_code, padding_side="right", cache_dir=config.cache_dir)
        train_pairs, self.held_pairs = split_by_prompt(pair_set.pairs, config.eval_fraction, config.seed)
        encoded = encode_pairs(self.tokenizer, train_pairs, config.max_length, config.truncation_side)
        if not encoded.chosen_ids:
            raise AlmostError(
                f"no training pairs left from {config.data_path}: {len(train_pairs)} before the length limit, "
                f"{encoded.dropped_long} dropped as longer than {config.max_length} tokens, "
                f"{encoded.identical_after_truncation} identical after truncation"
            )
        self.data = {
            "rows": pair_set.rows,
            "pairs": len(pair_set.pairs),
            "skipped_identical": pair_set.identical,
            "skipped_unsplittable": pair_set.unsplittable,
            "heldout_pairs": len(self.held_pairs),
            "train_pairs": len(encoded.chosen_ids),
            "truncated": encoded.truncated,
            "dropped_long": encoded.dropped_long,
            "identical_after_truncation": encoded.identical_after_truncation,
        }
        trainer = self.trainer(model.path, encoded)
        if trainer.is_world_process_zero():
            print(
                f"almost rm train: {self.data['train_pairs']} training pairs, {len(self.held_pairs)} held out; "
                f"{encoded.truncated} truncated ({config.truncation_side}), {encoded.dropped_long} dropped as too long",
                flush=True,
            )
        return trainer

    def trainer(self, model_path: str, encoded: EncodedPairs):
        """TRL's RewardTrainer, or with --length_head the length-disentangled one (``reward.odin``)."""
        config = self.config
        train_dataset = datasets.Dataset.from_dict({"chosen_ids": encoded.chosen_ids, "rejected_ids": encoded.rejected_ids})
        eval_dataset = None
        if self.held_pairs and config.eval_strategy != "no":
            # Held-out pairs are always left-truncated for TRL's in-training eval, like RewardScorer does.
            held = encode_pairs(self.tokenizer, self.held_pairs, config.max_length, "left")
            eval_dataset = datasets.Dataset.from_dict({"chosen_ids": held.chosen_ids, "rejected_ids": held.rejected_ids})
        extra = {}
        if config.length_head:
            extra = {
                "length_correlation_coefficient": config.length_correlation_coefficient,
                "orthogonality_coefficient": config.orthogonality_coefficient,
            }
        return (DisentangledRewardTrainer if config.length_head else RewardTrainer)(
            **extra,
            model=model_path,
            args=config,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=self.tokenizer,
            # The score head starts random: it must be trained in full and saved with the adapter.
            peft_config=lora_config(config, "SEQ_CLS", model_path, modules_to_save=["score"]) if config.use_peft else None,
        )

    def save(self, trainer) -> None:
        output_dir = Path(self.config.output_dir)
        if self.config.use_peft:
            self.tokenizer.save_pretrained(output_dir)
        if self.config.length_head:
            trainer.save_length_head(output_dir)  # the saved `score` head is the quality head alone

    def summarize(self, trainer, result) -> dict:
        config = self.config
        output_dir = Path(config.output_dir)
        summary = {
            "model": str(output_dir),
            "base_model": config.model_name_or_path,
            "data": self.data,
            "train": {**result.metrics, "global_step": result.global_step, "num_processes": trainer.accelerator.num_processes},
            "heldout": None,
        }
        if config.length_head:
            summary["length_head"] = trainer.length_head_summary()
        if self.held_pairs:
            # Read the saved checkpoint back, as every later stage will: this also proves it loads. RewardScorer
            # itself, not load_scorer: the run is not marked finished yet, so resolving the folder by name would refuse it.
            scorer = RewardScorer(
                str(output_dir),
                batch_size=config.per_device_eval_batch_size,
                max_length=config.max_length or 1024,
                model=saved_adapter_alone(config),
            )
            summary["heldout"], _ = evaluate_pairs(scorer, self.held_pairs, progress=False)
            held = summary["heldout"]
            print(f"almost rm train: held-out rubric agreement {held['accuracy']:.3f} on {held['n']} pairs", flush=True)
        summary["config"] = plain_settings(config)
        return summary

    def write_card(self, summary: dict) -> None:
        write_card(self.config, summary)


def run_rm_train(config: RewardTrainingConfig) -> dict:
    return run_recipe(RewardTraining(config))
