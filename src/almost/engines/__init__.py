"""Text generation engines behind one interface; ``load_engine`` builds the one a config names."""

from __future__ import annotations

import importlib.util
import sys

from ..errors import AlmostError
from ..models import ResolvedModel, resolve_model
from .base import Engine, Sampling, truncate_at_stop
from .hf import HFEngine
from .openai import OpenAIEngine, api_key_from_env
from .vllm import VLLMEngine

BACKENDS = ("hf", "vllm", "openai")
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


def engine_model(config, name_or_path: str | None) -> ResolvedModel:
    """The model an engine will run: a local checkpoint (hf, vllm), or for ``--backend openai`` the
    name the server serves, which is never looked up on disk or on the Hub (``--model`` renames the
    main model; other models, such as a separate user simulator, are sent as typed)."""
    if getattr(config, "backend", None) != "openai":
        return resolve_model(name_or_path, getattr(config, "cache_dir", None))
    name = name_or_path or config.model_name_or_path
    served = config.model if config.model and name == config.model_name_or_path else name
    return ResolvedModel(name=name, path=served)


def load_engine(config, model: ResolvedModel) -> Engine:
    """The engine ``config.backend`` names, loaded with ``model`` (``engine_model``) and the engine
    settings of ``config`` (a stage's ``config.EngineArguments``)."""
    backend = resolve_backend(config.backend)
    if backend == "hf":
        return HFEngine(
            model.path,
            batch_size=config.batch_size,
            dtype=config.dtype,
            trust_remote_code=config.trust_remote_code,
            cache_dir=config.cache_dir,
        )
    if backend == "openai":
        return OpenAIEngine(
            config.base_url or [],
            model.path,
            api_key=api_key_from_env(config.api_key_env),
            concurrency=config.concurrency,
            timeout=config.request_timeout,
            max_retries=config.max_retries,
        )
    return VLLMEngine(
        model.path,
        seed=config.seed,
        tensor_parallel_size=config.tensor_parallel_size,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        cache_dir=config.cache_dir,
        kv_cache_gib=config.kv_cache_gib,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_model_len=config.max_model_len,
    )


__all__ = ["AUTO", "BACKENDS", "Engine", "Sampling", "engine_model", "load_engine", "resolve_backend", "truncate_at_stop"]
