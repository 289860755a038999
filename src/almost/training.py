"""What the training stages (``rm train``, ``sft``, ``rl``) share: config fields, LoRA settings and a
clean checkpoint folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import resolve_training_hardware
from .io import portable, redact, write_json_atomic, write_text_atomic

ADAPTER_DIR = "adapter"  # with --lora: the adapter lives here, the merged model at the top level


@dataclass
class LoraArguments:
    """The adapter's shape; mixed into a TRL config (``--lora`` / ``--use_peft`` turns LoRA on)."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling (alpha)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules that get adapters (default: every linear layer)."}
    )


@dataclass
class HardwareArguments:
    """Precision and memory switches whose right value depends on the machine (None = decide by
    hardware in ``resolve_training_hardware``): on where they pay (GPU), off on CPU where they only cost."""

    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Recompute activations to save memory (default: on with a GPU, off on CPU)."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision (default: on with a bf16-capable GPU, and on CPUs with native bf16; off elsewhere, where it is slower)."},
    )


@dataclass
class TrainingStageArguments(LoraArguments, HardwareArguments):
    """Fields ``rm train`` and ``sft`` add to their TRL config alike, with the seed release's defaults
    where it had one. Mix in before the TRL config: ``class X(TrainingStageArguments, SFTConfig)``."""

    cache_dir: str | None = field(default=None, metadata={"help": "Where hub downloads and converted GGUF checkpoints are cached."})
    warmup_ratio: float | None = field(
        default=0.03, metadata={"help": "Share of steps spent warming the learning rate up (seed spelling; sets --warmup_steps)."}
    )
    lora: bool = field(
        default=False,
        metadata={"help": "Train LoRA adapters (a reward model also trains its score head) instead of every weight; the saved model is merged, the adapter kept beside it."},
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate of AdamW."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (cosine, linear, constant, ...)."})
    save_strategy: str = field(default="no", metadata={"help": "Intermediate checkpoints: no, steps or epoch (the final model is always saved)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every X optimizer steps."})

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            self.warmup_steps = self.warmup_ratio
        resolve_training_hardware(self)
        super().__post_init__()


def lora_config(config, task_type: str, modules_to_save: list[str] | None = None):
    """peft's LoraConfig from a stage config's ``lora_*`` fields."""
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
        modules_to_save=modules_to_save,
    )


def load_merged_adapter(adapter_dir: str | Path, task_type: str, trust_remote_code: bool = False, dtype=None):
    """A saved LoRA adapter merged into its base model: a plain model, as fast as a full checkpoint.

    ``task_type`` is peft's: "SEQ_CLS" for a reward model (whose adapter also holds the trained
    score head), "CAUSAL_LM" for a policy.
    """
    kwargs = {"trust_remote_code": trust_remote_code, **({"dtype": dtype} if dtype is not None else {})}
    if task_type == "SEQ_CLS":
        from peft import AutoPeftModelForSequenceClassification
        from trl.trainer.reward_trainer import suppress_seqcls_warning

        with suppress_seqcls_warning():  # the base lacks the score head the adapter brings
            model = AutoPeftModelForSequenceClassification.from_pretrained(str(adapter_dir), num_labels=1, **kwargs)
    else:
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), **kwargs)
    return model.merge_and_unload()


def save_trained_model(trainer, output_dir: Path, lora_task_type: str | None, trust_remote_code: bool) -> bool:
    """Save the trained weights (with LoRA, ``lora_task_type`` set: the adapter, then the merged
    model beside it).

    Every process must call it (saving may gather shards); returns True on the main process only,
    which alone goes on to write the model card and metrics.
    """
    trainer.save_model(str(output_dir / ADAPTER_DIR) if lora_task_type else str(output_dir))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return False
    if lora_task_type:
        load_merged_adapter(output_dir / ADAPTER_DIR, lora_task_type, trust_remote_code).save_pretrained(output_dir)
    return True


def plain_settings(config) -> dict:
    """The config's scalar settings (text, numbers, flags), as metrics.json records them: secrets
    (``hub_token``, anything named *_key, *secret*, *password*) redacted, as TRL does."""
    return redact({k: v for k, v in asdict(config).items() if isinstance(v, (str, int, float, bool, type(None)))})


def finish_checkpoint(output_dir: Path, lora: bool, model_card: str, summary: dict) -> None:
    """Write the model card and metrics, and remove what Trainer leaves beside the model.

    Both record paths relative to the run directory (the output folder's parent), not this machine's."""
    base = Path(output_dir).resolve().parent
    write_text_atomic(output_dir / "README.md", portable(model_card, base))
    write_json_atomic(output_dir / "metrics.json", portable(summary, base))
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    if lora:
        (output_dir / ADAPTER_DIR / "training_args.bin").unlink(missing_ok=True)
        (output_dir / ADAPTER_DIR / "README.md").unlink(missing_ok=True)
