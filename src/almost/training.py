"""What the training stages (``rm train``, ``sft``, ``rl``) share: config fields (LoRA's from
``almost.lora``), the recipe every trainer runs, checkpoints a rerun resumes from, and a final model that is never mistaken
for a half-written one.

Each trainer is a ``Recipe``: it checks its options, sets up its data, model and TRL trainer, saves
what its folder holds besides the model, and summarizes its run; ``run_recipe`` does the rest, the
same for all three (look at the folder, train, save on every process, then on the main process
alone: summary, model card, finished).

Crash safety, in one place for the three stages:

- Trainer saves ``checkpoint-<step>`` folders inside ``--output_dir`` every ``--save_steps`` steps or
  ``--save_minutes`` minutes, whichever comes first, keeping the last ``--save_total_limit``.
- ``training_status.json`` (``contracts.TRAINING_STATUS``) says "running" before anything else is saved
  and "done" only after the final model's last file; every reader of a model checks it.
- A rerun of the same command resumes from the last complete checkpoint (weights, optimizer,
  scheduler, RNG, data position), does nothing when the run has finished, and refuses (one line)
  when the settings differ, unless ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from .config import require_option, resolve_training_hardware
from .contracts import ADAPTER_DIR, CARD_FILE, TRAINER_STATE, TRAINING_ARGS, TRAINING_STATUS, write_summary
from .errors import AlmostError
from .lora import LoraArguments, load_merged_adapter
from .readers import read_json
from .redaction import portable, redact
from .stages import Stage
from .writes import write_json_atomic

# Settings that change how a run is logged, saved or launched, not what it computes: a rerun may
# change them and still resume. (Secrets such as hub_token are never written to the status file.)
RESUMABLE_CHANGES = frozenset(
    {
        "output_dir",
        "keep_checkpoints",
        "overwrite",
        "disable_tqdm",
        "report_to",
        "run_name",
        "local_rank",
        "resume_from_checkpoint",
        "per_device_eval_batch_size",
        "push_to_hub",
        "project",
        "skip_memory_metrics",
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_prefetch_factor",
        "dataloader_persistent_workers",
        "ddp_timeout",
        "num_completions_to_print",
    }
)
RESUMABLE_PREFIXES = ("logging_", "log_", "save_", "eval_", "hub_", "trackio_", "vllm_server_")
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class CheckpointArguments:
    """When checkpoints are saved during training and what a rerun does with them; mixed into a
    TRL config before it, like the classes below."""

    save_strategy: str = field(
        default="steps",
        metadata={
            "help": (
                "Intermediate checkpoints: steps (every --save_steps steps or --save_minutes minutes, whichever comes first), "
                "epoch, or no. The final model is always saved."
            )
        },
    )
    save_steps: float = field(
        default=500, metadata={"help": "Save a checkpoint every N optimizer steps (a float < 1: that share of all steps)."}
    )
    save_minutes: float = field(
        default=10.0,
        metadata={
            "help": (
                "Also save a checkpoint once this many minutes have passed since the last one (0: by steps only). Bounds the "
                "work a crash loses alike on a slow CPU and a fast GPU."
            )
        },
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep only the last N checkpoints (older ones are deleted)."})
    keep_checkpoints: bool = field(
        default=False,
        metadata={
            "help": (
                "Keep the checkpoint-* folders once the final model is saved (by default they are deleted then: they hold the "
                "optimizer state, twice the model's size)."
            )
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": (
                "Train from step 0 even when --output_dir holds a run of this stage. Without it a rerun resumes an unfinished "
                "run, does nothing for a finished one, and stops if the settings differ."
            )
        },
    )

    def __post_init__(self):
        if self.save_minutes < 0:
            raise ValueError(f"--save_minutes must be >= 0, got {self.save_minutes}")
        super().__post_init__()


@dataclass
class HardwareArguments:
    """Precision and memory switches whose right value depends on the machine (None = decide by
    hardware in ``resolve_training_hardware``): on where they pay (GPU), off on CPU where they only cost."""

    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Recompute activations to save memory (default: on with a GPU, off on CPU)."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": (
                "bf16 mixed precision (default: on with a bf16-capable GPU, and on CPUs with native bf16; off elsewhere, where "
                "it is slower)."
            )
        },
    )


@dataclass
class TrainingStageArguments(LoraArguments, HardwareArguments, CheckpointArguments):
    """Fields ``rm train``, ``sft`` and ``rl`` add to their TRL config alike, with the seed release's
    defaults where it had one (a stage may override a default). Mix in before the TRL config:
    ``class X(TrainingStageArguments, SFTConfig)``."""

    cache_dir: str | None = field(default=None, metadata={"help": "Where hub downloads and converted GGUF checkpoints are cached."})
    warmup_ratio: float | None = field(
        default=0.03, metadata={"help": "Share of steps spent warming the learning rate up (seed spelling; sets --warmup_steps)."}
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate of AdamW."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (cosine, linear, constant, ...)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every X optimizer steps."})

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            self.warmup_steps = self.warmup_ratio
        resolve_training_hardware(self)
        # The settings as given and resolved here, before TRL's __post_init__ derives fields from them
        # (e.g. generation_batch_size): `almost rl --algorithm grpo` builds its GRPOConfig from these.
        self.given_values = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        super().__post_init__()


def save_trained_model(trainer, config, task_type: str) -> bool:
    """Save the trained weights: every weight, or with ``--use_peft`` the adapter in adapter/ and the
    merged model beside it (``--merge_lora false``: the adapter alone). ``task_type`` is peft's:
    "SEQ_CLS" for a reward model, "CAUSAL_LM" for a policy.

    Every process must call it (saving may gather shards); returns True on the main process only,
    which alone goes on to write the model card and metrics.
    """
    output_dir = Path(config.output_dir)
    merge = config.use_peft and config.merge_lora
    trainer.save_model(str(output_dir / ADAPTER_DIR) if merge else str(output_dir))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return False
    if merge:
        load_merged_adapter(output_dir / ADAPTER_DIR, task_type, config.trust_remote_code, _own_run=True).save_pretrained(output_dir)
    return True


def plain_settings(config) -> dict:
    """The config's scalar settings (text, numbers, flags), as metrics.json records them: secrets
    (``hub_token``, anything named *_key, *secret*, *password*) redacted, as TRL does."""
    return redact({k: v for k, v in asdict(config).items() if isinstance(v, (str, int, float, bool, type(None)))})


def finish_checkpoint(config, stage: Stage, summary: dict) -> None:
    """Write the summary (``contracts.write_summary``: exactly the keys the stage declares), and
    remove what Trainer and peft leave beside the model (the model card is ``cards.write_training_card``'s).

    The summary records paths relative to the run directory (the output folder's parent), not this machine's."""
    output_dir = Path(config.output_dir)
    write_summary(stage.outputs, output_dir, portable(summary, output_dir.resolve().parent))
    (output_dir / TRAINING_ARGS).unlink(missing_ok=True)
    if config.use_peft:
        (output_dir / ADAPTER_DIR / TRAINING_ARGS).unlink(missing_ok=True)
        (output_dir / ADAPTER_DIR / CARD_FILE).unlink(missing_ok=True)


def finished_summary(config, stage: Stage) -> dict:
    """The summary a finished run wrote, returned again by a rerun that has nothing to do."""
    return read_json(Path(config.output_dir) / stage.outputs.summary_file, f"{stage.name} summary")


# ---------------------------------------------------------------------------------------------
# Resuming: what a rerun finds in --output_dir, checkpoints, and the status file.


def run_settings(config) -> dict:
    """The settings that determine what a run computes (see RESUMABLE_CHANGES)."""
    return {k: v for k, v in plain_settings(config).items() if k not in RESUMABLE_CHANGES and not k.startswith(RESUMABLE_PREFIXES)}


def checkpoint_step(path: Path) -> int | None:
    match = CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_complete_checkpoint(path: Path) -> bool:
    """Trainer writes trainer_state.json last (after weights, optimizer, scheduler and RNG state),
    in place: a checkpoint whose state file is missing or cut short was interrupted while saving."""
    try:
        state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == checkpoint_step(path)


def checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-<step> folders, oldest first."""
    if not output_dir.is_dir():
        return []
    return sorted((p for p in output_dir.iterdir() if checkpoint_step(p) is not None), key=checkpoint_step)


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    complete = [p for p in checkpoints(output_dir) if is_complete_checkpoint(p)]
    return complete[-1] if complete else None


@dataclass
class Rerun:
    """What ``--output_dir`` holds when a training stage starts."""

    finished: bool = False  # a finished run with the same settings: nothing to do
    fresh: bool = False  # start from step 0, deleting checkpoints and status of an earlier run


def check_output_dir(config, stage: Stage) -> Rerun:
    """Decide, before any work and without writing anything, what this run does with --output_dir."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise AlmostError(f"--output_dir {out} is a file, not a folder")
    status_file = out / TRAINING_STATUS
    if config.overwrite:
        return Rerun(fresh=True)
    if not status_file.exists():
        # Every run of ours writes the status file before its first checkpoint: checkpoints without
        # one come from elsewhere (plain Trainer, another tool), and are neither resumed nor deleted.
        if checkpoints(out):
            raise AlmostError(
                f"--output_dir {out} holds checkpoint folders of another program's run; choose another folder, or pass "
                "--overwrite true to delete them"
            )
        return Rerun(fresh=True)
    status = read_json(status_file, "training status")
    if status.get("stage") != stage.name:
        raise AlmostError(
            f"--output_dir {out} holds an `almost {status.get('stage')}` run; choose another folder, or pass --overwrite true"
        )
    before, now = status.get("settings") or {}, run_settings(config)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        state = "finished" if status.get("status") == "done" else "unfinished"
        raise AlmostError(
            f"--output_dir {out} holds a{'n' if state == 'unfinished' else ''} {state} run with other settings "
            f"({', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}); pass --overwrite true to train again from "
            "step 0, or choose another folder"
        )
    return Rerun(finished=status.get("status") == "done")


def save_every_minutes(minutes: float):
    """A Trainer callback asking for a checkpoint once ``minutes`` have passed since the last one.
    Under DDP the main process's clock decides for all, so every process saves at the same step."""
    import torch.distributed as dist
    from transformers import TrainerCallback

    class SaveEveryMinutes(TrainerCallback):
        def __init__(self):
            self.last = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            due = [time.monotonic() - self.last >= minutes * 60]
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.broadcast_object_list(due, src=0)
            if due[0]:
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            self.last = time.monotonic()

    return SaveEveryMinutes()


def warn_if_fsdp_dropped(trainer, stage: Stage) -> None:
    """Main process: one line when the launch asked for FSDP (``accelerate launch`` with an FSDP config
    sets ACCELERATE_USE_FSDP) and the trainer runs without it. accelerate (1.15) attaches the FSDP
    plugin only to accelerator process groups: CPU processes keep the type MULTI_CPU and train as
    DDP, each holding the whole model (docs/reward.md, "Several processes and GPUs")."""
    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if asked and not trainer.is_fsdp_enabled and trainer.is_world_process_zero():
        print(
            f"{stage.prog}: the FSDP launch config is not in effect: accelerate runs these processes as "
            f"{trainer.accelerator.distributed_type.value} (accelerate applies FSDP on GPUs only), each holding the whole model",
            flush=True,
        )


def train_resumably(trainer, config, stage: Stage, rerun: Rerun):
    """``trainer.train()``, resumed from the last complete checkpoint in --output_dir if there is one.

    Marks the folder "running" first (main process), so nothing saved there from now on is taken for
    a finished model until ``mark_finished``. Every process must call it."""
    out = Path(config.output_dir)
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        if rerun.fresh:
            for path in checkpoints(out):
                shutil.rmtree(path)
        for path in checkpoints(out):
            if not is_complete_checkpoint(path):
                shutil.rmtree(path)  # cut short while saving; its step is redone and saved again
        write_json_atomic(out / TRAINING_STATUS, {"stage": stage.name, "status": "running", "settings": run_settings(config)})
    trainer.accelerator.wait_for_everyone()
    warn_if_fsdp_dropped(trainer, stage)
    checkpoint = last_complete_checkpoint(out)
    if checkpoint is not None and trainer.is_world_process_zero():
        print(f"{stage.prog}: resuming from step {checkpoint_step(checkpoint)} ({checkpoint})", flush=True)
    if config.save_strategy != "no" and config.save_minutes > 0:
        trainer.add_callback(save_every_minutes(config.save_minutes))
    return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)


def mark_finished(output_dir: Path, config, stage: Stage, final_step: int) -> None:
    """Main process, after the final model's last file: the folder now holds a finished model."""
    write_json_atomic(
        output_dir / TRAINING_STATUS, {"stage": stage.name, "status": "done", "settings": run_settings(config), "final_step": final_step}
    )
    if not config.keep_checkpoints:
        for path in checkpoints(output_dir):
            shutil.rmtree(path)


# ---------------------------------------------------------------------------------------------
# The recipe every trainer runs.


class Recipe(Protocol):
    """What a training stage does its own way; ``run_recipe`` runs it, the same for every trainer."""

    stage: Stage
    config: Any  # its config: TrainingStageArguments mixed into a TRL config
    task_type: str  # peft's: "SEQ_CLS" for a reward model, "CAUSAL_LM" for a policy
    product: str  # what a finished folder holds, for the line a rerun prints ("the finished policy")

    def check(self) -> None:
        """The options it cannot run without, before the output folder is looked at."""

    def setup(self):
        """Its data, model and tokenizer read, and the TRL trainer built from them (every process)."""

    def save(self, trainer) -> None:
        """Main process, once the model is saved: what else its folder holds (the tokenizer ...)."""

    def summarize(self, trainer, result) -> dict:
        """Main process: the summary its stage declares, from the trainer and ``trainer.train()``'s result."""

    def write_card(self, summary: dict) -> None:
        """Main process: the model card (``cards.write_training_card``)."""


def run_recipe(recipe: Recipe) -> dict:
    """Check, look at the output folder (resume, start afresh, or nothing to do), set up, train, save
    the model on every process, then on the main process alone: the rest of the folder, the summary,
    the model card, and the mark that the model is finished. Returns the summary ({} on other processes)."""
    config, stage = recipe.config, recipe.stage
    recipe.check()
    require_option(config.output_dir, "output_dir")
    rerun = check_output_dir(config, stage)
    if rerun.finished:
        print(f"{stage.prog}: {config.output_dir} already holds {recipe.product}; nothing to do", flush=True)
        return finished_summary(config, stage)
    trainer = recipe.setup()
    result = train_resumably(trainer, config, stage, rerun)
    if not save_trained_model(trainer, config, recipe.task_type):
        return {}
    recipe.save(trainer)
    summary = recipe.summarize(trainer, result)
    recipe.write_card(summary)
    finish_checkpoint(config, stage, summary)
    mark_finished(Path(config.output_dir), config, stage, trainer.state.global_step)
    return summary
