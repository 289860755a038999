"""``almost dpo``: a policy trained directly on preference pairs, with TRL's ``DPOTrainer``.

Beside the method's own route (RM → RMSP → SFT → RL), the synthetic pairs of ``almost cs``
(``comparison.jsonl``: prompt / chosen / rejected) are exactly what DPO reads: one step, no reward
model, no sampling. Any file ``reward.formats`` reads works too (prompt/chosen/rejected rows,
Anthropic-HH transcripts, saved datasets).

Each pair goes to TRL as a conversation (the prompt's messages, then the chosen or the rejected
answer as the assistant's turn), which TRL renders with the policy's chat template: the template of
``--chat_template_path``, else the model's own, else the seed's transcript format, as ``almost sft``
chooses it and saves it with the checkpoint, so every later stage renders conversations the same
way. The reference policy is a frozen copy of the starting one (with ``--use_peft``: the starting
one with its adapters off), or ``--ref_model``, which must share the policy's vocabulary: DPO
compares the two models' log-probabilities of the same token ids.

Writes to ``--output_dir`` what ``sft`` writes: the policy as an HF checkpoint (safetensors,
tokenizer, README.md model card; with ``--use_peft`` the merged model and adapter/, or the adapter
alone with ``--merge_lora false``) and ``metrics.json`` (keys as ``stages.DPO`` declares).
Checkpoints, resuming and the settings check are ``training.run_recipe``'s, as for every trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import create_model_from_path

from ..cards import SUPERVISED_HYPERPARAMETERS, shown_path, write_training_card
from ..config import require_option
from ..errors import AlmostError
from ..lora import lora_config
from ..models import DEFAULT_MODEL, load_tokenizer, resolve_model
from ..reward.formats import Pair, PairSet, load_pairs, refuse_evaluation_data
from ..stages import DPO
from ..training import TrainingStageArguments, plain_settings, run_recipe
from .sft import policy_tokenizer

# What TRL's DPOTrainer logs each step that metrics.json keeps. An answer's implicit reward is beta *
# log(policy / reference) of it; "accuracies" is the share of a batch's pairs whose chosen answer's is higher.
LOGGED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")
# Those the model card shows: logged name → (model-index metric type, what it is).
CARD_FIGURES = {
    "loss": ("loss", "DPO loss"),
    "rewards/accuracies": ("accuracy", "implicit-reward accuracy (chosen above rejected)"),
    "rewards/margins": ("reward_margin", "implicit-reward margin (chosen - rejected)"),
}


@dataclass
class DPOArguments(TrainingStageArguments, DPOConfig):
    """Settings of ``almost dpo``: every TRL DPOConfig / TrainingArguments field (TRL's defaults for
    DPO's own, e.g. ``--beta 0.1``, ``--loss_type sigmoid``, ``--learning_rate 1e-6``), the data and
    reference options below, and the LoRA, hardware and checkpoint options the training stages share."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": f"The policy to start from: hub id, local checkpoint, .gguf file, or embedded name (default {DEFAULT_MODEL})."},
    )
    ref_model: str | None = field(
        default=None,
        metadata={
            "help": (
                "The frozen reference policy (same vocabulary as the policy). Default: a copy of the starting policy; "
                "with --use_peft, the starting policy with its adapters off."
            )
        },
    )
    data_path: str | None = field(
        default=None,
        metadata={
            "help": (
                "Preference pairs (required): comparison.jsonl from `almost cs`, any prompt/chosen/rejected JSONL/JSON, "
                "Anthropic-HH rows, or a saved HF dataset. Every pair needs a prompt."
            )
        },
    )
    chat_template_path: str | None = field(
        default=None,
        metadata={"help": "A .jinja chat template to train and save the policy with (default: the model's own, else the transcript)."},
    )
    # TRL's, not the seed's SFT/RM one (TrainingStageArguments): DPO starts from a trained policy.
    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate of AdamW."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Learning-rate schedule (linear, cosine, constant, ...)."})


def check_prompts(pair_set: PairSet, path: str) -> list[Pair]:
    """DPO learns which answer to give a prompt: a pair whose conversation has no user text has nothing
    to condition on, and is refused rather than trained as an answer to nothing."""
    without = [k for k, pair in enumerate(pair_set.pairs, 1) if not any(m["role"] == "user" and m["content"].strip() for m in pair.context)]
    if without:
        raise AlmostError(
            f"{path}: {len(without)} of {len(pair_set.pairs)} pairs have no prompt (first: pair {without[0]}); DPO needs the "
            "prompt each answer was given to"
        )
    return pair_set.pairs


def conversational_rows(pairs: list[Pair]) -> datasets.Dataset:
    """TRL's conversational preference format: the prompt's messages, each answer as one assistant turn."""
    return datasets.Dataset.from_dict(
        {
            "prompt": [list(pair.context) for pair in pairs],
            "chosen": [[{"role": "assistant", "content": pair.chosen}] for pair in pairs],
            "rejected": [[{"role": "assistant", "content": pair.rejected}] for pair in pairs],
        }
    )


def check_same_vocabulary(tokenizer, ref_path: str, config: DPOArguments) -> None:
    ref_tokenizer = load_tokenizer(ref_path, config.trust_remote_code, cache_dir=config.cache_dir)
    ours, theirs = tokenizer.get_vocab(), ref_tokenizer.get_vocab()
    if ours != theirs:
        differ = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda item: item[1])
        raise AlmostError(
            f"--ref_model {config.ref_model} has another vocabulary than the policy {config.model_name_or_path} ({len(theirs)} vs "
            f"{len(ours)} tokens; first difference: {differ[0][0]!r}); DPO compares both models' log-probabilities of the same token ids"
        )


def logged_figures(entry: dict) -> dict:
    return {key: entry[key] for key in LOGGED if key in entry}


def write_card(config: DPOArguments, summary: dict) -> None:
    """The model card: data, reference, hyperparameters, and the first and last logged DPO figures."""
    run = Path(config.output_dir).resolve().parent
    data_path = shown_path(config.data_path, run)
    data, train = summary["data"], summary["train"]
    reference = f"`{shown_path(config.ref_model, run)}`" if config.ref_model else "the starting policy, frozen"
    if config.use_peft and not config.ref_model:
        reference = "the starting policy (the policy with its LoRA adapters off)"
    facts = {
        "Data": f"`{data_path}`: {data['pairs']} usable pairs from {data['rows']} rows ({data['skipped_identical']} skipped as "
        f"chosen == rejected); {data['trained_pairs']} trained on, {data['dropped_long']} dropped as their prompt alone fills "
        f"{config.max_length} tokens, {data['truncated']} cut at the end to {config.max_length} tokens.",
        "Objective": f"DPO ({', '.join(config.loss_type)} loss, beta {config.beta}) against {reference}.",
        "Training": f"{train['global_step']} steps.",
        "Chat format": "the tokenizer's chat template, saved with this checkpoint.",
    }
    metrics = [
        {"type": kind, "name": f"{name}, {when} logged step", "value": row[key], "ci95": None, "n": None}
        for when, row in (("first", train["first_log"] or {}), ("last", train["last_log"] or {}))
        for key, (kind, name) in CARD_FIGURES.items()
        if isinstance(row.get(key), (int, float))
    ]
    evaluation = {
        "name": "training pairs",
        "data": data_path,
        "split": "train",
        "source": "almost dpo",
        "note": "figures logged during training, on the training pairs; `almost eval` measures the policy on held-out questions",
        "metrics": metrics,
    }
    hyperparameters = [*SUPERVISED_HYPERPARAMETERS, "beta", "loss_type", "max_length", "bf16", "seed"]
    write_training_card(config, DPO, facts=facts, hyperparameters=hyperparameters, evaluations=[evaluation])


class DPOTraining:
    """``almost dpo`` as a ``training.Recipe``: pairs read and checked, the policy's tokenizer and
    reference resolved, TRL's DPOTrainer."""

    stage = DPO
    task_type = "CAUSAL_LM"
    product = "the finished policy"

    def __init__(self, config: DPOArguments):
        self.config = config

    def check(self) -> None:
        require_option(self.config.data_path, "data_path", "comparison.jsonl from `almost cs`, or prompt/chosen/rejected rows")
        refuse_evaluation_data(self.config.data_path)

    def setup(self):
        config = self.config
        pair_set = load_pairs(config.data_path)
        pairs = check_prompts(pair_set, config.data_path)
        policy = resolve_model(config.model_name_or_path, config.cache_dir)
        self.tokenizer = policy_tokenizer(policy.path, config.chat_template_path, config.trust_remote_code, config.cache_dir)
        ref_model = None
        if config.ref_model:
            ref_path = resolve_model(config.ref_model, config.cache_dir).path
            check_same_vocabulary(self.tokenizer, ref_path, config)
            # Loaded as TRL loads the policy from its path (``model_init_kwargs``, fp32 unless they say otherwise).
            ref_model = create_model_from_path(
                ref_path, **{"trust_remote_code": config.trust_remote_code, **(config.model_init_kwargs or {})}
            )
        trainer = DPOTrainer(
            model=policy.path,
            ref_model=ref_model,
            args=config,
            train_dataset=conversational_rows(pairs),
            processing_class=self.tokenizer,
            peft_config=lora_config(config, "CAUSAL_LM", policy.path) if config.use_peft else None,
        )
        self.data = self.data_counts(pair_set, trainer.train_dataset)
        if not self.data["trained_pairs"]:
            raise AlmostError(
                f"no training pairs left from {config.data_path}: the prompt alone fills --max_length {config.max_length} in every pair"
            )
        if trainer.is_world_process_zero():
            data = self.data
            print(
                f"almost dpo: {data['trained_pairs']} training pairs, {data['dropped_long']} dropped (prompt fills "
                f"{config.max_length} tokens), {data['truncated']} cut at {config.max_length}",
                flush=True,
            )
        return trainer

    def data_counts(self, pair_set: PairSet, encoded: datasets.Dataset) -> dict:
        """What the pairs became: TRL drops a pair whose prompt alone fills --max_length and cuts the
        end of a longer one (``truncation_mode keep_start``)."""
        limit = self.config.max_length
        lengths = [len(p) + max(len(c), len(r)) for p, c, r in zip(encoded["prompt_ids"], encoded["chosen_ids"], encoded["rejected_ids"])]
        return {
            "rows": pair_set.rows,
            "pairs": len(pair_set.pairs),
            "skipped_identical": pair_set.identical,
            "skipped_unsplittable": pair_set.unsplittable,
            "trained_pairs": len(encoded),
            "dropped_long": len(pair_set.pairs) - len(encoded),
            "truncated": sum(limit is not None and n > limit for n in lengths),
        }

    def save(self, trainer) -> None:
        self.tokenizer.save_pretrained(self.config.output_dir)

    def summarize(self, trainer, result) -> dict:
        logged = [logged_figures(entry) for entry in trainer.state.log_history if "loss" in entry and "rewards/margins" in entry]
        first, last = (logged[0], logged[-1]) if logged else (None, None)
        shown = (
            f"loss {first['loss']:.3f} -> {last['loss']:.3f}, last reward margin {last['rewards/margins']:.3f}"
            if logged
            else "nothing logged"
        )
        print(f"almost dpo: {result.global_step} steps, {shown}; saved {Path(self.config.output_dir)}")
        return {
            "model": str(Path(self.config.output_dir)),
            "base_model": self.config.model_name_or_path,
            "ref_model": self.config.ref_model,
            "data": self.data,
            "train": {
                **result.metrics,
                "global_step": result.global_step,
                "losses": [row["loss"] for row in logged],
                "first_log": first,
                "last_log": last,
            },
            "config": plain_settings(self.config),
        }

    def write_card(self, summary: dict) -> None:
        write_card(self.config, summary)


def run_dpo(config: DPOArguments) -> dict:
    return run_recipe(DPOTraining(config))
