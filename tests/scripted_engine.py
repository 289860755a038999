"""A deterministic engine driven by a Python function: the tests' stand-in for a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from almost.engines import Sampling, truncate_at_stop


class ScriptedEngine:
    """``respond(prompt, sample_index) -> text``; stop strings are applied as on a real engine."""

    name = "scripted"

    def __init__(self, respond: Callable[[str, int], str]):
        self.respond = respond
        self.calls: list[tuple[list[str], Sampling]] = []
        self.closed = False

    def generate(self, prompts: Sequence[str], sampling: Sampling, desc: str | None = None) -> list[list[str]]:
        self.calls.append((list(prompts), sampling))
        return [[truncate_at_stop(self.respond(p, i), sampling.stop) for i in range(sampling.n)] for p in prompts]

    def close(self) -> None:
        self.closed = True
