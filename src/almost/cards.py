"""Dataset and model cards: the README.md beside every dataset and model a stage writes, ready for
the Hugging Face Hub.

A stage that finishes a data file calls ``write_dataset_card(folder, stage, files, about)`` with its
record (``stages.Stage``: the card's task categories, tags and description come from it). The card
is rebuilt from what the folder holds: several stages may write into one folder (``almost rg``
writes one JSONL per configuration beside ``prompts.txt``), so each stage's part is kept in the
card's own YAML (``almost:``) and merged with the parts already there.

The YAML lists every finished data file as a config with explicit ``data_files``, so that
``datasets.load_dataset(folder)`` loads exactly those files: never ``*.partial`` files, their
sidecars, the pipeline's step markers or the stats JSON. The data files themselves are not touched.

A training stage (``rm train``, ``sft``, ``rl``) calls ``write_training_card(config, stage, ...)`` with
its own parts as data (facts, the hyperparameters it shows, evaluations); the LoRA rows are written
alike for all three. The card keeps that data in its YAML
(``almost:``) and is rendered from it alone, so ``add_model_evaluation`` (``almost rm eval`` of a
model the pipeline trained) can add a row and render it again. Evaluations also go into the YAML as
the Hub's ``model-index`` results. Paths are written relative to the run directory (the model
folder's parent); a path outside the run is reduced to its last part (``shown_path``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from . import __version__
from .contracts import CARD_FILE
from .models import EMBEDDED_MODELS
from .redaction import portable, redact_url
from .stages import DatasetCard, ModelCard, Stage, named
from .writes import write_text_atomic

# Which config `load_dataset(folder)` loads when nothing is named: the folder's main product.
DEFAULT_ORDER = ("comparisons", "demonstrations", "scored")

# A part of a card that names a stage this version does not know (written by another one).
UNKNOWN_DATA = DatasetCard(("text-generation",), (), "")


def dataset_card(name: str) -> DatasetCard:
    """What the card says about the files of the stage ``name`` (a part of the card's YAML is keyed by it)."""
    found = named(name)
    return found.card if found is not None and isinstance(found.card, DatasetCard) else UNKNOWN_DATA


def model_card(name: str | None) -> ModelCard | None:
    found = named(name) if isinstance(name, str) else None
    return found.card if found is not None and isinstance(found.card, ModelCard) else None


def size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M" if rows < 10_000_000 else "n>10M"


def count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def read_card_metadata(folder: Path) -> dict:
    """The YAML header of the folder's card ({} when there is none or it was not written by us)."""
    path = folder / CARD_FILE
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    try:
        data = yaml.safe_load(text[4 : text.index("\n---", 4)])
    except (ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def write_dataset_card(folder: str | Path, stage: Stage, files: dict[str, str], about: dict) -> Path:
    """Add ``stage``'s ``files`` (config name → file name in ``folder``) and ``about`` (what made them:
    model, settings, filters and what they dropped, seeds, key figures) to the folder's card."""
    folder = Path(folder)
    previous = read_card_metadata(folder).get("almost") or {}
    parts: dict = dict(previous.get("stages") or {})  # stage name → its part of the card
    # Merged, not replaced: the pipeline runs rg once per configuration into one folder.
    parts[stage.name] = _merge(parts.get(stage.name) or {}, {"files": dict(files), **_shown_paths(_plain(about), folder.resolve().parent)})
    configs, total = [], 0
    for entry in parts.values():
        for config_name, file_name in entry["files"].items():
            rows = count_rows(folder / file_name) if (folder / file_name).exists() else 0
            total += rows
            if rows:  # `datasets` cannot read an empty file (e.g. no dropped dialogues): it stays in the table only
                configs.append({"config_name": config_name, "data_files": [{"split": "train", "path": file_name}]})
    # `datasets` picks one reader for a whole folder, from its default config: a folder with JSONL
    # lists only its JSONL files as configs (prompts.txt beside them stays in the table below).
    if any(c["data_files"][0]["path"].endswith(".jsonl") for c in configs):
        configs = [c for c in configs if c["data_files"][0]["path"].endswith(".jsonl")]
    rank = {
        c["config_name"]: DEFAULT_ORDER.index(c["config_name"]) if c["config_name"] in DEFAULT_ORDER else len(DEFAULT_ORDER)
        for c in configs
    }
    configs.sort(key=lambda c: rank[c["config_name"]])  # stable: otherwise in the order stages wrote them
    if configs:
        configs[0]["default"] = True
    categories = sorted({t for name in parts for t in dataset_card(name).task_categories})
    tags = sorted({"almost", *(t for name in parts for t in dataset_card(name).tags)})
    metadata = {
        "pretty_name": f"almost {' + '.join(parts)} data",
        # The text is machine-generated: the generating model's license governs its use (see below).
        "license": "other",
        "language": ["en"],
        "task_categories": categories,
        "tags": tags,
        "size_categories": [size_category(total)],
        "configs": configs,
        "almost": {"version": __version__, "stages": parts},
    }
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000)
    path = folder / CARD_FILE
    write_text_atomic(path, f"---\n{header}---\n\n{_body(folder, metadata, parts)}")
    return path


def _merge(old: dict, new: dict) -> dict:
    merged = dict(old)
    for key, value in new.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _shown_paths(value, run: Path):
    """Every value that is an absolute path (a model, a reward model) as ``shown_path`` shows it."""
    if isinstance(value, dict):
        return {k: _shown_paths(v, run) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown_paths(v, run) for v in value]
    return shown_path(value, run) if isinstance(value, str) and Path(value).is_absolute() else value


def _plain(value):
    """JSON-safe copy (paths and tuples become strings and lists) so that YAML round-trips it."""
    return json.loads(json.dumps(value, default=str))


def _body(folder: Path, metadata: dict, parts: dict) -> str:
    lines = [f"# {metadata['pretty_name']}", ""]
    lines += [
        f"Made with almost {__version__}, an implementation of ALMoST (Kim et al., 2023, "
        "*Aligning Large Language Models through Synthetic Feedback*). Every row is machine-generated.",
        "",
        "## Files",
        "",
        "| config | file | rows | made by |",
        "|---|---|---|---|",
    ]
    listed = {c["config_name"] for c in metadata["configs"]}
    for name, entry in parts.items():
        for config_name, file_name in entry["files"].items():
            if (folder / file_name).exists():
                rows = count_rows(folder / file_name)
                shown = (
                    f"`{config_name}`"
                    if config_name in listed
                    else "(empty)"
                    if not rows
                    else f'(`load_dataset("text", data_files="{file_name}")`)'
                )
                lines.append(f"| {shown} | `{file_name}` | {rows} | `almost {name}` |")
    default_config = metadata["configs"][0]["config_name"] if metadata["configs"] else "-"
    lines += [
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'data = load_dataset("path/to/this/folder")  # the default config: {default_config}',
        "```",
        "",
    ]
    for name, entry in parts.items():
        lines += [f"## `almost {name}`", "", dataset_card(name).description, ""]
        for key, value in entry.items():
            if key == "files":
                continue
            shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
            lines.append(f"- **{key}**: {shown}")
        lines.append("")
    models = sorted({str(e["model"]) for e in parts.values() if e.get("model")})
    lines += [
        "## License",
        "",
        f"Generated by {', '.join(f'`{m}`' for m in models) or 'the models named above'}: the license and terms of use of "
        "the generating models apply to this text. The seed prompts and demonstrations shipped with almost are Apache-2.0.",
        "",
    ]
    return "\n".join(lines)


# --- model cards ------------------------------------------------------------------------------

# The hub checkpoint each embedded model was converted from: what `base_model` names on the Hub.
EMBEDDED_HUB_IDS = {name: model.hub_id for name, model in EMBEDDED_MODELS.items()}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def shown_path(value: str | None, run: str | Path) -> str | None:
    """A path as a card shows it: relative to the run directory when inside it, else its last part
    (``.../name``: this machine's folders are nobody else's business). Hub ids, embedded names and
    shipped data-set names stay as they are; URLs lose their credentials."""
    if not value or "://" in str(value):
        return redact_url(str(value)) if value else value
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        return str(value)
    path, run = path.resolve(), Path(run).resolve()
    if path.is_relative_to(run):
        return str(path.relative_to(run)) or "."
    return f".../{path.name}"


def hub_base_model(name: str | None) -> str | None:
    """The Hub id a model was trained from, for the card's ``base_model`` (None for a local folder)."""
    if not name:
        return None
    if name in EMBEDDED_HUB_IDS:
        return EMBEDDED_HUB_IDS[name]
    return name if HUB_ID.match(name) and not Path(name).exists() else None


def write_model_card(
    folder: str | Path,
    stage: Stage,
    *,
    base_model: str | None,
    facts: dict[str, str],
    hyperparameters: dict,
    evaluations: list[dict],
    tags: list[str] = (),
) -> Path:
    """The model card of a training stage's output folder.

    ``facts``: label → one line of markdown (the data, the loss, the text format ...).
    ``evaluations``: one entry per data set, ``{name, data, split, source, note, metrics}``, each
    metric ``{type, name, value, ci95, n}`` (``ci95`` and ``n`` may be None); see
    ``reward.evaluate.card_evaluation`` for the reward model's.
    """
    folder = Path(folder)
    about = {
        "version": __version__,
        "stage": stage.name,
        "base_model": shown_path(base_model, folder.resolve().parent),
        "hub_base_model": hub_base_model(base_model),
        "tags": list(tags),
        "facts": dict(facts),
        "hyperparameters": dict(hyperparameters),
        "evaluations": list(evaluations),
    }
    return _write_model_card(folder, _plain(about))


# The optimiser settings a card shows for the trainers that fit given data (rm train, sft); each adds its own.
SUPERVISED_HYPERPARAMETERS = (
    "learning_rate",
    "weight_decay",
    "num_train_epochs",
    "max_steps",
    "warmup_steps",
    "lr_scheduler_type",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
)


def write_training_card(
    config, stage: Stage, *, facts: dict[str, str], hyperparameters: list[str], evaluations: list[dict], tags: list[str] = ()
) -> Path:
    """The model card of a training stage (``rm train``, ``sft``, ``rl``), written the same way for all
    three: the model in ``config.output_dir``, trained from ``config.model_name_or_path``.

    ``hyperparameters`` names the config fields the card shows; the LoRA settings follow them, in
    the one spelling the three stages share (``use_peft``, ``lora_r`` ...).
    """
    shown = {name: getattr(config, name) for name in hyperparameters}
    shown["use_peft"] = config.use_peft
    if config.use_peft:
        shown.update(lora_r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, merge_lora=config.merge_lora)
    return write_model_card(
        config.output_dir,
        stage,
        base_model=config.model_name_or_path,
        facts=facts,
        hyperparameters=shown,
        evaluations=evaluations,
        tags=tags,
    )


def add_model_evaluation(folder: str | Path, evaluation: dict) -> bool:
    """Add (or replace: same name and data) an evaluation in the card of a model almost trained.
    False, and nothing written, when the folder's card is not such a card."""
    folder = Path(folder)
    about = read_card_metadata(folder).get("almost")
    if not isinstance(about, dict) or model_card(about.get("stage")) is None or not isinstance(about.get("evaluations"), list):
        return False
    evaluation = _plain(evaluation)
    kept = [e for e in about["evaluations"] if (e.get("name"), e.get("data")) != (evaluation["name"], evaluation["data"])]
    _write_model_card(folder, {**about, "evaluations": [*kept, evaluation]})
    return True


def _write_model_card(folder: Path, about: dict) -> Path:
    from huggingface_hub import EvalResult, ModelCardData

    card = model_card(about["stage"])
    results = [
        EvalResult(
            task_type=card.task,
            dataset_type=e["data"],
            dataset_name=e["name"],
            dataset_split=e.get("split"),
            metric_type=m["type"],
            metric_name=m["name"],
            metric_value=m["value"],
        )
        for e in about["evaluations"]
        for m in e["metrics"]
        if isinstance(m.get("value"), (int, float))
    ]
    data = ModelCardData(
        model_name=folder.name,
        base_model=about.get("hub_base_model"),
        library_name="transformers",
        pipeline_tag=card.task,
        # Trained from a model on generated data: the base model's license and the generating models' terms apply.
        license="other",
        tags=sorted({"almost", *card.tags, *about.get("tags", [])}),
        eval_results=results or None,
        almost=about,
    )
    header = yaml.safe_dump(data.to_dict(), sort_keys=False, allow_unicode=True, width=1000)
    text = f"---\n{header}---\n\n{_model_body(about, card.title, card.description)}"
    return write_text_atomic(folder / CARD_FILE, portable(text, folder.resolve().parent))


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-" if value is None else str(value)


def _model_body(about: dict, title: str, description: str) -> str:
    lines = [f"# {title}", "", description, "", f"- **Base model:** `{about['base_model']}`"]
    lines += [f"- **{label}:** {text}" for label, text in about["facts"].items()]
    lines += ["", "## Evaluation", ""]
    if any(e["metrics"] for e in about["evaluations"]):
        lines += ["| data | measure | value | 95% interval | n | by |", "|---|---|---|---|---|---|"]
        for e in about["evaluations"]:
            for m in e["metrics"]:
                ci = m.get("ci95") or [None, None]
                interval = f"{ci[0]:.3f}–{ci[1]:.3f}" if None not in ci else "-"
                data = f"{e['name']} (`{e['data']}`{', ' + e['split'] if e.get('split') else ''})"
                lines.append(
                    f"| {data} | {m['name']} | {_number(m['value'])} | {interval} | {_number(m.get('n'))} | `{e.get('source', '')}` |"
                )
        lines.append("")
    lines += [f"- {e['name']}: {e['note']}" for e in about["evaluations"] if e.get("note")]
    if not about["evaluations"]:
        lines.append("Not measured.")
    lines += ["", "## Hyperparameters", "", "| hyperparameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in about["hyperparameters"].items()]
    lines += [
        "",
        "## License",
        "",
        "The base model's license applies, and the terms of the models that generated the training data.",
        "",
        f"Made with almost {about['version']}. The evaluation results are also in this card's `model-index`.",
        "",
    ]
    return "\n".join(lines)
