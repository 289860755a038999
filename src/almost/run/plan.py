"""Planning a pipeline run: the YAML config read and checked for shape, and turned into ``Step``s.

A step is one stage command (``almost rg ...``) with every setting it takes, the wiring between stages
included, and its own folder under the run directory. Both come from the stages' records
(``almost.stages``): a stage is planned when its section is in the config, in the records' order; each
of its inputs whose producing stage is planned too is filled in with that stage's output (the RM
trains on CS's comparisons, SFT on RMSP's demonstrations ...), unless the user set it; its folder
and product are the ones it declares. RG plans a step per configuration, and each evaluation a step
per model it evaluates.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import stages
from ..config import check_value_types, option_default, option_names, parse_settings, settings_to_argv
from ..contracts import PAIRWISE_ANSWERS, STEP_MARKER_PREFIX
from ..errors import AlmostError
from ..feedback.rg import configurations
from ..readers import read_yaml_mapping
from ..redaction import redact_argv
from ..resumable import output_files
from ..shipped import asset_or_path
from ..stages import Stage

SETTINGS_KEYS = ("output_dir", "shared", "in_process")  # the config's keys that are not stage sections
# An eval model label becomes a folder name: one plain name, never a path.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Step:
    """One command of the pipeline: ``almost <command> <flags>`` writing into ``output_dir``."""

    stage: Stage
    name: str  # unique, e.g. "rg/smollm2-135m-faithful-3shot", "rm/train", "eval/hhh/sft"
    flags: dict[str, Any]  # every flag, the pipeline's wiring included
    user_keys: tuple[str, ...]  # the flags the user wrote (checked against the stage's options)
    output_dir: Path
    product: Path  # the file or folder that exists once the step has finished
    owned: tuple[Path, ...] = ()  # what to delete when the step starts again; default: output_dir
    launcher: tuple[str, ...] = ()
    label: str | None = None  # what a step among several of its stage is about: rg's configuration, an evaluation's model

    @property
    def command(self) -> tuple[str, ...]:
        return self.stage.command

    @property
    def marker(self) -> Path:
        suffix = "" if not self.owned else f"-{self.label}"
        return self.output_dir / f"{STEP_MARKER_PREFIX}{suffix}.json"

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
    sections = stages.sections()
    unknown = [k for k in config if k not in (*SETTINGS_KEYS, *sections)]
    if unknown:
        raise AlmostError(
            f"{path}: unknown stage {unknown[0]!r}; the stages are {', '.join(sections)} (plus output_dir, shared, in_process)"
        )
    for key in (*sections, "shared"):
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
    if isinstance(value, str) and value and asset_or_path(value) != Path(value):
        return str(asset_or_path(value))
    return value


def options(stage: Stage) -> frozenset[str]:
    """The options ``almost <stage>`` takes (its config dataclasses' fields)."""
    return option_names(stage.config_types())


def parse(stage: Stage, settings: dict) -> tuple:
    """The settings as the stage's configs, checked as its command line would be."""
    return parse_settings(stage.prog, stage.config_types(), settings)


class Planner:
    """Turns the config into steps with their folders and the paths between them filled in."""

    def __init__(self, config: dict, run_dir: Path, config_path: Path):
        self.config = config
        self.run = run_dir
        self.where = str(config_path)
        self.shared = dict(config.get("shared") or {})
        self.steps: list[Step] = []
        self.configuration_names: list[str] = []  # rg's, in order
        self.models: dict[str, str] | None = None  # the evaluated models, once the policies are planned

    def mapping(self, value: Any, where: str) -> dict:
        """A section or sub-section that must be a mapping (rm.train, eval.hhh, ...); empty when left blank."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise AlmostError(f"{self.where}: {where} must be a mapping of option names to values, got {type(value).__name__}")
        return dict(value)

    def settings(self, stage: Stage) -> dict | None:
        """The user's settings of ``stage``: its section, or for a command of two words its part of the
        section (``rm.train``); None when the config does not plan it."""
        if stage.section not in self.config:
            return None
        section = self.mapping(self.config[stage.section], stage.section)
        if stage.subsection is None:
            return section
        if stage.subsection not in section and not stage.with_section:
            return None
        return self.mapping(section.get(stage.subsection), f"{stage.section}.{stage.subsection}")

    def inside_run(self, path: Path, what: str) -> Path:
        """Every folder the pipeline creates, empties or deletes is inside the run directory."""
        resolved = path.resolve()
        if resolved == self.run or self.run not in resolved.parents:
            raise AlmostError(f"{self.where}: {what} would be {path}, outside the run directory {self.run}")
        return path

    def wiring(self, stage: Stage) -> dict[str, str]:
        """Each input of ``stage`` whose producing stage the config plans, as that stage's output."""
        wired = {}
        for option, source in stage.inputs.items():
            if source.stage is None or self.settings(source.stage) is None:
                continue
            path = self.run / source.stage.folder
            if source.role is not None:
                path = path / source.stage.outputs.files[source.role]
            wired[option] = source.wired(str(path))
        return wired

    def add(
        self,
        stage: Stage,
        user: dict,
        wired: dict,
        output_dir: Path,
        label: str | None = None,
        product: str | None = None,
        owned: Iterable[Path] = (),
    ) -> Step:
        """A step of ``almost <stage>``; its product is the stage's declared one unless given (rg)."""
        name = f"{stage.folder}/{label}" if label else stage.name.replace(" ", "/")
        user = dict(user)
        launcher = self.launcher(name, user.pop("launcher", None) or ())
        for path in (output_dir, *owned):
            self.inside_run(path, f"{name}'s output")
        file_options = {option for option, source in stage.inputs.items() if not source.model}
        flags = {k: as_asset(v) if k in file_options else v for k, v in user.items()}
        stage_options = options(stage)
        for key, value in self.shared.items():
            if key in stage_options and key not in flags:
                flags[key] = value
        for key, value in wired.items():
            flags.setdefault(key, value)  # the user's own value wins over the pipeline's wiring
        flags["output_dir"] = str(output_dir)
        # Before any check reads them (the rubric's names, the models): a number or a mapping where
        # the stage takes a list would otherwise be iterated, or turned into a name by str().
        check_value_types(flags, stage.config_types(), f"{self.where}: {name}: ")
        product_path = output_dir / (product or stage.outputs.product_file)
        step = Step(stage, name, flags, tuple(user), output_dir, product_path, tuple(owned), launcher, label)
        self.steps.append(step)
        return step

    def launcher(self, name: str, launcher: Any) -> tuple[str, ...]:
        if isinstance(launcher, str):
            try:
                launcher = tuple(shlex.split(launcher))  # quoted paths with spaces stay one argument
            except ValueError as e:
                raise AlmostError(f"{self.where}: {name}: launcher {launcher!r}: {e}") from None
        if not isinstance(launcher, (list, tuple)) or not all(isinstance(x, (str, int, float)) for x in launcher):
            raise AlmostError(f"{self.where}: {name}: launcher must be a command line (text) or a list of its words")
        return tuple(str(x) for x in launcher)

    def plan(self) -> list[Step]:
        self.check_subsections()
        for stage in stages.pipeline_stages():
            settings = self.settings(stage)
            if settings is None:
                continue
            if stage.shared_call:
                self.plan_configurations(stage, settings)
            elif stage in stages.evaluations():
                self.plan_evaluation(stage, settings)
            else:
                self.add(stage, settings, self.wiring(stage), self.run / stage.folder)
        if "eval" in self.config:
            self.evaluated_models()  # checked even when the section names no evaluation
        return self.steps

    def check_subsections(self) -> None:
        """The sections of commands of two words (rm, eval) hold only their parts (and eval its models)."""
        if "rm" in self.config:
            parts = [s.subsection for s in stages.pipeline_stages() if s.section == "rm"]
            unknown = [k for k in self.mapping(self.config["rm"], "rm") if k not in parts]
            if unknown:
                raise AlmostError(f"{self.where}: rm takes {' and '.join(map(repr, parts))} sections, not {unknown[0]!r}")
        if "eval" in self.config:
            kinds = [s.subsection for s in stages.evaluations()]
            unknown = [k for k in self.mapping(self.config["eval"], "eval") if k not in (*kinds, "models")]
            if unknown:
                raise AlmostError(
                    f"{self.where}: unknown evaluation {unknown[0]!r} under eval; choose from {', '.join(kinds)} (and models)"
                )

    def plan_configurations(self, stage: Stage, settings: dict) -> None:
        """RG: a step per entry of ``configurations`` (each makes one configuration, its own file)."""
        entries = settings.pop("configurations", None)
        if not isinstance(entries, list) or not entries or not all(isinstance(x, dict) for x in entries):
            raise AlmostError(
                f"{self.where}: rg.configurations must be a list of mappings (model_name_or_path, prompt_file_path, n_shot, ...)"
            )
        wired = self.wiring(stage)
        out = self.run / stage.folder
        file_options = {option for option, source in stage.inputs.items() if not source.model}
        for i, entry in enumerate(entries, 1):
            user = {**settings, **entry}
            flags = {k: as_asset(v) if k in file_options else v for k, v in user.items() if k != "launcher"}
            try:
                (parsed,) = parse(stage, {**wired, **flags, "output_dir": str(out)})
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
            product = stage.outputs.file(stage.outputs.product, configuration=name)
            self.add(stage, user, wired, out, name, product, owned=output_files(out / product))

    def evaluated_models(self) -> dict[str, str]:
        """Label → model for the evaluations: "base" (what the first policy started from) and each policy
        the config trains (``stages.POLICIES``, by folder), then ``eval.models``, checked."""
        if self.models is not None:
            return self.models
        models: dict[str, Any] = {}
        for step in self.steps:
            if step.stage in stages.POLICIES:
                start = step.flags.get("model_name_or_path") or option_default(step.stage.config_types(), "model_name_or_path")
                models.setdefault("base", start)
                models[step.stage.folder] = str(step.output_dir)
        evaluation = self.mapping(self.config.get("eval"), "eval")
        models = {**models, **self.mapping(evaluation.get("models"), "eval.models")}
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
        self.models = models
        return models

    def plan_evaluation(self, stage: Stage, settings: dict) -> None:
        """A step per evaluated model, in ``eval/<kind>/<label>``; a comparison with a baseline
        (pairwise) a step per model and judge, ``<model>-vs-<baseline>[-by-<judge>]``, and one per
        pair of rival policies the run trains (``stages.RIVAL_POLICIES``: ``dpo-vs-rl``) and judge."""
        models = self.evaluated_models()
        folder = self.run / stage.folder
        if "baseline_model_name_or_path" not in stage.inputs:
            for label, model in models.items():
                self.add(stage, settings, {"model_name_or_path": model}, folder / label, label)
            return
        baseline = settings.pop("baseline", "base")
        if not isinstance(baseline, str):
            raise AlmostError(f"{self.where}: eval.pairwise.baseline must be a model label (text), got {type(baseline).__name__}")
        if baseline not in models:
            raise AlmostError(f"{self.where}: eval.pairwise.baseline {baseline!r} is not one of the models ({', '.join(models)})")
        judges = self.pairwise_judges(stage, settings)
        pairings = [(label, baseline) for label in models if label != baseline]
        # Rival policies trained in the same run are also compared with each other, unless one of them is the baseline.
        pairings += [
            (a.folder, b.folder)
            for a, b in stages.RIVAL_POLICIES
            if {a.folder, b.folder} <= set(models) and baseline not in (a.folder, b.folder)
        ]
        for label, against in pairings:
            for by, (judge, reads) in judges.items():
                if reads is not None and label not in reads:
                    continue
                # One answer cache for every pairing and judge: each model (the baseline included)
                # answers each question once. The steps run one after another, and `eval pairwise`
                # locks the folder besides.
                wired = {
                    "model_name_or_path": models[label],
                    "baseline_model_name_or_path": models[against],
                    "answers_dir": str(folder / PAIRWISE_ANSWERS),
                    **self.wiring(stage),
                }
                if judge:
                    wired["judge"] = judge
                name = f"{label}-vs-{against}" + (f"-by-{by}" if by else "")
                self.add(stage, settings, wired, folder / name, name)

    def pairwise_judges(self, stage: Stage, settings: dict) -> dict[str, tuple[str | None, list[str] | None]]:
        """``eval.pairwise.judges`` (label: judge spec, ``rm`` = the run's own RM) → label: (judge, the
        model labels it reads, None = all), a step per judge and pairing, in folders
        ``<model>-vs-<baseline>-by-<label>``. A judge may be ``{judge: SPEC, models: [label, ...]}``:
        it then reads only the pairings of those models (an LM judge can cost more than the run).
        Without ``judges``, one step with the config's ``judge``, else the run's RM (``{"": (None,
        None)}``, the folder keeps its plain name)."""
        judges = settings.pop("judges", None)
        if judges is None:
            return {"": (None, None)}
        if "judge" in settings:
            raise AlmostError(f"{self.where}: eval.pairwise takes judge or judges, not both")
        if not isinstance(judges, dict) or not judges:
            raise AlmostError(f"{self.where}: eval.pairwise.judges must map labels to judges, e.g. {{rm: rm, lm: 'llm:smollm2-135m'}}")
        own_rm = self.wiring(stage).get("judge")
        found = {}
        for by, judge in judges.items():
            if not isinstance(by, str) or not LABEL.match(by):
                raise AlmostError(
                    f"{self.where}: eval.pairwise.judges label {by!r} must be a plain name (letters, digits, . _ -): it names a "
                    "folder of the run"
                )
            reads = None
            if isinstance(judge, dict):
                judge, reads = self.judge_reads(by, judge)
            if judge == "rm":
                if not own_rm:
                    raise AlmostError(
                        f"{self.where}: eval.pairwise.judges.{by}: rm means the run's own reward model, but the config has no rm stage"
                    )
                judge = own_rm
            if not isinstance(judge, str):
                raise AlmostError(f"{self.where}: eval.pairwise.judges.{by} must be rm, rm:PATH, llm:MODEL or openai:URL")
            found[by] = (judge, reads)
        return found

    def judge_reads(self, by: str, entry: dict) -> tuple[object, list[str]]:
        """``{judge: SPEC, models: [label, ...]}`` → (SPEC, the labels), each an evaluated model."""
        where = f"{self.where}: eval.pairwise.judges.{by}"
        if set(entry) != {"judge", "models"}:
            raise AlmostError(f"{where} must be a judge, or {{judge: SPEC, models: [label, ...]}}; got keys {', '.join(map(str, entry))}")
        reads, models = entry["models"], self.evaluated_models()
        if not isinstance(reads, list) or not reads or not all(isinstance(label, str) and label in models for label in reads):
            raise AlmostError(f"{where}.models must list evaluated models ({', '.join(models)}), got {reads!r}")
        return entry["judge"], reads
