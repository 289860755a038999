"""One small interface for every text generator: ``generate(prompts, sampling) -> samples``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    """How to sample; the same semantics on every engine."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    n: int = 1  # samples per prompt, drawn in one call with the prompt encoded once
    stop: tuple[str, ...] = field(default_factory=tuple)  # cut before the first of these
    seed: int | None = None  # makes a call repeatable on the same engine


class Engine(Protocol):
    """Generates ``sampling.n`` continuations for each prompt (raw text completion, no chat template)."""

    name: str

    def generate(self, prompts: Sequence[str], sampling: Sampling, desc: str | None = None) -> list[list[str]]: ...

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int], desc: str | None = None) -> list[list[float]]:
        """The log-probability of each of ``token_ids`` as the token that follows each prompt (one
        forward pass, nothing sampled); local engines only (an API engine has no such method)."""
        ...

    def close(self) -> None:
        """Free the model's memory now; the engine is not used afterwards. Whoever loaded an engine
        closes it before loading the next one, so one process never holds two."""


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` before the earliest stop string (engines may overshoot by a token)."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
