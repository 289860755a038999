"""``almost rl``: reinforcement learning of the SFT policy against the synthetic reward model.

Step 6b of the method. The policy samples several answers per prompt, the reward model trained by
``almost rm train`` scores each (prompt, answer) in the same text format as ``almost rm``
(``RewardScorer``), and TRL's ``RLOOTrainer`` (default) or ``GRPOTrainer`` updates the policy with
a KL penalty (``--beta``) to the starting policy, which serves as the frozen reference. An optional
length penalty subtracts ``--length_penalty`` per answer token.

Writes to ``--output_dir``: the policy as an HF checkpoint (safetensors, tokenizer, README.md model
card; with ``--use_peft`` the adapter is merged, and kept in adapter/, unless ``--merge_lora false``),
``rl_log.csv`` (one row per logged step: reward, rm_reward, kl, completion_length, ...), and
``metrics.json`` (the summary, keys as ``stages.RL`` declares). Config fields, LoRA spelling,
hardware options and saving (main process only) are those of ``rm train`` and ``sft`` (``almost.training``).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from ..cards import shown_path, write_training_card
from ..chat import render_prompt
from ..config import require_option
from ..errors import AlmostError
from ..lora import lora_config
from ..models import load_tokenizer, resolve_model
from ..readers import read_prompts
from ..reward.client import is_url
from ..reward.model import RewardScorerSettings, load_scorer
from ..stages import RL
from ..training import TrainingStageArguments, run_recipe

ALGORITHMS = ("rloo", "grpo")
# Columns of rl_log.csv, in order: TRL's metric name → ours. The report reads these names.
LOG_COLUMNS = {
    "step": "step",
    "reward": "reward",
    "rewards/rm/mean": "rm_reward",
    "rewards/length/mean": "length_tokens",
    "kl": "kl",
    "completions/mean_length": "completion_length",
    "reward_std": "reward_std",
    "entropy": "entropy",
    "loss": "loss",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
}


@dataclass
class RLConfig(TrainingStageArguments, RLOOConfig):
    """Settings of ``almost rl``: every field of TRL's RLOOConfig (CPU-sane defaults), the RL options
    below, and the LoRA, hardware and checkpoint options the three training stages share."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The policy to improve (normally the `almost sft` output): checkpoint, hub id, .gguf or embedded name."},
    )
    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": (
                "The reward model from `almost rm train` (a sequence-classification checkpoint), or the URL of `almost rm "
                "serve` (token from $ALMOST_RM_TOKEN)."
            )
        },
    )
    prompts_path: str | None = field(
        default=None,
        metadata={
            "help": "Prompts: `almost pg`'s prompts.txt (one per line), or JSONL/JSON rows with `prompt` (text or messages) or `messages`."
        },
    )
    algorithm: str = field(default="rloo", metadata={"help": "rloo (TRL RLOOTrainer, default) or grpo (TRL GRPOTrainer)."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N prompts (all by default)."})
    length_penalty: float = field(
        default=0.0, metadata={"help": "Subtracted from the reward per answer token (0 = off); counters an RM that favours long answers."}
    )
    reward_batch_size: int = field(default=8, metadata={"help": "Answers per reward-model forward pass."})
    reward_max_length: int = field(default=1024, metadata={"help": "Longest (prompt, answer) text the RM reads, in tokens."})
    # TRL fields whose defaults suit a GPU cluster; these suit a laptop CPU and are overridable.
    beta: float = field(
        default=0.05, metadata={"help": "KL penalty coefficient against the starting (SFT) policy; must be > 0 to keep the policy close."}
    )
    learning_rate: float = field(default=1e-6, metadata={"help": "AdamW learning rate."})
    # TRL's schedule, not the seed's SFT/RM one (TrainingStageArguments): RL starts from a trained policy.
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Learning-rate schedule (linear, cosine, constant, ...)."})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "Share of steps spent warming the learning rate up (sets --warmup_steps)."}
    )
    num_generations: int | None = field(default=4, metadata={"help": "Answers sampled per prompt (the RLOO/GRPO group size, at least 2)."})
    max_completion_length: int | None = field(default=64, metadata={"help": "Longest sampled answer, in tokens."})
    per_device_train_batch_size: int = field(
        default=4, metadata={"help": "Answers per device per optimisation step (a multiple of num_generations)."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log (and write a rl_log.csv row) every N steps."})
    report_to: None | str | list[str] = field(
        default="none", metadata={"help": "Trackers for TRL's logs: none, tensorboard, wandb, trackio, ..."}
    )

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown --algorithm {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        if self.beta < 0:
            raise ValueError("--beta must be >= 0")
        if self.length_penalty < 0:
            raise ValueError("--length_penalty must be >= 0 (it is subtracted per token)")
        super().__post_init__()


def build_dataset(contexts: list[list[dict]], tokenizer):
    """TRL prompt rows: conversational when the policy has a chat template, else the seed's transcript text.

    The ``context`` column (JSON) carries the conversation to the reward function, which scores it
    with the answer appended, whatever form the policy saw.
    """
    conversational = bool(getattr(tokenizer, "chat_template", None))
    return Dataset.from_dict(
        {
            "prompt": [c if conversational else render_prompt(tokenizer, c) for c in contexts],
            "context": [json.dumps(c, ensure_ascii=False) for c in contexts],
        }
    )


def completion_text(completion) -> str:
    """TRL hands completions as text, or as ``[{role: assistant, content}]`` for conversational prompts."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion)
    return str(completion)


def make_reward_functions(scorer, length_penalty: float) -> tuple[list, list[float]]:
    """TRL reward functions and weights: the RM score, and (if asked) minus the answer length in tokens."""

    def rm(prompts, completions, context, **kwargs):
        conversations = [json.loads(c) + [{"role": "assistant", "content": completion_text(a)}] for c, a in zip(context, completions)]
        return scorer.score(conversations)

    def length(prompts, completions, completion_ids, **kwargs):
        return [float(len(ids)) for ids in completion_ids]

    if length_penalty > 0:
        return [rm, length], [1.0, -length_penalty]
    return [rm], [1.0]


def trl_config(config: RLConfig, reward_weights: list[float]):
    """The TRL config for the chosen algorithm: ours for RLOO, else a GRPOConfig with every shared field."""
    if config.algorithm == "rloo":
        config.reward_weights = reward_weights
        return config
    shared = {f.name for f in fields(GRPOConfig) if f.init}
    values = {k: v for k, v in config.given_values.items() if k in shared}
    values["reward_weights"] = reward_weights
    return GRPOConfig(**values)


class CsvLogCallback:
    """Appends one row per TRL log event to rl_log.csv (the file ``almost report`` plots).

    Only the main process writes (under ``accelerate launch`` every process logs the same figures).
    When training starts, rows of steps after the step it starts from are dropped: a run resumed
    from a checkpoint logs those steps again, and a fresh run starts an empty file."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        callback = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                if state.is_world_process_zero:
                    callback.keep_until(state.global_step)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "reward" in logs and state.is_world_process_zero:
                    callback.append({"step": state.global_step, **logs})

        self.trainer_callback = _Callback()

    def keep_until(self, step: int) -> None:
        """Keep the rows of steps up to ``step`` (none when 0), rewritten atomically."""
        kept = []
        if step > 0 and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as f:
                kept = [row for row in csv.DictReader(f) if row.get("step") and int(row["step"]) <= step]
        self.rows = [{k: _number(v) for k, v in row.items()} for row in kept]
        if not kept:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(LOG_COLUMNS.values()))
            writer.writeheader()
            writer.writerows(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def append(self, logs: dict) -> None:
        row = {ours: logs.get(theirs, "") for theirs, ours in LOG_COLUMNS.items()}
        self.rows.append(row)
        new = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(LOG_COLUMNS.values()))
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())


def _number(value: str):
    """A rl_log.csv cell as logged: int, float, or "" when the figure was not logged."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def show_logged(row: dict, key: str) -> str:
    """One logged figure for people: 4 significant digits, "-" when it was not logged."""
    value = row.get(key, "")
    return f"{value:.4g}" if isinstance(value, float) else str(value or "-")


# Figures of rl_log.csv the model card shows: column → (model-index metric type, what it is).
CARD_FIGURES = {
    "reward": ("reward", "mean reward"),
    "rm_reward": ("reward", "mean reward-model score"),
    "kl": ("kl", "KL to the reference policy"),
    "completion_length": ("completion_length", "answer length (tokens)"),
}


def write_card(config: RLConfig, summary: dict) -> None:
    """The model card: starting policy, reward model, prompts, hyperparameters, and the first and last
    logged reward, KL and answer length."""
    run = Path(config.output_dir).resolve().parent
    prompts_path = shown_path(config.prompts_path, run)
    steps = summary["global_step"]
    facts = {
        "Reward model": f"`{shown_path(config.reward_model_name_or_path, run)}`",
        "Prompts": f"`{prompts_path}` ({summary['prompts']} prompts)",
        "Training": f"{config.algorithm.upper()} (TRL), {steps} optimisation step{'s' if steps != 1 else ''}; "
        "the starting policy is also the KL reference.",
        "Per-step figures": "`rl_log.csv`.",
    }
    hyperparameters = [
        "algorithm",
        "beta",
        "length_penalty",
        "num_generations",
        "learning_rate",
        "max_steps",
        "per_device_train_batch_size",
        "max_completion_length",
        "temperature",
        "bf16",
        "seed",
    ]
    metrics = [
        {"type": kind, "name": f"{name}, {when} logged step", "value": row[column], "ci95": None, "n": None}
        for column, (kind, name) in CARD_FIGURES.items()
        for when, row in (("first", summary.get("first_log") or {}), ("last", summary.get("last_log") or {}))
        if isinstance(row.get(column), (int, float))
    ]
    evaluation = {
        "name": "training prompts",
        "data": prompts_path,
        "split": "train",
        "source": "almost rl",
        "note": "figures logged during training, on the sampled answers; `almost eval` measures the policy on held-out questions",
        "metrics": metrics,
    }
    write_training_card(config, RL, facts=facts, hyperparameters=hyperparameters, evaluations=[evaluation], tags=[config.algorithm])


class RLTraining:
    """``almost rl`` as a ``training.Recipe``: the policy, the reward model (or its server) as TRL reward
    functions, RLOO or GRPO, and rl_log.csv written as it trains."""

    stage = RL
    task_type = "CAUSAL_LM"
    product = "the finished policy"

    def __init__(self, config: RLConfig, scorer=None):
        self.config = config
        self.scorer = scorer

    def check(self) -> None:
        config = self.config
        require_option(config.model_name_or_path, "model_name_or_path", "the policy to train, normally the SFT output")
        require_option(config.prompts_path, "prompts_path", "prompts.txt from `almost pg`, or JSONL")
        if self.scorer is None:
            require_option(config.reward_model_name_or_path, "reward_model_name_or_path", "a reward model from `almost rm train`")
        if config.per_device_train_batch_size % config.num_generations and config.generation_batch_size is None:
            raise AlmostError(
                f"--per_device_train_batch_size ({config.per_device_train_batch_size}) must be a multiple of --num_generations "
                f"({config.num_generations})"
            )

    def setup(self):
        config = self.config
        # TRL's --trust_remote_code is documented to hold for the reward model too; rl has no --dtype of its own.
        reward_settings = RewardScorerSettings(
            batch_size=config.reward_batch_size,
            max_length=config.reward_max_length,
            trust_remote_code=config.trust_remote_code,
            served_batch_size=config.reward_batch_size,
        )
        if self.scorer is None and is_url(config.reward_model_name_or_path):
            # `almost rm serve` must be up before the policy is loaded.
            self.scorer = load_scorer(config.reward_model_name_or_path, reward_settings)
        policy = resolve_model(config.model_name_or_path, config.cache_dir)
        peft_config = lora_config(config, "CAUSAL_LM", policy.path) if config.use_peft else None
        self.contexts = read_prompts(config.prompts_path, as_messages=True, limit=config.max_prompts)
        if self.scorer is None:
            self.scorer = load_scorer(config.reward_model_name_or_path, reward_settings)
        self.tokenizer = load_tokenizer(policy.path, config.trust_remote_code, padding_side="left", cache_dir=config.cache_dir)
        reward_funcs, weights = make_reward_functions(self.scorer, config.length_penalty)
        model = AutoModelForCausalLM.from_pretrained(
            policy.path, dtype=torch.float32 if not torch.cuda.is_available() else "auto", trust_remote_code=config.trust_remote_code
        )
        self.csv_log = CsvLogCallback(Path(config.output_dir) / RL.outputs.files["log"])
        return (RLOOTrainer if config.algorithm == "rloo" else GRPOTrainer)(
            model=model,
            reward_funcs=reward_funcs,
            args=trl_config(config, weights),
            train_dataset=build_dataset(self.contexts, self.tokenizer),
            processing_class=self.tokenizer,
            callbacks=[self.csv_log.trainer_callback],
            peft_config=peft_config,
        )

    def save(self, trainer) -> None:
        self.tokenizer.save_pretrained(self.config.output_dir)

    def summarize(self, trainer, result) -> dict:
        config, rows = self.config, self.csv_log.rows
        summary = {
            "algorithm": config.algorithm,
            "policy": config.model_name_or_path,
            "reward_model": config.reward_model_name_or_path,
            "prompts": len(self.contexts),
            "global_step": trainer.state.global_step,
            "beta": config.beta,
            "length_penalty": config.length_penalty,
            "first_log": rows[0] if rows else None,
            "last_log": rows[-1] if rows else None,
        }
        last = summary["last_log"] or {}
        print(
            f"almost rl: {summary['global_step']} steps; last logged reward {show_logged(last, 'reward')}, KL "
            f"{show_logged(last, 'kl')}, answer length {show_logged(last, 'completion_length')} tokens; policy saved to "
            f"{Path(config.output_dir)}"
        )
        return summary

    def write_card(self, summary: dict) -> None:
        write_card(self.config, summary)


def run_rl(config: RLConfig, scorer=None) -> dict:
    """Train and save the policy. ``scorer`` (anything with ``score(conversations)``) replaces the RM for tests."""
    return run_recipe(RLTraining(config, scorer))
