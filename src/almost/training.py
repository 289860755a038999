"""What the training stages (``rm train``, ``sft``, ``rl``) share: config fields, LoRA settings,
checkpoints a rerun resumes from, and a final model that is never mistaken for a half-written one.

Crash safety, in one place for the three stages:

- Trainer saves ``checkpoint-<step>`` folders inside ``--output_dir`` every ``--save_steps`` steps or
  ``--save_minutes`` minutes, whichever comes first, keeping the last ``--save_total_limit``.
- ``training_status.json`` (``models.TRAINING_STATUS``) says "running" before anything else is saved
  and "done" only after the final model's last file; every reader of a model checks it.
- A rerun of the same command resumes from the last complete checkpoint (weights, optimizer,
  scheduler, RNG, data position), does nothing when the run has finished, and refuses (one line)
  when the settings differ, unless ``--overwrite``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .config import resolve_training_hardware
from .contracts import StageOutputs, write_summary
from .io import AlmostError, portable, read_json, redact, write_json_atomic
from .models import ADAPTER_DIR, TRAINING_STATUS, require_finished_training

# Tests only: stall before this optimizer step (a number) so a test can kill the run at a known
# point after a checkpoint; unset in normal use.
STALL_ENV = "ALMOST_TEST_STALL_AT_STEP"
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
class LoraArguments:
    """LoRA, spelled as TRL's ``ModelConfig`` spells it (``--use_peft --lora_r ...``), alike for the
    three training stages; mixed into a TRL config."""

    use_peft: bool = field(
        default=False,
        metadata={"help": "Train LoRA adapters instead of every weight (a reward model also trains its score head in full)."},
    )
    lora: bool = field(default=False, metadata={"help": "Older spelling of --use_peft (the seed release's)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling (alpha)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules that get adapters (default: every linear layer)."}
    )
    merge_lora: bool = field(
        default=True,
        metadata={"help": "With --use_peft: save the merged model and the adapter beside it in adapter/ (false: the adapter alone)."},
    )

    def __post_init__(self):
        # A field rather than an argparse alias, so that a YAML config may spell it `lora:` too; both
        # spellings end as the same settings, so a rerun may switch spellings and still resume.
        self.use_peft = self.lora = self.use_peft or self.lora
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


def lora_config(config, task_type: str, model_path: str, modules_to_save: list[str] | None = None):
    """peft's LoraConfig from a stage config's ``lora_*`` fields, its target modules checked against
    the model at ``model_path`` (``task_type`` is peft's: "SEQ_CLS" or "CAUSAL_LM")."""
    from peft import LoraConfig

    targets = config.lora_target_modules
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    if targets in ([], ["all-linear"]):
        targets = "all-linear"  # peft's name for every linear layer, which TRL lets `--lora_target_modules all-linear` ask for
    else:
        check_lora_targets(targets, config, task_type, model_path, modules_to_save or [])
    return LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        modules_to_save=modules_to_save,
    )


def check_lora_targets(targets: list[str], config, task_type: str, model_path: str, modules_to_save: list[str]) -> None:
    """Each ``--lora_target_modules`` name must name modules of the model that LoRA can adapt.

    peft matches a name against the end of each module's dotted path, refuses a list that matches
    nothing (and any match of a type it cannot adapt) only inside the trainer, with a traceback, and
    silently drops a name that matches nothing while another one matches. The model is built on the
    meta device: its module tree without memory for the weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.pytorch_utils import Conv1D

    folder = Path(model_path)
    if folder.is_dir() and not (folder / "config.json").is_file():
        return  # an adapter alone: its base model is only known once loaded; peft checks the targets then
    model_config = AutoConfig.from_pretrained(model_path, trust_remote_code=config.trust_remote_code, cache_dir=config.cache_dir)
    if task_type == "SEQ_CLS":
        model_config.num_labels = 1
    auto = AutoModelForSequenceClassification if task_type == "SEQ_CLS" else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(model_config, trust_remote_code=config.trust_remote_code)
    # The types peft's LoRA adapts (peft.tuners.lora.layer.dispatch_default).
    adaptable = (
        torch.nn.Linear,
        torch.nn.Embedding,
        torch.nn.Conv1d,
        torch.nn.Conv2d,
        torch.nn.Conv3d,
        torch.nn.MultiheadAttention,
        Conv1D,
    )
    # Modules trained in full (the reward model's score head) get no adapter: peft skips them, as here.
    in_full = re.compile(rf"(^|.*\.)({'|'.join(map(re.escape, modules_to_save)) or '(?!)'})($|\..*)")
    modules = {name: m for name, m in model.named_modules() if name and not in_full.match(name)}
    layers = ", ".join(sorted({name.rsplit(".", 1)[-1] for name, m in modules.items() if isinstance(m, adaptable)}))
    for target in targets:
        matched = [m for name, m in modules.items() if name == target or name.endswith(f".{target}")]
        if not matched:
            raise AlmostError(
                f"--lora_target_modules {target!r} names no module of {model_path} that takes an adapter; its layers: {layers}"
            )
        refused = sorted({type(m).__name__ for m in matched if not isinstance(m, adaptable)})
        if refused:
            raise AlmostError(
                f"--lora_target_modules {target!r} names {', '.join(refused)} modules of {model_path}, which LoRA cannot adapt; "
                f"name layers such as: {layers}"
            )


def load_merged_adapter(adapter_dir: str | Path, task_type: str, trust_remote_code: bool = False, dtype=None, _own_run: bool = False):
    """A saved LoRA adapter merged into its base model: a plain model, as fast as a full checkpoint.

    ``task_type`` is peft's: "SEQ_CLS" for a reward model (whose adapter also holds the trained
    score head), "CAUSAL_LM" for a policy. An adapter of an unfinished run is refused, except by
    that run itself (``_own_run``) while it saves its final model.
    """
    if not _own_run:
        require_finished_training(adapter_dir)
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


def finish_checkpoint(config, outputs: StageOutputs, summary: dict) -> None:
    """Write the summary (``contracts.write_summary``: exactly the keys ``outputs`` declares), and
    remove what Trainer and peft leave beside the model (the model card is ``cards.write_training_card``'s).

    The summary records paths relative to the run directory (the output folder's parent), not this machine's."""
    output_dir = Path(config.output_dir)
    write_summary(outputs, output_dir, portable(summary, output_dir.resolve().parent))
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    if config.use_peft:
        (output_dir / ADAPTER_DIR / "training_args.bin").unlink(missing_ok=True)
        (output_dir / ADAPTER_DIR / "README.md").unlink(missing_ok=True)


def finished_summary(config, outputs: StageOutputs) -> dict:
    """The summary a finished run wrote, returned again by a rerun that has nothing to do."""
    return read_json(Path(config.output_dir) / outputs.summary_file, f"{outputs.command} summary")


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
    import json

    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
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


def check_output_dir(config, stage: str) -> Rerun:
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
    if status.get("stage") != stage:
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


def stall_for_tests(step: int):
    """A Trainer callback for the kill-and-resume tests: sleep before optimizer step ``step + 1``,
    once the checkpoints and log rows of the steps before it are written."""
    from transformers import TrainerCallback

    class StallForTests(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step:
                print(f"stalling at step {step} ({STALL_ENV})", flush=True)
                time.sleep(3600)

    return StallForTests()


def train_resumably(trainer, config, stage: str, rerun: Rerun):
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
        write_json_atomic(out / TRAINING_STATUS, {"stage": stage, "status": "running", "settings": run_settings(config)})
    trainer.accelerator.wait_for_everyone()
    checkpoint = last_complete_checkpoint(out)
    if checkpoint is not None and trainer.is_world_process_zero():
        print(f"almost {stage}: resuming from step {checkpoint_step(checkpoint)} ({checkpoint})", flush=True)
    if config.save_strategy != "no" and config.save_minutes > 0:
        trainer.add_callback(save_every_minutes(config.save_minutes))
    if os.environ.get(STALL_ENV):
        trainer.add_callback(stall_for_tests(int(os.environ[STALL_ENV])))
    return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)


def mark_finished(output_dir: Path, config, stage: str, final_step: int) -> None:
    """Main process, after the final model's last file: the folder now holds a finished model."""
    write_json_atomic(
        output_dir / TRAINING_STATUS, {"stage": stage, "status": "done", "settings": run_settings(config), "final_step": final_step}
    )
    if not config.keep_checkpoints:
        for path in checkpoints(output_dir):
            shutil.rmtree(path)
