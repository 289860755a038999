"""Checking a pipeline's plan before any step runs: every user key an option of its stage, every
model findable, the rubric naming real rg configurations, every step's settings accepted by its stage."""

from __future__ import annotations

from ..engines import AUTO, resolve_backend
from ..errors import AlmostError
from ..models import resolve_model
from ..stages import CS
from .plan import Planner, Step, options, parse


def served_elsewhere(flags: dict, key: str, value) -> bool:
    """A model another machine runs: a URL, or a name an OpenAI-compatible server serves (nothing to find here)."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return True
    # The models the stage generates with (the reward model is scored here, whatever the backend).
    return flags.get("backend") == "openai" and key in ("model_name_or_path", "user_model_name_or_path", "baseline_model_name_or_path")


def validate(steps: list[Step], planner: Planner, check_models: bool = True, parse_values: bool = True) -> None:
    """Every check that can fail before work starts; the first problem raises ``AlmostError``.

    ``check_models=False`` skips resolving models and ``parse_values=False`` skips parsing every
    step's settings into its stage's configs (which, e.g., refuses bf16 on a machine without a GPU): the tests
    check the shipped GPU configs' keys this way on a CPU machine.
    """
    where = planner.where
    for step in steps:
        stage_options = options(step.stage)
        for key in step.user_keys:
            if key == "output_dir":
                raise AlmostError(
                    f"{where}: {step.name}: output_dir is chosen by the pipeline (a folder per step under the run directory); remove it"
                )
            if key != "launcher" and key not in stage_options:
                raise AlmostError(f"{where}: {step.name}: unknown key {key!r} for `{step.stage.prog}` (see its --help)")
        uses_vllm = "backend" in stage_options and resolve_backend(str(step.flags.get("backend", AUTO))) == "vllm"
        if planner.config.get("in_process") and (step.launcher or uses_vllm):
            raise AlmostError(
                f"{where}: {step.name}: in_process cannot run a launcher or the vllm backend (the default where vLLM is "
                "installed); remove in_process or set backend: hf"
            )
    wired_models = {str(s.output_dir) for s in steps}
    checked: set[str] = set()
    for step in steps if check_models else ():
        for key, source in step.stage.inputs.items():
            value = step.flags.get(key)
            if not source.model or served_elsewhere(step.flags, key, value):
                continue
            if isinstance(value, str) and value not in wired_models and value not in checked:
                try:
                    resolve_model(value, cache_dir=step.flags.get("cache_dir"))
                except AlmostError as e:
                    raise AlmostError(f"{where}: {step.name}: {key}: {e}") from None
                checked.add(value)
    cs = next((s for s in steps if s.stage is CS), None)
    if cs is not None and "rg" in planner.config:
        rubric = cs.flags.get("rubric")
        if not rubric:
            raise AlmostError(f"{where}: cs.rubric is missing: list the rg configurations best first")
        rubric = [rubric] if isinstance(rubric, str) else rubric
        for entry in rubric:
            for name in str(entry).split(","):
                if name.strip() not in planner.configuration_names:
                    raise AlmostError(
                        f"{where}: cs.rubric names {name.strip()!r}, which is not an rg configuration "
                        f"({', '.join(planner.configuration_names)})"
                    )
    for step in steps if parse_values else ():
        try:
            parse(step.stage, step.flags)
        except AlmostError as e:
            raise AlmostError(f"{where}: {step.name}: {e}") from None
