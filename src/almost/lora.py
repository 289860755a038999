"""LoRA, alike for the three training stages: its options as TRL's ``ModelConfig`` spells them, peft's
config with its target modules checked against the model, and a saved adapter merged back into its
base model."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .contracts import MODEL_CONFIG
from .errors import AlmostError
from .models import require_finished_training


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
    if folder.is_dir() and not (folder / MODEL_CONFIG).is_file():
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
