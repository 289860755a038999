"""Stage RG: one answer per prompt under each configuration (model, demonstration file, n_shot).

A configuration's prompt is the demonstration file's header and its first ``n_shot`` dialogues,
then ``Human: {prompt}`` and ``Assistant:``. The engine stops at the next dialogue separator or
``Human:`` turn; the answer is cut there too and marked BAD (the row is kept) by the seed's rules
(``demos.bad_answer_reasons``). Several ``--prompt_file_path`` and ``--n_shot`` values run every
combination with one model load.

With ``--chat_format`` the same content goes through the model's own chat template instead (the
header as the system message, the dialogues as earlier turns): instruct models answer a plain
transcript poorly. The answer then ends at the model's end-of-turn token, where the engines stop as
at any EOS; the transcript stop strings stay, for a model that imitates one anyway.

Work goes in fixed chunks of ``--chunk_size`` prompts (chunk k holds prompts k·size ... (k+1)·size-1
of the whole prompt list). A chunk's randomness comes from ``--seed``, the configuration and k only,
and its rows are appended and fsynced together, so a run killed at any point and started again
writes exactly what an uninterrupted run writes. ``--shard i/n`` keeps the prompts whose index is
i modulo n (``almost merge`` joins the shards afterwards).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..cards import write_dataset_card
from ..chat import check_chat_template, render_prompt
from ..config import EngineArguments, parse_shard
from ..digests import digest_model
from ..engines import Engine, Sampling, engine_model, load_engine
from ..errors import AlmostError
from ..models import ResolvedModel, load_tokenizer
from ..readers import read_jsonl, read_prompts
from ..resumable import ResumableJsonl
from ..shipped import BETTER_DEMONSTRATIONS
from ..stages import PG, RG
from .demos import ANSWER_STOP, Demonstrations, bad_answer_reasons, cut_answer, few_shot_prompt, load_demonstrations


@dataclass
class RGArguments(EngineArguments):
    """Options of ``almost rg`` (seed spellings; dash spellings work too)."""

    output_dir: str | None = field(default=None, metadata={"help": "Directory for the {config}.jsonl outputs (required)."})
    prompts_path: str | None = field(
        default=None,
        metadata={"help": "Prompts, one per line, or JSONL/JSON rows with `prompt` (default: OUTPUT_DIR/prompts.txt from almost pg)."},
    )
    prompt_file_path: list[str] = field(
        default_factory=lambda: [str(BETTER_DEMONSTRATIONS)],
        metadata={
            "help": (
                "Demonstration file(s): a header, then dialogues separated by '-----' lines (default: the project's "
                "high-quality file). Several files run one configuration each."
            )
        },
    )
    n_shot: list[int] = field(
        default_factory=lambda: [3],
        metadata={"help": "Demonstrations in the prompt; several values run one configuration each (with every --prompt_file_path)."},
    )
    max_new_tokens: int = field(
        default=256,
        metadata={
            "help": (
                "Token limit per answer. Answers stop at the next turn anyway; the seed used 768 (faithful) / 384 (others) on "
                "GPUs, 256 keeps runaway samples affordable on CPU."
            )
        },
    )
    trim_to_sentence: bool = field(
        default=False,
        metadata={
            "help": (
                "Cut an answer that stopped mid-sentence (at --max_new_tokens) back to its last full sentence before the BAD "
                "rules. Off by default, as in the seed; small CPU token budgets need it."
            )
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (seed: 1.0)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling mass (seed: 0.9)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate() call of the hf backend (sorted by length)."})
    chunk_size: int = field(
        default=32,
        metadata={
            "help": "Prompts per unit of work: seeded, generated and saved together (resume granularity). Part of what decides the output."
        },
    )
    shard: str | None = field(
        default=None, metadata={"help": "i/n: only prompts whose index is i modulo n, written to {config}.shard-i-of-n.jsonl."}
    )
    select: list[str] | None = field(
        default=None,
        metadata={
            "help": (
                "Make only these of the configurations --prompt_file_path x --n_shot makes (names as {model}-{file}-{n}shot, "
                "with -chat under --chat_format): several configurations that are not a full product, with one model load."
            )
        },
    )
    chat_format: bool = field(
        default=False,
        metadata={
            "help": (
                "Prompt with the model's chat template: the file's header as the system message, the demonstrations as earlier "
                "user/assistant turns. Configuration names end in -chat. Off by default, as in the seed (a plain transcript)."
            )
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.output_dir:
            raise ValueError("--output_dir is required")
        if any(n < 0 for n in self.n_shot):
            raise ValueError("--n_shot must not be negative")
        for name in ("max_new_tokens", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("--temperature must be >= 0 and --top_p in (0, 1]")
        if self.chat_format and self.backend == "openai":
            # The template is applied here, with the model's tokenizer, which a served model does not lend.
            raise ValueError("--chat_format needs the model's tokenizer: use --backend hf or vllm")


@dataclass(frozen=True)
class Configuration:
    """One RG configuration: a model, a demonstration file, a number of shots and the prompt format."""

    model_short_name: str
    demos: Demonstrations
    n_shot: int
    chat_format: bool = False

    @property
    def name(self) -> str:
        return configuration_name(self.model_short_name, self.demos.name, self.n_shot, self.chat_format)

    def prompt(self, user_prompt: str, tokenizer=None) -> str:
        """The few-shot transcript, or under ``chat_format`` the same turns in ``tokenizer``'s chat template."""
        question = [{"role": "user", "content": user_prompt}]
        if self.chat_format:
            return render_prompt(tokenizer, self.demos.chat_messages(self.n_shot, question))
        return few_shot_prompt(self.demos, self.n_shot, question)


def configuration_name(model_short_name: str, demonstration_name: str, n_shot: int, chat_format: bool = False) -> str:
    """``smollm2-135m-faithful-3shot``; ``smollm2-135m-faithful-3shot-chat`` in the chat template, so
    the two formats never share an output file or a rubric name."""
    return f"{model_short_name}-{demonstration_name}-{n_shot}shot" + ("-chat" if chat_format else "")


def model_short_name(model_name_or_path: str) -> str:
    return ResolvedModel(name=model_name_or_path, path=model_name_or_path).short_name


def configurations(config: RGArguments) -> list[Configuration]:
    """Every (demonstration file, n_shot) combination (or the ones --select names), checked before any
    work starts."""
    short = model_short_name(config.model_name_or_path)
    selected = set(config.select or ())
    result: dict[str, Configuration] = {}
    for path, n_shot in itertools.product(config.prompt_file_path, config.n_shot):
        c = Configuration(short, load_demonstrations(path), n_shot, config.chat_format)
        if selected and c.name not in selected:
            continue
        c.demos.static_prompt(n_shot)  # fails early when the file has too few dialogues
        if c.name in result:
            raise AlmostError(f"configuration {c.name} is asked for twice (two demonstration files with the same name?)")
        result[c.name] = c
    missing = sorted(selected - set(result))
    if missing:
        raise AlmostError(f"--select names {missing[0]!r}, which --prompt_file_path x --n_shot does not make")
    return list(result.values())


def output_path(output_dir: str | Path, name: str, shard: tuple[int, int] | None = None) -> Path:
    if shard is None:
        return Path(output_dir) / RG.outputs.file("answers", configuration=name)
    return Path(output_dir) / RG.outputs.file("shard", configuration=name, i=shard[0], n=shard[1])


def chunk_seed(seed: int, name: str, chunk_index: int) -> int:
    digest = hashlib.sha256(f"rg:{seed}:{name}:{chunk_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def answer_row(index: int, prompt: str, generation: str, name: str, trim: bool = False) -> dict:
    response = cut_answer(generation, trim)
    reasons = bad_answer_reasons(response)
    return {"index": index, "prompt": prompt, "response": response, "bad": bool(reasons), "bad_reasons": reasons, "config": name}


def _resume_settings(config: RGArguments, configuration: Configuration, prompts: Sequence[str], shard, model: str) -> dict:
    """What decides a configuration's rows. ``model`` is the model's content fingerprint
    (``digests.digest_model``); --batch_size counts only on the hf backend, where a batch's padding
    changes the sampled tokens."""
    return {
        "model": model,
        "backend": config.backend,
        "dtype": config.dtype,
        "batch_size": config.batch_size if config.backend == "hf" else None,
        "chunk_size": config.chunk_size,
        "sampling": [config.temperature, config.top_p, config.max_new_tokens, config.seed, config.trim_to_sentence],
        "demonstrations": [configuration.demos.header, configuration.demos.dialogues, configuration.n_shot],
        "prompts": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
        "shard": shard,
        # Only when on: outputs made without the option stay current.
        **({"chat_format": True} if config.chat_format else {}),
    }


def run_rg(config: RGArguments, engine: Engine | None = None) -> dict:
    """Write ``{config}.jsonl`` (or its shard) for every configuration; returns a summary per configuration.

    ``engine`` replaces the model named in the config (tests pass a scripted one).
    """
    shard = parse_shard(config.shard)
    prompts = read_prompts(config.prompts_path or Path(config.output_dir) / PG.outputs.files["prompts"])
    todo_configurations = configurations(config)
    indices = [i for i in range(len(prompts)) if shard is None or i % shard[1] == shard[0]]
    if not indices:
        raise AlmostError(f"--shard {config.shard} holds no prompts ({len(prompts)} prompts in all)")

    # The model is resolved (and checked) before any file is written; tests that pass an engine
    # fingerprint the name they give.
    model = engine_model(config, config.model_name_or_path) if engine is None else None
    model_digest = digest_model(model.path if model else config.model_name_or_path)
    tokenizer = chat_tokenizer(config, model.path if model else config.model_name_or_path) if config.chat_format else None
    summary: dict[str, dict] = {}
    logs = {}
    for c in todo_configurations:
        log = ResumableJsonl(
            output_path(config.output_dir, c.name, shard), "index", _resume_settings(config, c, prompts, shard, model_digest)
        )
        if config.overwrite:
            log.reset()
        if log.complete:  # refuses a finished file made with other settings, before anything is written
            print(f"almost rg: {log.final_path} is complete; nothing to do (--overwrite starts again)")
            summary[c.name] = {"path": str(log.final_path), "skipped": True}
        else:
            logs[c.name] = log
    for log in logs.values():
        log.open()  # refuses a partial file made with other settings before any work
    if not logs:
        write_card(config, todo_configurations, shard)
        return summary
    if engine is None:
        engine = load_engine(config, model)
    for c in todo_configurations:
        if c.name in logs:
            summary[c.name] = _generate(config, c, prompts, indices, engine, logs[c.name], tokenizer)
    write_card(config, todo_configurations, shard)
    return summary


def chat_tokenizer(config: RGArguments, model_path: str):
    """The model's tokenizer, for its chat template: loaded (and the template checked) before any file
    is written, so a model without one costs one error line, not a failed run."""
    tokenizer = load_tokenizer(model_path, config.trust_remote_code, cache_dir=config.cache_dir)
    check_chat_template(tokenizer, model_path, required_by="--chat_format")
    return tokenizer


def write_card(config: RGArguments, todo: list[Configuration], shard) -> None:
    """The folder's dataset card lists each finished configuration (a shard waits for `almost merge`)."""
    if shard is not None:
        return
    files, about = {}, {}
    for c in todo:
        path = output_path(config.output_dir, c.name)
        if path.exists():
            rows = read_jsonl(path, "rg output")
            files[c.name] = path.name
            about[c.name] = {
                "demonstrations": c.demos.name,
                "n_shot": c.n_shot,
                "rows": len(rows),
                "bad": sum(bool(r.get("bad")) for r in rows),
            }
    sampling = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "trim_to_sentence": config.trim_to_sentence,
    }
    write_dataset_card(
        config.output_dir,
        RG,
        files,
        {
            "model": config.model_name_or_path,
            "backend": config.backend,
            "sampling": sampling,
            "configurations": about,
            "filters": "none drop rows here: `bad` flags answers that break the BAD-answer rules (cs leaves them out)",
        },
    )


def _generate(
    config: RGArguments, c: Configuration, prompts: list[str], indices: list[int], engine: Engine, log: ResumableJsonl, tokenizer=None
) -> dict:
    chunks: dict[int, list[int]] = {}
    for i in indices:
        chunks.setdefault(i // config.chunk_size, []).append(i)
    started = time.perf_counter()
    generated = 0
    with tqdm(total=len(indices), desc=f"rg {c.name}", unit="prompt") as bar, closing(log):
        bar.update(sum(1 for i in indices if log.done(i)))
        for chunk_index, members in chunks.items():
            # A chunk cut short by a kill is generated again whole: same prompts, same seed, same rows.
            if all(log.done(i) for i in members):
                continue
            sampling = Sampling(
                temperature=config.temperature,
                top_p=config.top_p,
                max_new_tokens=config.max_new_tokens,
                stop=ANSWER_STOP,
                seed=chunk_seed(config.seed, c.name, chunk_index),
            )
            generations = engine.generate([c.prompt(prompts[i], tokenizer) for i in members], sampling, desc=f"chunk {chunk_index}")
            rows = [
                answer_row(i, prompts[i], samples[0], c.name, config.trim_to_sentence)
                for i, samples in zip(members, generations, strict=True)
            ]
            new = sum(1 for i in members if not log.done(i))
            log.append(rows)
            generated += len(members)
            bar.update(new)
            bar.set_postfix(bad=sum(r["bad"] for r in log.rows.values()))
        rows = log.finalize(order=indices)
    seconds = time.perf_counter() - started
    bad = sum(r["bad"] for r in rows)
    print(f"almost rg: wrote {len(rows)} answers ({bad} BAD) to {log.final_path} in {seconds:.0f} s")
    return {"path": str(log.final_path), "rows": len(rows), "bad": bad, "generated": generated, "seconds": round(seconds, 2)}
