"""The package's shape, counted from the source with ``ast``: every import statement of every module
in src/almost (those inside functions too) points to a module in the same layer or a lower one, the
imports form no cycle, no file is over 500 lines and no function over 80 (end_lineno - lineno + 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "almost"
# Lowest first; a module may import from its own layer and the ones before it (docs/ARCHITECTURE.md).
LAYERS = {
    "base: errors, the text format, shipped files": ["almost", "almost.errors", "almost.chat", "almost.shipped", "almost.allocator"],
    "file primitives": ["almost.readers", "almost.writes", "almost.redaction", "almost.stats"],
    "contracts": ["almost.contracts"],
    "records on files, and the stages' records": ["almost.digests", "almost.resumable", "almost.locks", "almost.stages"],
    "models, engines, config, cards": ["almost.models", "almost.engines", "almost.engines.*", "almost.config", "almost.cards"],
    "what stages share": [
        "almost.lora",
        "almost.training",
        "almost.feedback.demos",
        "almost.reward.formats",
        "almost.reward.client",
        "almost.reward.model",
        "almost.evaluate.scoring",
    ],
    "stages": ["almost.feedback", "almost.feedback.*", "almost.reward", "almost.reward.*", "almost.policy", "almost.policy.*"]
    + ["almost.evaluate", "almost.evaluate.*"],
    "the pipeline, the hub, the command line": ["almost.run", "almost.run.*", "almost.hub", "almost.cli", "almost.__main__"],
}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def module_files() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = module_files()


def imported(module: str, path: Path) -> set[str]:
    """The almost modules ``module`` imports, from every import statement in it."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imported(module, path) for module, path in MODULES.items()}


def layer_of(module: str) -> int:
    for rank, patterns in enumerate(LAYERS.values()):
        exact = module in patterns
        below = any(p.endswith(".*") and module.startswith(p[:-1]) for p in patterns)
        if exact or below:
            return rank
    raise AssertionError(f"{module} has no layer: add it to LAYERS in tests/test_layers.py and to docs/ARCHITECTURE.md")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_imports_form_no_cycle():
    assert cycles(GRAPH) == []


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    upward = sorted(m for m in GRAPH[module] if layer_of(m) > layer_of(module))
    assert not upward, f"{module} ({list(LAYERS)[layer_of(module)]}) imports from a higher layer: {upward}"


def test_no_file_or_function_is_too_long():
    too_long = []
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{module}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                too_long.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long
