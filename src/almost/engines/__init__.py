"""Text generation engines behind one interface; ``load_engine`` picks one by name."""

from __future__ import annotations

from ..io import AlmostError
from ..models import ResolvedModel, resolve_model
from .base import Engine, Sampling, truncate_at_stop
from .scripted import ScriptedEngine

BACKENDS = ("hf", "vllm", "openai")


def engine_model(config, name_or_path: str | None) -> ResolvedModel:
    """The model an engine will run: a local checkpoint (hf, vllm), or for ``--backend openai`` the
    name the server serves, which is never looked up on disk or on the Hub (``--model`` renames the
    main model; other models, such as a separate user simulator, are sent as typed)."""
    if getattr(config, "backend", None) != "openai":
        return resolve_model(name_or_path, getattr(config, "cache_dir", None))
    name = name_or_path or config.model_name_or_path
    served = config.model if config.model and name == config.model_name_or_path else name
    return ResolvedModel(name=name, path=served)


def openai_options(config) -> dict:
    """The ``--backend openai`` settings of an EngineArguments config, as ``load_engine`` takes them."""
    return {
        "base_url": config.base_url,
        "api_key_env": config.api_key_env,
        "concurrency": config.concurrency,
        "request_timeout": config.request_timeout,
        "max_retries": config.max_retries,
    }


def load_engine(
    backend: str,
    model: ResolvedModel,
    *,
    batch_size: int = 8,
    seed: int = 0,
    tensor_parallel_size: int = 1,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
    base_url: list[str] | str | None = None,
    api_key_env: str | None = None,
    concurrency: int = 8,
    request_timeout: float = 600.0,
    max_retries: int = 8,
) -> Engine:
    if backend == "hf":
        from .hf import HFEngine

        return HFEngine(model.path, batch_size=batch_size, dtype=dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    if backend == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(
            model.path,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
        )
    if backend == "openai":
        from .openai import OpenAIEngine, api_key_from_env

        return OpenAIEngine(
            base_url or [],
            model.path,
            api_key=api_key_from_env(api_key_env),
            concurrency=concurrency,
            timeout=request_timeout,
            max_retries=max_retries,
        )
    raise AlmostError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Engine", "Sampling", "ScriptedEngine", "engine_model", "load_engine", "openai_options", "truncate_at_stop"]
