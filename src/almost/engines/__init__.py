"""Text generation engines behind one interface; ``load_engine`` picks one by name."""

from __future__ import annotations

from ..io import AlmostError
from ..models import ResolvedModel
from .base import Engine, Sampling, truncate_at_stop
from .scripted import ScriptedEngine

BACKENDS = ("hf", "vllm")


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
    raise AlmostError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Engine", "Sampling", "ScriptedEngine", "load_engine", "truncate_at_stop"]
