"""Planning a pipeline run: the YAML config read and checked for shape, and turned into ``Step``s.

A step is one stage command (``almost rg ...``) with every setting it takes, the wiring between stages
included (the RM trains on CS's comparisons, SFT on RMSP's demonstrations ...), and its own folder
under the run directory. Products and wired paths are the stages' declared outputs
(``almost.contracts``); a stage's options are its config dataclasses' fields (``almost.stages``).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import check_value_types, settings_to_argv
from ..contracts import CS, EVALUATIONS, PG, RMSP
from ..feedback.demos import ASSETS
from ..io import AlmostError, read_yaml_mapping, redact_argv
from ..models import DEFAULT_MODEL
from ..stages import stage_command

STAGES = ("pg", "rg", "cs", "rm", "rmsp", "sft", "rl", "eval")
TOP_LEVEL_KEYS = ("output_dir", "shared", "in_process", *STAGES)
MARKER_PREFIX = ".almost-step"
# The folder of answers shared by the pairwise steps of several judges, beside their step folders
# (whose names always contain "-vs-", so they cannot collide with it).
PAIRWISE_ANSWERS = "answers"
# An eval model label becomes a folder name: one plain name, never a path.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Step:
    """One command of the pipeline: ``almost <command> <flags>`` writing into ``output_dir``."""

    stage: str  # one of STAGES
    name: str  # unique, e.g. "rg/smollm2-135m-faithful-3shot", "rm/train", "eval/hhh/sft"
    command: tuple[str, ...]  # ("rg",) or ("rm", "train") or ("eval", "hhh")
    flags: dict[str, Any]  # every flag, the pipeline's wiring included
    user_keys: tuple[str, ...]  # the flags the user wrote (checked against the stage's options)
    output_dir: Path
    product: Path  # the file or folder that exists once the step has finished
    owned: tuple[Path, ...] = ()  # what to delete when the step starts again; default: output_dir
    launcher: tuple[str, ...] = ()

    @property
    def marker(self) -> Path:
        suffix = "" if not self.owned else "-" + self.name.split("/")[-1]
        return self.output_dir / f"{MARKER_PREFIX}{suffix}.json"

    @property
    def argv(self) -> list[str]:
        return [*self.command[1:], *settings_to_argv(self.flags)]

    def command_line(self) -> str:
        prefix = [*self.launcher, "-m", "almost"] if self.launcher else ["almost"]
        # Printed and kept in markers: secrets (--hub_token ...) never appear in either.
        return shlex.join(redact_argv([*prefix, self.command[0], *self.argv]))


def load_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AlmostError(f"pipeline config not found: {path}")
    config = read_yaml_mapping(path, "pipeline config", "stage names to their settings")
    unknown = [k for k in config if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise AlmostError(f"{path}: unknown stage {unknown[0]!r}; the stages are {', '.join(STAGES)} (plus output_dir, shared, in_process)")
    for key in (*STAGES, "shared"):
        if key in config and not isinstance(config[key] or {}, dict):
            raise AlmostError(f"{path}: {key} must be a mapping of option names to values, got {type(config[key]).__name__}")
    if config.get("output_dir") is not None and not isinstance(config["output_dir"], str):
        raise AlmostError(f"{path}: output_dir must be a folder name (text), got {type(config['output_dir']).__name__}")
    if not isinstance(config.get("in_process", False), bool):
        raise AlmostError(f"{path}: in_process must be true or false")
    return config


def as_asset(value: Any) -> Any:
    """A relative path that is not a local file but names a built-in asset (``basic_prompt.txt``,
    ``eval/hhh_sample.jsonl``) → the asset's path, so configs can use the shipped files anywhere."""
    if isinstance(value, list):
        return [as_asset(v) for v in value]
    if isinstance(value, str) and value and not Path(value).is_absolute() and not Path(value).exists() and (ASSETS / value).is_file():
        return str(ASSETS / value)
    return value


def is_model_key(key: str) -> bool:
    return key.endswith("model_name_or_path")


class Planner:
    """Turns the config into steps with their folders and the paths between them filled in."""

    def __init__(self, config: dict, run_dir: Path, config_path: Path):
        self.config = config
        self.run = run_dir
        self.where = str(config_path)
        self.shared = dict(config.get("shared") or {})
        self.steps: list[Step] = []

    def section(self, stage: str) -> dict:
        return dict(self.config.get(stage) or {})

    def mapping(self, value: Any, where: str) -> dict:
        """A sub-section that must be a mapping (rm.train, eval.hhh, ...); empty when left blank."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise AlmostError(f"{self.where}: {where} must be a mapping of option names to values, got {type(value).__name__}")
        return dict(value)

    def inside_run(self, path: Path, what: str) -> Path:
        """Every folder the pipeline creates, empties or deletes is inside the run directory."""
        resolved = path.resolve()
        if resolved == self.run or self.run not in resolved.parents:
            raise AlmostError(f"{self.where}: {what} would be {path}, outside the run directory {self.run}")
        return path

    def add(
        self,
        stage: str,
        name: str,
        command: tuple[str, ...],
        user: dict,
        wired: dict,
        output_dir: Path,
        product: str | None = None,
        owned: Iterable[Path] = (),
    ) -> Step:
        """A step of ``almost <command>``; its product is the command's declared one unless given (rg)."""
        user = dict(user)
        launcher = user.pop("launcher", None) or ()
        if isinstance(launcher, str):
            try:
                launcher = tuple(shlex.split(launcher))  # quoted paths with spaces stay one argument
            except ValueError as e:
                raise AlmostError(f"{self.where}: {name}: launcher {launcher!r}: {e}") from None
        if not isinstance(launcher, (list, tuple)) or not all(isinstance(x, (str, int, float)) for x in launcher):
            raise AlmostError(f"{self.where}: {name}: launcher must be a command line (text) or a list of its words")
        launcher = tuple(str(x) for x in launcher)
        for path in (output_dir, *owned):
            self.inside_run(path, f"{name}'s output")
        stage_cmd = stage_command(command)
        options = stage_cmd.options()
        product = product or stage_cmd.outputs.product_file
        flags = {k: as_asset(v) if k.endswith("path") and not is_model_key(k) else v for k, v in user.items()}
        for key, value in self.shared.items():
            if key in options and key not in flags:
                flags[key] = value
        for key, value in wired.items():
            flags.setdefault(key, value)  # the user's own value wins over the pipeline's wiring
        flags["output_dir"] = str(output_dir)
        # Before any check reads them (the rubric's names, the models): a number or a mapping where
        # the stage takes a list would otherwise be iterated, or turned into a name by str().
        check_value_types(flags, stage_cmd.config_types(), f"{self.where}: {name}: ")
        step = Step(stage, name, command, flags, tuple(user), output_dir, output_dir / product, tuple(owned), tuple(launcher))
        self.steps.append(step)
        return step

    def plan(self) -> list[Step]:
        run, c = self.run, self.config
        models = {}  # label → model for the evaluations: base, sft, rl
        prompts = run / "pg" / PG.product_file if "pg" in c else None
        if "pg" in c:
            self.add("pg", "pg", ("pg",), self.section("pg"), {}, run / "pg")
        if "rg" in c:
            self.plan_rg(prompts)
        if "cs" in c:
            cs = self.section("cs")
            wired = {"input_dir": str(run / "rg")} if "rg" in c else {}
            self.add("cs", "cs", ("cs",), cs, wired, run / "cs")
        reward_model = None
        if "rm" in c:
            reward_model = self.plan_rm()
        if "rmsp" in c:
            wired = {"prompts_path": prompts, "reward_model_name_or_path": reward_model}
            self.add("rmsp", "rmsp", ("rmsp",), self.section("rmsp"), _present(wired), run / "rmsp")
        if "sft" in c:
            wired = {"data_path": run / "rmsp" / RMSP.product_file} if "rmsp" in c else {}
            step = self.add("sft", "sft", ("sft",), self.section("sft"), _present(wired), run / "sft")
            models["base"] = step.flags.get("model_name_or_path") or DEFAULT_MODEL
            models["sft"] = str(run / "sft")
        if "rl" in c:
            wired = {"prompts_path": prompts, "reward_model_name_or_path": reward_model}
            if "sft" in c:
                wired["model_name_or_path"] = str(run / "sft")
            step = self.add("rl", "rl", ("rl",), self.section("rl"), _present(wired), run / "rl")
            models.setdefault("base", step.flags.get("model_name_or_path"))
            models["rl"] = str(run / "rl")
        if "eval" in c:
            self.plan_eval(models, reward_model)
        return self.steps

    def plan_rg(self, prompts: Path | None) -> None:
        from ..feedback.rg import configurations

        rg = self.section("rg")
        entries = rg.pop("configurations", None)
        if not isinstance(entries, list) or not entries or not all(isinstance(x, dict) for x in entries):
            raise AlmostError(
                f"{self.where}: rg.configurations must be a list of mappings (model_name_or_path, prompt_file_path, n_shot, ...)"
            )
        wired = {"prompts_path": str(prompts)} if prompts else {}
        out = self.run / "rg"
        self.configuration_names: list[str] = []
        for i, entry in enumerate(entries, 1):
            user = {**rg, **entry}
            flags = {k: as_asset(v) if k.endswith("path") and not is_model_key(k) else v for k, v in user.items() if k != "launcher"}
            try:
                (parsed,) = stage_command(("rg",)).parse({**wired, **flags, "output_dir": str(out)})
                names = [c.name for c in configurations(parsed)]
            except AlmostError as e:
                raise AlmostError(f"{self.where}: rg configuration {i}: {e}") from None
            if len(names) != 1:
                raise AlmostError(
                    f"{self.where}: rg configuration {i} makes {len(names)} configurations ({', '.join(names)}); list each one separately"
                )
            name = names[0]
            if name in self.configuration_names:
                raise AlmostError(f"{self.where}: rg configuration {name!r} is listed twice")
            self.configuration_names.append(name)
            owned = (
                out / f"{name}.jsonl",
                out / f"{name}.jsonl.settings.json",
                out / f"{name}.jsonl.partial",
                out / f"{name}.jsonl.partial.json",
            )
            self.add("rg", f"rg/{name}", ("rg",), user, wired, out, f"{name}.jsonl", owned=owned)

    def plan_rm(self) -> str:
        rm = self.section("rm")
        unknown = [k for k in rm if k not in ("train", "eval")]
        if unknown:
            raise AlmostError(f"{self.where}: rm takes 'train' and 'eval' sections, not {unknown[0]!r}")
        wired = {"data_path": str(self.run / "cs" / CS.product_file)} if "cs" in self.config else {}
        self.add("rm", "rm/train", ("rm", "train"), self.mapping(rm.get("train"), "rm.train"), wired, self.run / "rm")
        if "eval" in rm:
            # Human preference data (rubric agreement on held-out synthetic pairs is in rm/metrics.json).
            evaluation = self.mapping(rm["eval"], "rm.eval")
            wired = {"model_name_or_path": str(self.run / "rm")}
            self.add("rm", "rm/eval", ("rm", "eval"), evaluation, wired, self.run / "rm_eval")
        return str(self.run / "rm")

    def plan_eval(self, models: dict[str, str], reward_model: str | None) -> None:
        evaluation = self.section("eval")
        models = {**models, **self.mapping(evaluation.pop("models", None), "eval.models")}
        models = {label: m for label, m in models.items() if m}
        for label, model in models.items():
            if not isinstance(label, str) or not LABEL.match(label):
                raise AlmostError(
                    f"{self.where}: eval.models label {label!r} must be a plain name (letters, digits, . _ -): it names a folder of the run"
                )
            if not isinstance(model, str):
                raise AlmostError(f"{self.where}: eval.models.{label} must be a model name or path (text), got {type(model).__name__}")
        if not models:
            raise AlmostError(f"{self.where}: eval has no models: add eval.models (label: model) or an sft/rl stage")
        unknown = [k for k in evaluation if k not in EVALUATIONS]
        if unknown:
            raise AlmostError(
                f"{self.where}: unknown evaluation {unknown[0]!r} under eval; choose from {', '.join(EVALUATIONS)} (and models)"
            )
        for kind, settings in evaluation.items():
            settings = self.mapping(settings, f"eval.{kind}")
            if kind == "pairwise":
                baseline = settings.pop("baseline", "base")
                if not isinstance(baseline, str):
                    raise AlmostError(f"{self.where}: eval.pairwise.baseline must be a model label (text), got {type(baseline).__name__}")
                if baseline not in models:
                    raise AlmostError(f"{self.where}: eval.pairwise.baseline {baseline!r} is not one of the models ({', '.join(models)})")
                judges = self.pairwise_judges(settings, reward_model)
                for label, model in models.items():
                    if label == baseline:
                        continue
                    for by, judge in judges.items():
                        # One answer cache for every pairing and judge: each model (the baseline
                        # included) answers each question once. The steps run one after another, and
                        # `eval pairwise` locks the folder besides.
                        wired = {
                            "model_name_or_path": model,
                            "baseline_model_name_or_path": models[baseline],
                            "answers_dir": str(self.run / "eval" / kind / PAIRWISE_ANSWERS),
                        }
                        if judge:
                            wired["judge"] = judge
                        name = f"{label}-vs-{baseline}" + (f"-by-{by}" if by else "")
                        self.add("eval", f"eval/{kind}/{name}", ("eval", kind), settings, wired, self.run / "eval" / kind / name)
            else:
                for label, model in models.items():
                    wired = {"model_name_or_path": model}
                    self.add("eval", f"eval/{kind}/{label}", ("eval", kind), settings, wired, self.run / "eval" / kind / label)

    def pairwise_judges(self, settings: dict, reward_model: str | None) -> dict[str, str | None]:
        """``eval.pairwise.judges`` (label: judge spec, ``rm`` = the run's own RM) → a step per judge,
        in folders ``<model>-vs-<baseline>-by-<label>``. Without it, one step: the config's ``judge``,
        else the run's RM (``{"": judge}``, the folder keeps its plain name)."""
        judges = settings.pop("judges", None)
        if judges is None:
            return {"": None if "judge" in settings or not reward_model else f"rm:{reward_model}"}
        if "judge" in settings:
            raise AlmostError(f"{self.where}: eval.pairwise takes judge or judges, not both")
        if not isinstance(judges, dict) or not judges:
            raise AlmostError(f"{self.where}: eval.pairwise.judges must map labels to judges, e.g. {{rm: rm, lm: 'llm:smollm2-135m'}}")
        found = {}
        for by, judge in judges.items():
            if not isinstance(by, str) or not LABEL.match(by):
                raise AlmostError(
                    f"{self.where}: eval.pairwise.judges label {by!r} must be a plain name (letters, digits, . _ -): it names a "
                    "folder of the run"
                )
            if judge == "rm":
                if not reward_model:
                    raise AlmostError(
                        f"{self.where}: eval.pairwise.judges.{by}: rm means the run's own reward model, but the config has no rm stage"
                    )
                judge = f"rm:{reward_model}"
            if not isinstance(judge, str):
                raise AlmostError(f"{self.where}: eval.pairwise.judges.{by} must be rm, rm:PATH, llm:MODEL or openai:URL")
            found[by] = judge
        return found


def _present(wired: dict) -> dict:
    return {k: str(v) for k, v in wired.items() if v is not None}
