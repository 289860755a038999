"""``almost pipeline CONFIG.yaml --output_dir RUN``: every stage of the method from one YAML file.

The config names the stages to run (pg, rg, cs, rm, rmsp, sft, rl, eval) and, for each, the flags
its command takes (``key: value`` → ``--key value``). The pipeline fills in the paths between the
stages (the RM trains on CS's comparisons, SFT on RMSP's demonstrations, RL starts from the SFT
model ...), gives every step its own folder under the run directory, and runs the steps in order
through the stages' own ``main(argv)``.

A step records a marker (``.almost-step*.json``) in its folder holding a fingerprint of its command
line and of the input files it reads (by content; models by their config, tokenizer and weights;
``cache_dir`` and other ``NOT_RESULT_FLAGS`` left out). A step whose marker says "done" with the same fingerprint is
skipped; a step that started but did not finish is run again with the same flags and resumes by
itself (every stage is resumable); a step whose fingerprint changed starts again from an empty
folder, and so do the later steps that read its outputs, because their inputs changed.

Each step runs in a child process (``python -m almost ...``, or the stage's ``launcher`` such as
``accelerate launch``): vLLM must start under ``__main__`` and spawns workers, a training stage's
memory is returned to the system when it ends, and a crash in one stage cannot corrupt the
pipeline's records. ``in_process: true`` runs the steps inside this process instead (faster to
start, used by the tests; not with the vllm backend or a launcher).

The whole config is checked before any step runs: stage names, every key of every stage (by
parsing the step's real command line with the stage's own parser), models, and the rubric.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..cli import COMMANDS
from ..config import ParsedOnly, ParseProbe, parse_only
from ..engines import AUTO, resolve_backend
from ..feedback.demos import ASSETS
from ..io import (
    LOCK_NAME,
    AlmostError,
    digest_file,
    digest_model,
    fingerprint,
    held_output_dirs,
    lock_output_dir,
    read_json,
    read_yaml_mapping,
    redact_argv,
    release_output_dirs,
    write_json_atomic,
)
from ..models import DEFAULT_MODEL, resolve_model, unfinished_training
from .report import EVAL_KINDS, OneLineArgumentParser, step_figures, write_report

STAGES = ("pg", "rg", "cs", "rm", "rmsp", "sft", "rl", "eval")
TOP_LEVEL_KEYS = ("output_dir", "shared", "in_process", *STAGES)
MARKER_PREFIX = ".almost-step"
# Flags that do not decide a step's result: left out of its fingerprint. The cache changes by itself
# (downloads, the embedded model's conversion); a model found through it is fingerprinted by content.
# The pairwise answer cache is keyed by model content, sampling settings and question: the folder that
# judge steps share grows as they run, and must not make the earlier ones look changed.
NOT_RESULT_FLAGS = frozenset({"cache_dir", "answers_dir"})
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
        return [*self.command[1:], *flags_to_argv(self.flags)]

    def command_line(self) -> str:
        prefix = [*self.launcher, "-m", "almost"] if self.launcher else ["almost"]
        # Printed and kept in markers: secrets (--hub_token ...) never appear in either.
        return shlex.join(redact_argv([*prefix, self.command[0], *self.argv]))


def flags_to_argv(flags: dict[str, Any]) -> list[str]:
    """``{key: value}`` → ``--key value`` as the stages' HfArgumentParser reads them."""
    argv: list[str] = []
    for key, value in flags.items():
        if value is None:
            continue  # YAML null: keep the stage's default
        if isinstance(value, bool):
            argv += [f"--{key}", "true" if value else "false"]
        elif isinstance(value, (list, tuple)):
            if value:
                argv += [f"--{key}", *(str(v) for v in value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


# ----------------------------------------------------------------------------------------------
# Reading the config and planning the steps


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


class StageOptions:
    """Which options each stage command takes, read from the stage's own parser (cached)."""

    def __init__(self):
        self._options: dict[tuple[str, ...], frozenset[str]] = {}

    def __call__(self, command: tuple[str, ...]) -> frozenset[str]:
        if command not in self._options:
            probe = probe_command(command, [], allow_errors=True)
            actions = probe.parser._option_string_actions  # type: ignore[union-attr]
            self._options[command] = frozenset(o.lstrip("-").replace("-", "_") for o in actions)
        return self._options[command]


def probe_command(command: tuple[str, ...], argv: list[str], allow_errors: bool = False) -> ParseProbe:
    """Parse ``almost <command> <argv>`` with the stage's own parser, without running it."""
    module = importlib.import_module(COMMANDS[command[0]][0])
    with parse_only() as probe:
        try:
            module.main([*command[1:], *argv])
        except ParsedOnly:
            pass
        except AlmostError:
            if not allow_errors or probe.parser is None:
                raise
    if probe.parser is None:
        raise AlmostError(f"almost {' '.join(command)} does not read its options with almost.config.parse")
    return probe


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
        self.options = StageOptions()
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

    def add(self, stage: str, name: str, command: tuple[str, ...], user: dict, wired: dict, output_dir: Path, product: str, owned: Iterable[Path] = ()) -> Step:
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
        options = self.options(command)
        flags = {k: as_asset(v) if k.endswith("path") and not is_model_key(k) else v for k, v in user.items()}
        for key, value in self.shared.items():
            if key in options and key not in flags:
                flags[key] = value
        for key, value in wired.items():
            flags.setdefault(key, value)  # the user's own value wins over the pipeline's wiring
        flags["output_dir"] = str(output_dir)
        step = Step(stage, name, command, flags, tuple(user), output_dir, output_dir / product, tuple(owned), tuple(launcher))
        self.steps.append(step)
        return step

    def plan(self) -> list[Step]:
        run, c = self.run, self.config
        models = {}  # label → model for the evaluations: base, sft, rl
        prompts = run / "pg" / "prompts.txt" if "pg" in c else None
        if "pg" in c:
            self.add("pg", "pg", ("pg",), self.section("pg"), {}, run / "pg", "prompts.txt")
        if "rg" in c:
            self.plan_rg(prompts)
        if "cs" in c:
            cs = self.section("cs")
            wired = {"input_dir": str(run / "rg")} if "rg" in c else {}
            self.add("cs", "cs", ("cs",), cs, wired, run / "cs", "comparison.jsonl")
        reward_model = None
        if "rm" in c:
            reward_model = self.plan_rm()
        if "rmsp" in c:
            wired = {"prompts_path": prompts, "reward_model_name_or_path": reward_model}
            self.add("rmsp", "rmsp", ("rmsp",), self.section("rmsp"), _present(wired), run / "rmsp", "demonstrations.jsonl")
        if "sft" in c:
            wired = {"data_path": run / "rmsp" / "demonstrations.jsonl"} if "rmsp" in c else {}
            step = self.add("sft", "sft", ("sft",), self.section("sft"), _present(wired), run / "sft", "config.json")
            models["base"] = step.flags.get("model_name_or_path") or DEFAULT_MODEL
            models["sft"] = str(run / "sft")
        if "rl" in c:
            wired = {"prompts_path": prompts, "reward_model_name_or_path": reward_model}
            if "sft" in c:
                wired["model_name_or_path"] = str(run / "sft")
            step = self.add("rl", "rl", ("rl",), self.section("rl"), _present(wired), run / "rl", "config.json")
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
            raise AlmostError(f"{self.where}: rg.configurations must be a list of mappings (model_name_or_path, prompt_file_path, n_shot, ...)")
        wired = {"prompts_path": str(prompts)} if prompts else {}
        out = self.run / "rg"
        self.configuration_names: list[str] = []
        for i, entry in enumerate(entries, 1):
            user = {**rg, **entry}
            flags = {k: as_asset(v) if k.endswith("path") and not is_model_key(k) else v for k, v in user.items() if k != "launcher"}
            try:
                probe = probe_command(("rg",), flags_to_argv({**wired, **flags, "output_dir": str(out)}))
                names = [c.name for c in configurations(probe.parsed[0])]
            except AlmostError as e:
                raise AlmostError(f"{self.where}: rg configuration {i}: {e}") from None
            if len(names) != 1:
                raise AlmostError(f"{self.where}: rg configuration {i} makes {len(names)} configurations ({', '.join(names)}); list each one separately")
            name = names[0]
            if name in self.configuration_names:
                raise AlmostError(f"{self.where}: rg configuration {name!r} is listed twice")
            self.configuration_names.append(name)
            owned = (out / f"{name}.jsonl", out / f"{name}.jsonl.settings.json", out / f"{name}.jsonl.partial", out / f"{name}.jsonl.partial.json")
            self.add("rg", f"rg/{name}", ("rg",), user, wired, out, f"{name}.jsonl", owned=owned)

    def plan_rm(self) -> str:
        rm = self.section("rm")
        unknown = [k for k in rm if k not in ("train", "eval")]
        if unknown:
            raise AlmostError(f"{self.where}: rm takes 'train' and 'eval' sections, not {unknown[0]!r}")
        wired = {"data_path": str(self.run / "cs" / "comparison.jsonl")} if "cs" in self.config else {}
        self.add("rm", "rm/train", ("rm", "train"), self.mapping(rm.get("train"), "rm.train"), wired, self.run / "rm", "config.json")
        if "eval" in rm:
            # Human preference data (rubric agreement on held-out synthetic pairs is in rm/metrics.json).
            evaluation = self.mapping(rm["eval"], "rm.eval")
            wired = {"model_name_or_path": str(self.run / "rm")}
            self.add("rm", "rm/eval", ("rm", "eval"), evaluation, wired, self.run / "rm_eval", "metrics.json")
        return str(self.run / "rm")

    def plan_eval(self, models: dict[str, str], reward_model: str | None) -> None:
        evaluation = self.section("eval")
        models = {**models, **self.mapping(evaluation.pop("models", None), "eval.models")}
        models = {label: m for label, m in models.items() if m}
        for label, model in models.items():
            if not isinstance(label, str) or not LABEL.match(label):
                raise AlmostError(f"{self.where}: eval.models label {label!r} must be a plain name (letters, digits, . _ -): it names a folder of the run")
            if not isinstance(model, str):
                raise AlmostError(f"{self.where}: eval.models.{label} must be a model name or path (text), got {type(model).__name__}")
        if not models:
            raise AlmostError(f"{self.where}: eval has no models: add eval.models (label: model) or an sft/rl stage")
        unknown = [k for k in evaluation if k not in EVAL_KINDS]
        if unknown:
            raise AlmostError(f"{self.where}: unknown evaluation {unknown[0]!r} under eval; choose from {', '.join(EVAL_KINDS)} (and models)")
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
                        wired = {"model_name_or_path": model, "baseline_model_name_or_path": models[baseline]}
                        if judge:
                            wired["judge"] = judge
                        if by:
                            # One answer cache for every judge: each model answers each question once. The
                            # steps run one after another, and `eval pairwise` locks the folder besides.
                            wired["answers_dir"] = str(self.run / "eval" / kind / PAIRWISE_ANSWERS)
                        name = f"{label}-vs-{baseline}" + (f"-by-{by}" if by else "")
                        self.add("eval", f"eval/{kind}/{name}", ("eval", kind), settings, wired, self.run / "eval" / kind / name, "metrics.json")
            else:
                for label, model in models.items():
                    wired = {"model_name_or_path": model}
                    self.add("eval", f"eval/{kind}/{label}", ("eval", kind), settings, wired, self.run / "eval" / kind / label, "metrics.json")


    def pairwise_judges(self, settings: dict, reward_model: str | None) -> dict[str, str | None]:
        """``eval.pairwise.judges`` (label: judge spec, ``rm`` = the run's own RM) → a step per judge,
        in folders ``<model>-vs-<baseline>-by-<label>``, sharing the answers in ``eval/pairwise/answers``.
        Without it, one step: the config's ``judge``, else the run's RM (``{"": judge}``, the folder
        keeps its plain name and its answers)."""
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
                raise AlmostError(f"{self.where}: eval.pairwise.judges label {by!r} must be a plain name (letters, digits, . _ -): it names a folder of the run")
            if judge == "rm":
                if not reward_model:
                    raise AlmostError(f"{self.where}: eval.pairwise.judges.{by}: rm means the run's own reward model, but the config has no rm stage")
                judge = f"rm:{reward_model}"
            if not isinstance(judge, str):
                raise AlmostError(f"{self.where}: eval.pairwise.judges.{by} must be rm, rm:PATH, llm:MODEL or openai:URL")
            found[by] = judge
        return found


def _present(wired: dict) -> dict:
    return {k: str(v) for k, v in wired.items() if v is not None}


# ----------------------------------------------------------------------------------------------
# Checking the plan before anything runs


def served_elsewhere(flags: dict, key: str, value) -> bool:
    """A model another machine runs: a URL, or a name an OpenAI-compatible server serves (nothing to find here)."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return True
    return flags.get("backend") == "openai" and key in ("model_name_or_path", "user_model_name_or_path", "baseline_model_name_or_path")


def validate(steps: list[Step], planner: Planner, check_models: bool = True, parse_values: bool = True) -> None:
    """Every check that can fail before work starts; the first problem raises ``AlmostError``.

    ``check_models=False`` skips resolving models and ``parse_values=False`` skips parsing every
    step's full command line (which, e.g., refuses bf16 on a machine without a GPU): the tests
    check the shipped GPU configs' keys this way on a CPU machine.
    """
    where = planner.where
    for step in steps:
        options = planner.options(step.command)
        for key in step.user_keys:
            if key == "output_dir":
                raise AlmostError(f"{where}: {step.name}: output_dir is chosen by the pipeline (a folder per step under the run directory); remove it")
            if key != "launcher" and key not in options:
                raise AlmostError(f"{where}: {step.name}: unknown key {key!r} for `almost {' '.join(step.command)}` (see its --help)")
        uses_vllm = "backend" in options and resolve_backend(str(step.flags.get("backend", AUTO))) == "vllm"
        if planner.config.get("in_process") and (step.launcher or uses_vllm):
            raise AlmostError(f"{where}: {step.name}: in_process cannot run a launcher or the vllm backend (the default where vLLM is installed); remove in_process or set backend: hf")
    wired_models = {str(s.output_dir) for s in steps}
    checked: set[str] = set()
    for step in steps if check_models else ():
        for key, value in step.flags.items():
            if served_elsewhere(step.flags, key, value):
                continue
            if is_model_key(key) and isinstance(value, str) and value not in wired_models and value not in checked:
                try:
                    resolve_model(value, cache_dir=step.flags.get("cache_dir"))
                except AlmostError as e:
                    raise AlmostError(f"{where}: {step.name}: {key}: {e}") from None
                checked.add(value)
    cs = next((s for s in steps if s.stage == "cs"), None)
    if cs is not None and "rg" in planner.config:
        rubric = cs.flags.get("rubric")
        if not rubric:
            raise AlmostError(f"{where}: cs.rubric is missing: list the rg configurations best first")
        rubric = [rubric] if isinstance(rubric, str) else rubric
        for entry in rubric:
            for name in str(entry).split(","):
                if name.strip() not in planner.configuration_names:
                    raise AlmostError(
                        f"{where}: cs.rubric names {name.strip()!r}, which is not an rg configuration ({', '.join(planner.configuration_names)})"
                    )
    for step in steps if parse_values else ():
        try:
            probe_command(step.command, flags_to_argv(step.flags))
        except AlmostError as e:
            raise AlmostError(f"{where}: {step.name}: {e}") from None


# ----------------------------------------------------------------------------------------------
# Fingerprints and markers


def digest_path(path: Path) -> str:
    """Content hash of a file (sampled when large, see ``io.digest_file``); a model checkpoint's
    config, tokenizer and weights by content (``io.digest_model``: its logs, card and intermediate
    checkpoints do not count); names, sizes and mtimes of any other folder's files."""
    if path.is_file():
        return digest_file(path)
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return digest_model(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.name.startswith(MARKER_PREFIX) or file.name == LOCK_NAME:
            continue
        stat = file.stat()
        h.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def step_fingerprint(step: Step) -> str:
    """The step's command line plus a digest of every existing input path it names, both without the
    flags that do not decide the result (``NOT_RESULT_FLAGS``)."""
    inputs = {}
    own = step.output_dir.resolve()
    flags = {k: v for k, v in step.flags.items() if k not in NOT_RESULT_FLAGS}
    for value in flags.values():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(v, str) or not v or len(v) > 4096:
                continue
            if not Path(v).exists() and ":" in v:
                v = v.split(":", 1)[1]  # a path behind a scheme, e.g. --judge rm:PATH
            path = Path(v).expanduser()
            if not path.exists():
                continue
            resolved = path.resolve()
            if resolved == own or own in resolved.parents:
                continue
            inputs[v] = digest_path(path)
    argv = [*step.command[1:], *flags_to_argv(flags)]
    return fingerprint({"command": list(step.command), "argv": argv, "launcher": list(step.launcher), "inputs": inputs})


def read_marker(step: Step) -> dict:
    if not step.marker.exists():
        return {}
    try:
        return read_json(step.marker, "step marker")
    except AlmostError:
        return {}  # a damaged marker means we know nothing: the step runs again


def is_done(step: Step, marker: dict | None = None) -> bool:
    marker = read_marker(step) if marker is None else marker
    # A training step's folder also says itself whether its final model was saved in full.
    return marker.get("status") == "done" and step.product.exists() and unfinished_training(step.output_dir) is None


def clear_outputs(step: Step) -> None:
    for path in step.owned or (step.output_dir,):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    step.marker.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Running


def run_step(step: Step, in_process: bool) -> int:
    if in_process:
        module = importlib.import_module(COMMANDS[step.command[0]][0])
        locked = held_output_dirs()
        try:
            return int(module.main(step.argv) or 0)
        except AlmostError as e:
            sys.stderr.write(f"almost {step.command[0]}: error: {e}\n")
            return 2
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 1
        finally:
            release_output_dirs(keep=locked)  # the step's own folder, as its own process would
    prefix = [*step.launcher, "-m", "almost"] if step.launcher else [sys.executable, "-m", "almost"]
    sys.stdout.flush()
    parent = os.getpid()
    return subprocess.run([*prefix, step.command[0], *step.argv], preexec_fn=lambda: die_with_parent(parent)).returncode


def die_with_parent(parent: int) -> None:
    """In the child, before it starts: ask Linux to send it SIGTERM when the pipeline dies, however
    it dies (kill -9 included), so that no stage runs on orphaned. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the pipeline died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children: unlike wall time, it does not
    grow when other jobs share the machine, so it tells how long a step takes on an idle one."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Outcome:
    step: Step
    status: str  # ran | skipped | failed | not run
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# What an rg step's own configuration sets; steps equal in everything else share one `almost rg` call.
RG_CONFIGURATION_KEYS = ("prompt_file_path", "n_shot")


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def runs_with(first: Step, step: Step) -> bool:
    """Whether ``step`` can join ``first``'s call: rg configurations of one model and the same settings
    load the model (or start the vLLM engine) once for all of them."""
    def rest(s: Step) -> dict:
        return {k: v for k, v in s.flags.items() if k not in RG_CONFIGURATION_KEYS}

    return first.stage == step.stage == "rg" and first.launcher == step.launcher and rest(first) == rest(step)


def combined_step(group: list[Step]) -> Step:
    """One ``almost rg`` call for several configuration steps: the demonstration files and shot counts
    they use, and --select so that only their configurations are made (not the whole product)."""
    if len(group) == 1:
        return group[0]
    flags = dict(group[0].flags)
    for key in RG_CONFIGURATION_KEYS:
        flags[key] = list(dict.fromkeys(v for s in group for v in _as_list(s.flags.get(key))))
    flags["select"] = [s.name.split("/", 1)[1] for s in group]
    return replace(group[0], name=" + ".join(s.name for s in group), flags=flags)


def execute(steps: list[Step], first: str | None, in_process: bool) -> list[Outcome]:
    outcomes: list[Outcome] = []
    forced = False
    waiting: list[tuple[Step, str]] = []  # rg steps to run in one call once the next step cannot join them
    for step in steps:
        if waiting and not runs_with(waiting[0][0], step):
            if not run_together(waiting, in_process, outcomes):
                return outcomes
            waiting = []
        forced = forced or (first is not None and step.stage == first)
        if first is not None and not forced:
            if not is_done(step):
                raise AlmostError(f"{step.name} has not finished in this run directory; run without --from {first} first")
            outcomes.append(Outcome(step, "skipped", read_marker(step).get("seconds", 0.0)))
            continue
        fp = step_fingerprint(step)
        marker = read_marker(step)
        if not forced and marker.get("fingerprint") == fp and is_done(step, marker):
            print(f"almost pipeline: {step.name}: unchanged, skipped", flush=True)
            outcomes.append(Outcome(step, "skipped", marker.get("seconds", 0.0), {"cpu_seconds": marker.get("cpu_seconds")}))
            continue
        if marker and (forced or marker.get("fingerprint") != fp):
            print(f"almost pipeline: {step.name}: settings or inputs changed, starting it again", flush=True)
            clear_outputs(step)
        elif marker:
            print(f"almost pipeline: {step.name}: unfinished, resuming", flush=True)
        waiting.append((step, fp))
        if step.stage != "rg":
            if not run_together(waiting, in_process, outcomes):
                return outcomes
            waiting = []
    if waiting:
        run_together(waiting, in_process, outcomes)
    return outcomes


def run_together(group: list[tuple[Step, str]], in_process: bool, outcomes: list[Outcome]) -> bool:
    """Run one step, or several rg steps as one call; record each step's marker and outcome. The time
    of a shared call is split evenly between its steps. False if any step failed."""
    call = combined_step([s for s, _ in group])
    print(f"almost pipeline: {call.name}: {call.command_line()}", flush=True)
    for step, fp in group:
        step.output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(step.marker, {"status": "running", "fingerprint": fp, "command": call.command_line()})
    start, cpu_start = time.time(), cpu_seconds()
    rc = run_step(call, in_process)
    seconds, cpu = round((time.time() - start) / len(group), 1), round((cpu_seconds() - cpu_start) / len(group), 1)
    ok = True
    for step, fp in group:
        if rc != 0 or not step.product.exists():
            outcomes.append(Outcome(step, "failed", seconds, {"rc": rc}))
            ok = False
            continue
        record = {"status": "done", "fingerprint": fp, "command": call.command_line(), "seconds": seconds, "cpu_seconds": cpu}
        write_json_atomic(step.marker, record)
        outcomes.append(Outcome(step, "ran", seconds, {"cpu_seconds": cpu}))
    return ok


def print_summary(outcomes: list[Outcome], run_dir: Path, report_path: Path | None) -> None:
    rows = [("step", "status", "time (cpu)", "produced", "figures")]
    for o in outcomes:
        cpu = o.extra.get("cpu_seconds")
        took = f"{o.seconds:.0f}s" + (f" ({cpu:.0f}s)" if cpu is not None else "") + (" earlier" if o.status == "skipped" else "")
        try:
            produced = str(o.step.product.relative_to(run_dir))
        except ValueError:
            produced = str(o.step.product)
        figures = step_figures(o.step.stage, o.step.product) if o.status != "failed" else f"exit status {o.extra.get('rc')}"
        rows.append((o.step.name, o.status, took, produced, figures))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    ran = [o for o in outcomes if o.status != "skipped"]
    total, cpu = sum(o.seconds for o in ran), sum(o.extra.get("cpu_seconds") or 0 for o in ran)
    print(f"\nrun directory: {run_dir}   (stages run now: {total / 60:.1f} min, {cpu / 60:.1f} CPU-min)")
    if report_path is not None:
        print(f"report: {report_path}")


def build_parser():
    p = OneLineArgumentParser(prog="almost pipeline", description="Run every stage of the method from one YAML config; finished, unchanged steps are skipped.")
    p.add_argument("config", help="The pipeline YAML (see docs/pipeline.md).")
    p.add_argument("--output_dir", "--output-dir", help="Run directory (default: output_dir in the config).")
    p.add_argument("--until", choices=STAGES, help="Stop after this stage.")
    p.add_argument("--from", dest="first", choices=STAGES, help="Start again from this stage (earlier stages must have finished).")
    p.add_argument("--dry_run", "--dry-run", action="store_true", help="Check the config and print the steps without running them.")
    p.add_argument("--no_report", "--no-report", action="store_true", help="Do not write report.md at the end.")
    return p


def run_pipeline(config_path: str | os.PathLike, output_dir: str | None = None, until: str | None = None, first: str | None = None, dry_run: bool = False, report: bool = True) -> int:
    config = load_config(config_path)
    run_dir = Path(output_dir or config.get("output_dir") or "")
    if not str(run_dir) or str(run_dir) == ".":
        raise AlmostError("no run directory: pass --output_dir RUN or set output_dir in the config")
    if until and first and STAGES.index(first) > STAGES.index(until):
        raise AlmostError(f"--from {first} comes after --until {until}")
    for stage in (until, first):
        if stage and stage not in config:
            raise AlmostError(f"stage {stage} is not in {config_path}")
    planner = Planner(config, run_dir.resolve(), Path(config_path))
    steps = planner.plan()
    if not steps:
        raise AlmostError(f"{config_path} names no stages")
    validate(steps, planner)
    if until:
        steps = [s for s in steps if STAGES.index(s.stage) <= STAGES.index(until)]
    if dry_run:
        for step in steps:
            marker = read_marker(step)
            state = "done" if is_done(step, marker) and marker.get("fingerprint") == step_fingerprint(step) else "to run"
            print(f"{step.name:<40} {state:<7} {step.command_line()}")
        return 0
    # One pipeline per run directory; a second one says who holds it and stops.
    lock_output_dir(run_dir, "almost pipeline " + shlex.join([str(config_path), "--output_dir", str(run_dir)]))
    outcomes = execute(steps, first, bool(config.get("in_process")))
    report_path = None
    if report:
        report_path = write_report(run_dir)
    print_summary(outcomes, run_dir, report_path)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        sys.stderr.write(f"almost pipeline: {failed[0].step.name} failed; fix the cause and rerun the same command to resume\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_pipeline(args.config, args.output_dir, args.until, args.first, args.dry_run, not args.no_report)
