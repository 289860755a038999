"""Stage configs are dataclasses: YAML (``--config file.yaml``) gives defaults, flags override them.

Every field has help text. Options keep the seed release's spellings (``--output_dir``); the dash
spellings (``--output-dir``) are accepted too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

from trl import TrlParser

from .io import AlmostError
from .models import DEFAULT_MODEL


class Parser(TrlParser):
    """TrlParser whose errors are one line (``almost X: error: ...``) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        if _probe is not None:
            raise AlmostError(message)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


@dataclass
class ParseProbe:
    """What ``parse`` saw inside ``parse_only()``: the stage's parser and, if parsing worked, its result."""

    parser: Parser | None = None
    parsed: tuple[Any, ...] | None = None


class ParsedOnly(BaseException):
    """Raised by ``parse`` inside ``parse_only()`` once the arguments are parsed: stop before any work.

    A BaseException so that a stage's own ``except Exception`` cannot swallow it.
    """


_probe: ParseProbe | None = None


@contextmanager
def parse_only() -> Iterator[ParseProbe]:
    """Make ``parse`` check a stage's arguments and then stop (``ParsedOnly``) instead of returning.

    The pipeline validates every stage's flags this way, through the stage's own ``main(argv)``,
    before any stage starts. Parse errors raise ``AlmostError`` instead of exiting.
    """
    global _probe
    previous, _probe = _probe, ParseProbe()
    try:
        yield _probe
    finally:
        _probe = previous


def parse(prog: str, dataclass_types: Sequence[type], argv: Sequence[str] | None, description: str | None = None):
    """Parse ``argv`` (with an optional ``--config`` YAML) into instances of ``dataclass_types``."""
    parser = Parser(dataclass_types, prog=prog, description=description)
    if _probe is not None:
        _probe.parser = parser
    try:
        parsed = parser.parse_args_and_config(list(argv) if argv is not None else None)
    except FileNotFoundError as e:
        raise AlmostError(f"config file not found: {e.filename}") from None
    except ValueError as e:
        # Dataclass validation (__post_init__) and bad YAML values surface as ValueError.
        raise AlmostError(str(e).splitlines()[0]) from None
    if _probe is not None:
        _probe.parsed = tuple(parsed)
        raise ParsedOnly()
    return parsed


@dataclass
class ModelArguments:
    """Which model and how to load it; shared by every stage that loads a model."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": f"Hub id, local checkpoint directory, .gguf file, or embedded model name (default {DEFAULT_MODEL})."},
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where hub downloads and converted GGUF checkpoints are cached."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model repositories to run their own code (off unless asked)."}
    )


@dataclass
class EngineArguments(ModelArguments):
    """Model plus generation engine; shared by the generation stages (pg, rg, rmsp, eval)."""

    backend: str = field(default="hf", metadata={"help": "Generation engine: hf (transformers), vllm, or openai (a served model, see --base_url)."})
    use_hf: bool = field(default=False, metadata={"help": "Seed-release spelling of --backend hf."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per batch (hf backend)."})
    dtype: str = field(
        default="auto",
        metadata={"help": "auto, bfloat16, float16 or float32. auto: bf16 on GPU, fp32 weights with bf16 autocast on CPUs that support it."},
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per model (vllm backend)."})
    seed: int = field(default=42, metadata={"help": "Random seed: the same seed on the same backend repeats a run."})
    overwrite: bool = field(default=False, metadata={"help": "Start again even if finished or partial outputs exist."})
    base_url: list[str] = field(
        default_factory=list,
        metadata={"help": "openai backend: the server's OpenAI-compatible API root (e.g. http://127.0.0.1:8000/v1); several (or comma-separated) are used in turn."},
    )
    model: str | None = field(
        default=None, metadata={"help": "openai backend: the model name the server serves (default: --model_name_or_path as typed)."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "openai backend: environment variable holding the API key (unset: no key sent; never written to a file)."}
    )
    concurrency: int = field(default=8, metadata={"help": "openai backend: requests in flight at once."})
    request_timeout: float = field(default=600.0, metadata={"help": "openai backend: seconds to wait for one reply."})
    max_retries: int = field(
        default=8, metadata={"help": "openai backend: retries of a request after HTTP 429/5xx, a refused connection or a timeout (backoff 1, 2, 4, ... 30 s)."}
    )

    def __post_init__(self):
        if self.use_hf:
            self.backend = "hf"
        if self.backend not in ("hf", "vllm", "openai"):
            raise ValueError(f"unknown backend {self.backend!r}; choose hf, vllm or openai")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("--backend openai needs --base_url (the server's API root, e.g. http://127.0.0.1:8000/v1)")
        if self.model and self.backend != "openai":
            # Before --model existed, argparse took it as short for --model_name_or_path: say so, never ignore it.
            raise ValueError("--model names the model an openai server serves (with --backend openai); a local model is --model_name_or_path")
        if self.batch_size < 1:
            raise ValueError("--batch_size must be at least 1")


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

    from .models import cpu_bf16_is_fast

    if not torch.accelerator.is_available():
        args.use_cpu = True
    gpu = torch.cuda.is_available() and not args.use_cpu
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = gpu
    if args.bf16 is None:
        args.bf16 = (gpu and torch.cuda.is_bf16_supported()) or (not gpu and cpu_bf16_is_fast())
