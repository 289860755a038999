"""Stage configs are dataclasses: YAML (``--config file.yaml``) gives defaults, flags override them.

Every field has help text. Options keep the seed release's spellings (``--output_dir``); the dash
spellings (``--output-dir``) are accepted too. ``parse`` reads a command line (the stages' ``main``),
``parse_settings`` a mapping of the same options (the pipeline's YAML sections), through one parser.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, NoReturn

from .engines import resolve_backend
from .errors import AlmostError
from .locks import lock_output_dir
from .models import DEFAULT_MODEL, cpu_bf16_is_fast
from .readers import read_yaml_mapping
from .redaction import redact_argv


def stage_parser(dataclass_types: Sequence[type], prog: str, description: str | None = None):
    """TRL's parser for ``dataclass_types`` (``--config`` YAML, then flags), whose errors are one line
    (``almost X: error: ...``) with exit status 2.

    TRL is imported here, when a stage parses its options: it loads torch and transformers (seconds),
    which ``almost --help`` and the pipeline's planning do without.
    """
    from trl import TrlParser

    class Parser(TrlParser):
        def parse_known_args(self, args=None, namespace=None):
            # Checked here, between argparse and the dataclasses: a config's __post_init__ (TRL's
            # included) may already divide by or index with the value.
            parsed, rest = super().parse_known_args(args, namespace)
            check_values(vars(parsed))
            return parsed, rest

        def set_defaults_with_config(self, **kwargs) -> list[str]:
            # A --config value alone for an option that takes only a list is one entry, as on the command
            # line: argparse keeps a default as given, and the stage would iterate over a path's letters
            # or fail on a number.
            accepted = {f.name: _simple_types(f.type) for t in self.dataclass_types for f in fields(t)}
            only_lists = {k for k, a in accepted.items() if a is not None and a.is_list and not a.scalars}
            return super().set_defaults_with_config(
                **{k: [v] if k in only_lists and v is not None and not isinstance(v, list) else v for k, v in kwargs.items()}
            )

        def error(self, message: str) -> NoReturn:
            # Raised, not sys.exit(2): the CLI prints it as one line and exits 2, and a caller running
            # the stage in process (the pipeline, the tests) gets the same error as every other one.
            raise AlmostError(message)

    return Parser(dataclass_types, prog=prog, description=description)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are ``AlmostError`` (one line, exit 2 through the CLI): for the commands
    that are not a stage (pipeline, demo, report)."""

    def error(self, message):
        raise AlmostError(message)


def parse(prog: str, dataclass_types: Sequence[type], argv: Sequence[str] | None, description: str | None = None):
    """Parse ``argv`` (with an optional ``--config`` YAML) into instances of ``dataclass_types``, and
    lock the output directory they name for this process."""
    parser = stage_parser(dataclass_types, prog, description)
    argv = list(argv) if argv is not None else sys.argv[1:]
    check_config_file(argv, dataclass_types)
    parsed = _parse_argv(parser, argv)
    output_dir = next((c.output_dir for c in parsed if isinstance(getattr(c, "output_dir", None), str) and c.output_dir), None)
    if output_dir:
        lock_output_dir(output_dir, " ".join([prog, *redact_argv(argv)]))
    return parsed


def parse_settings(prog: str, dataclass_types: Sequence[type], settings: Mapping[str, Any]) -> tuple:
    """``settings`` (option name → value, as a YAML section writes them) → instances of
    ``dataclass_types``, without locking anything.

    The values go through the command line's own parser (``settings_to_argv``), so they are converted
    and checked exactly as ``almost <stage> --key value`` would be (``check_values``, each config's
    ``__post_init__``): a stage that the pipeline runs in process gets the config its child process
    would have parsed.
    """
    unknown = [key for key in settings if key not in option_names(dataclass_types)]
    if unknown:
        raise AlmostError(f"unrecognized option {unknown[0]!r} for `{prog}`")
    check_value_types(settings, dataclass_types)
    return _parse_argv(stage_parser(dataclass_types, prog), settings_to_argv(settings))


def _parse_argv(parser, argv: list[str]) -> tuple:
    try:
        return tuple(parser.parse_args_and_config(argv))
    except FileNotFoundError as e:
        raise AlmostError(f"config file not found: {e.filename}") from None
    except ValueError as e:
        # Dataclass validation (__post_init__) and bad YAML values surface as ValueError.
        raise AlmostError(str(e).splitlines()[0]) from None


def option_names(dataclass_types: Sequence[type]) -> frozenset[str]:
    """The options a stage takes, in their underscore spelling: its configs' fields, plus ``no_X`` for a
    boolean that defaults to true (HfArgumentParser adds that spelling)."""
    names = set()
    for f in (f for t in dataclass_types for f in fields(t) if f.init):
        names.add(f.name)
        if f.default is True:
            names.add(f"no_{f.name}")
    return frozenset(names)


def option_default(dataclass_types: Sequence[type], name: str) -> Any:
    """The default of the option ``name`` (None when it has none, or no such option)."""
    for f in (f for t in dataclass_types for f in fields(t) if f.init and f.name == name):
        if f.default is not MISSING:
            return f.default
        return f.default_factory() if f.default_factory is not MISSING else None
    return None


def settings_to_argv(settings: Mapping[str, Any]) -> list[str]:
    """``{key: value}`` → ``--key value`` as the stages' parser reads them; None keeps the default."""
    argv: list[str] = []
    for key, value in settings.items():
        if value is None:
            continue  # YAML null: keep the stage's default
        if isinstance(value, bool):
            argv += [f"--{key}", "true" if value else "false"]
        elif isinstance(value, (list, tuple)):
            if value:
                argv += [f"--{key}", *(str(v) for v in value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def check_config_file(argv: list[str], dataclass_types: Sequence[type]) -> None:
    """``--config FILE``: present, UTF-8, valid YAML, a mapping whose values have the fields' types."""
    if "--config" not in argv:
        return
    i = argv.index("--config")
    if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
        raise AlmostError("--config needs a YAML file: --config FILE.yaml")
    path = argv[i + 1]
    config = read_yaml_mapping(path, "config file", "option names to values")
    check_value_types({k: v for k, v in config.items() if k != "env"}, dataclass_types, f"{path}: ")  # env: TRL's own block


def check_value_types(settings: Mapping[str, Any], dataclass_types: Sequence[type], where: str = "") -> None:
    """Values from YAML (``--config``, a pipeline section) have the types of the fields they set.

    TrlParser hands ``--config`` values to the dataclasses unconverted, and the pipeline turns its values
    into flags with ``str()``: a list where a number belongs, or a number or mapping where a list of
    names belongs, would otherwise fail with a traceback deep inside a stage, or be taken for a name.
    Unknown keys and fields of other types are left to the parser.
    """
    annotations = {f.name: f.type for t in dataclass_types for f in fields(t)}
    for key, value in settings.items():
        if key not in annotations or value is None:
            continue
        accepted = _simple_types(annotations[key])
        if accepted is not None and not _has_type(value, accepted):
            raise AlmostError(f"{where}{key} must be {_type_names(accepted)}, got {type(value).__name__} {value!r}")


# A field's type as the check above reads it: the scalar types it takes, and for a list field the type
# of its items. A list field also takes one item alone, as the command line does.
_SCALARS = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class _Accepted:
    scalars: frozenset[type]
    items: frozenset[type] = frozenset()
    is_list: bool = False


def _simple_types(annotation: Any) -> _Accepted | None:
    """The plain types a field accepts (str, int, float, bool, lists of them), or None when it is
    anything else (the check is skipped). Handles string annotations (``"int | None"``) and typing objects."""
    if isinstance(annotation, str):
        parts = [p.strip() for p in annotation.replace("Optional[", "").rstrip("]").split("|")]
    else:
        parts = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    scalars, items, is_list = set(), frozenset(), False
    for part in parts:
        if part in ("None", type(None)):
            continue
        if part in _SCALARS or part in _SCALARS.values():
            scalars.add(_SCALARS.get(part, part))
        elif isinstance(part, str) and part.startswith(("list[", "List[")):
            item = _SCALARS.get(part[5:].rstrip("]").strip())
            if item is None:
                return None  # a list of mappings or other objects: left to the parser
            is_list, items = True, frozenset({item})
        elif not isinstance(part, str) and typing.get_origin(part) is list:
            args = typing.get_args(part)
            if len(args) != 1 or args[0] not in _SCALARS.values():
                return None
            is_list, items = True, frozenset(args)
        else:
            return None
    if not scalars and not is_list:
        return None
    return _Accepted(frozenset(scalars), items, is_list)


def _is_scalar_of(value: Any, expected: frozenset[type]) -> bool:
    if isinstance(value, bool):
        return bool in expected
    if isinstance(value, int):
        return int in expected or float in expected
    if isinstance(value, float):
        return float in expected
    return isinstance(value, str) and str in expected


def _has_type(value: Any, accepted: _Accepted) -> bool:
    if _is_scalar_of(value, accepted.scalars):
        return True
    if not accepted.is_list:
        return False
    if isinstance(value, list):
        return all(_is_scalar_of(v, accepted.items) for v in value)
    return _is_scalar_of(value, accepted.items)


def _type_names(accepted: _Accepted) -> str:
    names = sorted(t.__name__ for t in accepted.scalars | accepted.items)
    if accepted.is_list:
        names.append("list of " + " or ".join(sorted(t.__name__ for t in accepted.items)))
    return " or ".join(names)


# Values every stage would otherwise accept and then fail on (a traceback deep in generation or
# training) or silently misuse: checked once, by field name, for every stage that has the field.
VALUE_RULES: dict[str, tuple[Any, str]] = {
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "temperature": (lambda v: v >= 0, "at least 0"),
    "max_new_tokens": (lambda v: v >= 1, "at least 1"),
    "max_questions": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "per_device_train_batch_size": (lambda v: v >= 1, "at least 1"),
    "num_generations": (lambda v: v >= 2, "at least 2 (answers are compared within a prompt's group)"),
    "max_length": (lambda v: v >= 1, "at least 1"),
    "learning_rate": (lambda v: v > 0, "above 0"),
}


def check_values(values: dict[str, Any]) -> None:
    """The field-name rules above, on the parsed values (None means "not set")."""
    for name, (ok, wanted) in VALUE_RULES.items():
        value = values.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if (isinstance(value, float) and math.isnan(value)) or not ok(value):
            raise AlmostError(f"--{name} must be {wanted}, got {value}")


@dataclass
class ModelArguments:
    """Which model and how to load it; shared by every stage that loads a model."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": f"Hub id, local checkpoint directory, .gguf file, or embedded model name (default {DEFAULT_MODEL})."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where hub downloads and converted GGUF checkpoints are cached."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model repositories to run their own code (off unless asked)."})


@dataclass
class EngineArguments(ModelArguments):
    """Model plus generation engine; shared by the generation stages (pg, rg, rmsp, eval)."""

    backend: str = field(
        default="auto",
        metadata={
            "help": (
                "Generation engine: vllm, hf (transformers), openai (a served model, see --base_url), or auto: vllm wherever "
                "it is installed, else hf with a notice."
            )
        },
    )
    use_hf: bool = field(default=False, metadata={"help": "Seed-release spelling of --backend hf."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per batch (hf backend; vLLM schedules its own batches)."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "auto, bfloat16, float16 or float32. auto: bf16 on GPU, fp32 weights with bf16 autocast on CPUs that support it."
        },
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per model (vllm backend)."})
    kv_cache_gib: float | None = field(
        default=None,
        metadata={"help": "vLLM's KV cache on CPU, in GiB (default: a share of the memory available at start; see docs/feedback.md)."},
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "Share of GPU memory vLLM may take, weights and KV cache (vllm backend on GPUs)."}
    )
    max_model_len: int | None = field(
        default=None,
        metadata={
            "help": (
                "vllm backend: the longest prompt plus answer, in tokens (default: the model's context length). On CPU one "
                "engine step prefills up to this many tokens (chunked prefill is off there), so a smaller value bounds that "
                "step's activation memory: see docs/feedback.md."
            )
        },
    )
    seed: int = field(default=42, metadata={"help": "Random seed: the same seed on the same backend repeats a run."})
    overwrite: bool = field(default=False, metadata={"help": "Start again even if finished or partial outputs exist."})
    base_url: list[str] = field(
        default_factory=list,
        metadata={
            "help": (
                "openai backend: the server's OpenAI-compatible API root (e.g. http://127.0.0.1:8000/v1); several (or "
                "comma-separated) are used in turn."
            )
        },
    )
    model: str | None = field(
        default=None, metadata={"help": "openai backend: the model name the server serves (default: --model_name_or_path as typed)."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "openai backend: environment variable holding the API key (unset: no key sent; never written to a file)."},
    )
    concurrency: int = field(default=8, metadata={"help": "openai backend: requests in flight at once."})
    request_timeout: float = field(default=600.0, metadata={"help": "openai backend: seconds to wait for one reply."})
    max_retries: int = field(
        default=8,
        metadata={
            "help": (
                "openai backend: retries of a request after HTTP 429/5xx, a refused connection or a timeout (backoff 1, 2, 4, ... 30 s)."
            )
        },
    )

    def __post_init__(self):
        # Resolved once here, so that what a run records (fingerprints, stats) names the real engine.
        self.backend = resolve_backend("hf" if self.use_hf else self.backend)
        if self.backend == "openai" and not self.base_url:
            raise ValueError("--backend openai needs --base_url (the server's API root, e.g. http://127.0.0.1:8000/v1)")
        if self.model and self.backend != "openai":
            # Meant as short for --model_name_or_path, --model would otherwise be silently ignored: say so.
            raise ValueError(
                "--model names the model an openai server serves (with --backend openai); a local model is --model_name_or_path"
            )
        if self.batch_size < 1:
            raise ValueError("--batch_size must be at least 1")
        if self.kv_cache_gib is not None and self.kv_cache_gib <= 0:
            raise ValueError("--kv_cache_gib must be positive")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("--gpu_memory_utilization must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("--max_model_len must be a positive number of tokens")


def require_option(value: Any, option: str, purpose: str = "") -> None:
    """The one check for an option a stage cannot run without: ``--option is required (purpose)``."""
    if not value:
        raise AlmostError(f"--{option} is required" + (f" ({purpose})" if purpose else ""))


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"i/n"`` → (i, n) with 0 <= i < n; None for no sharding."""
    if not shard:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise AlmostError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise AlmostError(f"--shard {shard}: need 0 <= i < n")
    return i, n


def resolve_training_hardware(args) -> None:
    """Fill a training config's hardware-dependent defaults (None = auto) before TRL validates them.

    Without ``use_cpu`` on a machine with no accelerator, a multi-process launch (accelerate launch,
    torchrun) starts a process group that Trainer then ignores, and bf16 is refused outright.
    bf16 pays off on GPUs that support it and on CPUs with native bf16; elsewhere it is slower.
    """
    import torch

    if not torch.accelerator.is_available():
        args.use_cpu = True
    gpu = torch.cuda.is_available() and not args.use_cpu
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = gpu
    if args.bf16 is None:
        args.bf16 = (gpu and torch.cuda.is_bf16_supported()) or (not gpu and cpu_bf16_is_fast())
