"""Text generation engines behind one interface; ``load_engine`` builds the one a config names."""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

from ..io import AlmostError
from ..models import ResolvedModel
from .base import Engine, Sampling, truncate_at_stop
from .scripted import ScriptedEngine

if TYPE_CHECKING:
    from ..config import EngineArguments

BACKENDS = ("hf", "vllm")
AUTO = "auto"  # vllm wherever it is installed, else hf


def resolve_backend(backend: str) -> str:
    """``auto`` → ``vllm`` where the package is installed (several times faster, on CPU too), else
    ``hf`` with one notice line; any other name is checked and returned as it is."""
    if backend == AUTO:
        if importlib.util.find_spec("vllm") is not None:
            return "vllm"
        _notice_once("almost: vLLM is not installed, generating with --backend hf (pip install 'almost[vllm]' for the faster engine)")
        return "hf"
    if backend not in BACKENDS:
        raise AlmostError(f"unknown backend {backend!r}; choose one of {', '.join((AUTO, *BACKENDS))}")
    return backend


_noticed: set[str] = set()


def _notice_once(message: str) -> None:
    if message not in _noticed:
        _noticed.add(message)
        print(message, file=sys.stderr)


def load_engine(config: EngineArguments, model: ResolvedModel) -> Engine:
    """The engine ``config.backend`` names, loaded with ``model`` and the config's engine settings."""
    backend = resolve_backend(config.backend)
    if backend == "hf":
        from .hf import HFEngine

        return HFEngine(
            model.path, batch_size=config.batch_size, dtype=config.dtype, trust_remote_code=config.trust_remote_code, cache_dir=config.cache_dir
        )
    from .vllm import VLLMEngine

    return VLLMEngine(
        model.path,
        seed=config.seed,
        tensor_parallel_size=config.tensor_parallel_size,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        cache_dir=config.cache_dir,
        kv_cache_gib=config.kv_cache_gib,
        gpu_memory_utilization=config.gpu_memory_utilization,
    )


__all__ = ["AUTO", "BACKENDS", "Engine", "Sampling", "ScriptedEngine", "load_engine", "resolve_backend", "truncate_at_stop"]
