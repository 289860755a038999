"""What the training stages (``rm train``, ``sft``) share: LoRA settings and a clean checkpoint folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .io import write_json_atomic, write_text_atomic

ADAPTER_DIR = "adapter"  # with --lora: the adapter lives here, the merged model at the top level


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


def save_trained_model(trainer, output_dir: Path, lora: bool, merge: Callable[[Path, Path], None]) -> bool:
    """Save the trained weights (with LoRA: the adapter, then the merged model beside it).

    Every process must call it (saving may gather shards); returns True on the main process only,
    which alone goes on to write the model card and metrics.
    """
    trainer.save_model(str(output_dir / ADAPTER_DIR) if lora else str(output_dir))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return False
    if lora:
        merge(output_dir / ADAPTER_DIR, output_dir)
    return True


def finish_checkpoint(output_dir: Path, lora: bool, model_card: str, summary: dict) -> None:
    """Write the model card and metrics, and remove what Trainer leaves beside the model."""
    write_text_atomic(output_dir / "README.md", model_card)
    write_json_atomic(output_dir / "metrics.json", summary)
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    if lora:
        (output_dir / ADAPTER_DIR / "training_args.bin").unlink(missing_ok=True)
        (output_dir / ADAPTER_DIR / "README.md").unlink(missing_ok=True)
