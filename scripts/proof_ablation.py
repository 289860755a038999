"""The ablation tables of docs/proof.md: CS and RM variants trained on one shared generation.

    python scripts/proof_ablation.py almost-proof                # every variant of its config, then the table
    python scripts/proof_ablation.py almost-proof --variants seed-filter length-head
    python scripts/proof_ablation.py almost-proof-size           # the size-contrast rows (proof-size.yaml)
    python scripts/proof_ablation.py almost-proof-size --variants size-harmless --supervised_pairs 85  # + its reference
    python scripts/proof_ablation.py almost-proof --dry_run      # the commands only

GENERATION is a run of ``almost demo --proof`` or ``almost demo --proof size`` (or any run whose ``rg/``
holds the answers of the configurations a variant's rubric names); by default the variants made for
its config run (the size rows when its ``rg/`` holds the 1.5B's configuration). Each variant runs
``almost cs`` → ``almost rm train`` → ``almost rm eval`` into ``GENERATION/ablation/<variant>/{cs,rm,rm_eval}``,
with the proof config's RM settings, so the variants differ from the proof run's own RM only in what
their row says. The scale rows (``scale-100``, ..., ``size-scale-100``) keep the run's recipe and use only
the RG rows of its first N prompts (copied to ``<variant>/rg/``); the proof run itself is the point of
all its prompts. The RG rows answer prompts anew under other configurations (``almost rg``, one call per
model): on the first 300 prompts with other sampling or shots (``more-shots``, ``seed-temperature``:
into ``<variant>/rg/``, the configurations they do not change copied), or on all the generation's prompts
with its own settings (``size-faithful``, ``harmless-1.5b``: into ``ablation/rg/``, shared by every row that
names the same configuration, beside copies of the generation's files those rows use). The PG row
(``pg-1.5b``) makes its prompts anew on another model, then answers every configuration of its rubric on
them. The supervised rows (``supervised-smollm2-135m``) are references, never a default recipe: the same
RM settings trained on human pairs, as many as the generation's CS kept, from a seeded shuffle of the
usable ``hh-harmless-dev`` pairs (written to ``<variant>/human_pairs.jsonl``); ``--supervised_pairs N ...``
adds references of N pairs (``supervised-smollm2-135m-N``: an ablation row's CS count). The table gives
every row of the same RM base its share of the supervised margin, (length-balanced - 0.5) / (supervised's
- 0.5), against the reference with as many pairs as the row or, without one, the nearest (named in the cell).
A step whose product exists is skipped, so a rerun after a crash resumes (``rm train`` resumes from its
last checkpoint by itself). The wall and CPU seconds of each step are kept in ``times.json`` beside
it. At the end the table (one row per variant, plus the proof run's own RM read from GENERATION)
is printed and written to ``GENERATION/ablation/ablation.md``; once a scale row is measured, the scale
figure (``scale.png``) beside it. ``--scale_runs`` adds proof runs of other sizes (the proof config with
another ``pg.num_generation``, run as far as ``rm eval``) to the table and the figure as further points.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from almost.feedback.demos import demonstration_name
from almost.feedback.rg import configuration_name, model_short_name
from almost.readers import read_json, read_jsonl, read_lines
from almost.reward.formats import pairs_from_rows
from almost.run.proof import SupervisedReference, share_cell, supervised_reference, supervised_references
from almost.run.sections import rm_eval_row
from almost.run.tables import markdown_table, pyplot, save_figure
from almost.shipped import HH_HARMLESS_DEV
from almost.writes import write_json_atomic, write_jsonl_atomic, write_text_atomic

SMOLLM2, QWEN = "smollm2-135m", "qwen2.5-coder-1.5b"
HARMLESS, FAITHFUL, BASIC = "smollm2-135m-harmless-2shot", "smollm2-135m-faithful-2shot", "smollm2-135m-basic-1shot"
HARMLESS_5, FAITHFUL_5 = "smollm2-135m-harmless-5shot", "smollm2-135m-faithful-5shot"
QWEN_HARMLESS, QWEN_FAITHFUL = "qwen2.5-coder-1.5b-harmless-2shot", "qwen2.5-coder-1.5b-faithful-2shot"
# proof-size.yaml's rubric: the 1.5B's harmless answers over the 135M's, over its basic ones.
SIZE_RUBRIC = (QWEN_HARMLESS, HARMLESS, BASIC)
# The proof config's RM (src/almost/run/configs/proof.yaml, and proof-size.yaml's) without its length
# options: every variant starts from these and adds only its own flags.
RM_TRAIN = [
    "--model_name_or_path",
    SMOLLM2,
    "--use_peft",
    "false",
    "--num_train_epochs",
    "1",
    "--per_device_train_batch_size",
    "8",
    "--max_length",
    "512",
    "--eval_fraction",
    "0.1",
    "--report_to",
    "none",
    "--seed",
    "42",
]
RM_EVAL = ["--batch_size", "8"]
# The proof configs' RG settings; an RG row adds its model, configurations and its own flags.
RG = [
    "--model_name_or_path",
    SMOLLM2,
    "--max_new_tokens",
    "128",
    "--trim_to_sentence",
    "true",
    "--temperature",
    "0.7",
    "--chunk_size",
    "128",
    "--seed",
    "42",
]
# The proof configs' PG settings; a PG row adds its model and its number of prompts.
PG = ["--model_name_or_path", SMOLLM2, "--prompt_file_path", "seed_prompts_harmless.txt", "--batch_size", "64", "--seed", "42"]
# Engine flags of a model wherever it generates, as proof-size.yaml gives them (its KV cache, set).
ENGINE_FLAGS = {QWEN: ("--kv_cache_gib", "3", "--max_model_len", "4096")}
# The human pairs a supervised row trains on: a seeded shuffle of this half's usable pairs, the first N.
SUPERVISED_SOURCE, SUPERVISED_SEED, HUMAN_PAIRS = "hh-harmless-dev", 0, "human_pairs.jsonl"
# What the proof run's own row did, by the config that made the generation.
RECIPES = {
    "proof": "full rubric + CS --length_balance + RM --length_head (proof.yaml)",
    "size": "1.5B harmless-2shot > 135M harmless-2shot > 135M basic-1shot + CS --length_balance + RM --length_head (proof-size.yaml)",
}


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    rubric: tuple[str, ...] = ()
    cs_flags: tuple[str, ...] = ()
    rm_flags: tuple[str, ...] = ()
    # Only the first N prompts of the generation (their RG rows), for the scale and RG rows; a PG row's count.
    num_prompts: int | None = None
    # RG rows: (model, demonstration file, shots) of the configurations answered anew, with these rg flags.
    rg_configurations: tuple[tuple[str, str, int], ...] = ()
    rg_flags: tuple[str, ...] = ()
    # PG rows: the prompts made anew by this model (num_prompts of them) with the proof configs' PG settings.
    pg_model: str | None = None
    # A human-supervised reference: RM train on human pairs (HUMAN_PAIRS), no CS; as many as
    # supervised_pairs, or as the generation's CS kept when None.
    supervised: bool = False
    supervised_pairs: int | None = None
    # The configs whose generations the variant is made for: "proof" (proof.yaml) and/or "size" (proof-size.yaml).
    generations: tuple[str, ...] = ("proof",)

    @property
    def regenerated(self) -> list[str]:
        return [configuration_name(model_short_name(model), demonstration_name(path), n) for model, path, n in self.rg_configurations]

    @property
    def own_answers(self) -> bool:
        """Its answers are its own (other prompts or other sampling), in ``<variant>/rg/``."""
        return bool(self.pg_model or self.num_prompts or self.rg_flags)


# The proof run's own CS and RM options: the LoRA and scale rows change one thing on top of them.
PROOF_CS = ("--length_balance", "true", "--seed", "0")
# A two-configuration rubric under the seed's filter keeps only chosen-longer pairs (mean - std/2 of two
# lengths lies above the shorter), which --length_balance then all but empties (the size run: 1 of
# 141): such rows leave length to the balance alone.
TWO_RANK_CS = (*PROOF_CS, "--length_filter", "false")
TWO_RANK_CS_WORDS = "; no seed filter, --length_balance"
PROOF_RM = ("--length_head", "true")
SIZE = ("size",)
QWEN_FAITHFUL_ANEW = ((QWEN, "faithful_prompt.txt", 2),)


# In the order they are run: the comparisons that matter most first.
VARIANTS = (
    Variant("seed-filter", "full rubric, the seed's CS filter only, plain RM", (HARMLESS, FAITHFUL, BASIC)),
    Variant("length-head", "+ RM --length_head (ODIN)", (HARMLESS, FAITHFUL, BASIC), rm_flags=PROOF_RM),
    Variant("length-balance", "+ CS --length_balance", (HARMLESS, FAITHFUL, BASIC), cs_flags=PROOF_CS),
    Variant(
        "helpful-rubric",
        "rubric without the harmless demonstrations (faithful-2shot > basic-1shot), seed filter, plain RM",
        (FAITHFUL, BASIC),
    ),
    Variant(
        "harmless-rubric",
        "the harmless contrast only (harmless-2shot > faithful-2shot), seed filter, plain RM",
        (HARMLESS, FAITHFUL),
    ),
    Variant("max-ratio", "+ CS --max_length_ratio 1.5", (HARMLESS, FAITHFUL, BASIC), cs_flags=("--max_length_ratio", "1.5")),
    Variant(
        "lora",
        "the proof run's RM (--length_balance + --length_head) with --use_peft",
        (HARMLESS, FAITHFUL, BASIC),
        cs_flags=PROOF_CS,
        rm_flags=(*PROOF_RM, "--use_peft", "true"),
    ),
    # The proof run is the scale point of all its prompts (scale_points).
    *(
        Variant(f"scale-{n}", f"the proof run's recipe on its first {n} prompts", (HARMLESS, FAITHFUL, BASIC), PROOF_CS, PROOF_RM, n)
        for n in (100, 200, 300)
    ),
    # RG rows: stronger contrasts the method allows, on the first 300 prompts (compare with scale-300).
    Variant(
        "more-shots",
        "the proof run's recipe with its two better configurations at 5 shots (harmless-5shot > faithful-5shot > basic-1shot)",
        (HARMLESS_5, FAITHFUL_5, BASIC),
        PROOF_CS,
        PROOF_RM,
        300,
        rg_configurations=((SMOLLM2, "harmless_prompt.txt", 5), (SMOLLM2, "faithful_prompt.txt", 5)),
    ),
    Variant(
        "seed-temperature",
        "the proof run's recipe with its three configurations sampled at the seed's temperature 1.0 (proof: 0.7)",
        (HARMLESS, FAITHFUL, BASIC),
        PROOF_CS,
        PROOF_RM,
        300,
        rg_configurations=((SMOLLM2, "harmless_prompt.txt", 2), (SMOLLM2, "faithful_prompt.txt", 2), (SMOLLM2, "basic_prompt.txt", 1)),
        rg_flags=("--temperature", "1.0"),
    ),
    # The ceiling of both configs' RM: what the same RM learns from as many human pairs.
    Variant(
        "supervised-smollm2-135m",
        f"reference, not a recipe: the run's RM settings on human pairs, as many as its CS kept (seeded shuffle of {SUPERVISED_SOURCE})",
        # HH dialogues run to --max_length: without checkpointing this row peaked at 17.6 GiB on a CPU (6.6 GiB with it).
        rm_flags=(*PROOF_RM, "--gradient_checkpointing", "true"),
        supervised=True,
        generations=("proof", "size"),
    ),
    # The size contrast (proof-size.yaml's generation): the factor isolated, the recipe's controls kept.
    Variant(
        "smollm2-rubric",
        "the 135M proof's rubric and recipe on this generation (harmless-2shot > faithful-2shot > basic-1shot, SmolLM2 alone)",
        (HARMLESS, FAITHFUL, BASIC),
        PROOF_CS,
        PROOF_RM,
        generations=SIZE,
    ),
    Variant(
        "size-harmless",
        f"size alone, harmless demonstrations: 1.5B harmless-2shot > 135M harmless-2shot{TWO_RANK_CS_WORDS}",
        (QWEN_HARMLESS, HARMLESS),
        TWO_RANK_CS,
        PROOF_RM,
        generations=SIZE,
    ),
    Variant(
        "size-faithful",
        f"size alone, faithful demonstrations: 1.5B faithful-2shot (answered anew) > 135M faithful-2shot{TWO_RANK_CS_WORDS}",
        (QWEN_FAITHFUL, FAITHFUL),
        TWO_RANK_CS,
        PROOF_RM,
        rg_configurations=QWEN_FAITHFUL_ANEW,
        generations=SIZE,
    ),
    Variant(
        "size-plus-harmless",
        f"size + harmless demonstrations: 1.5B harmless-2shot > 135M faithful-2shot{TWO_RANK_CS_WORDS}",
        (QWEN_HARMLESS, FAITHFUL),
        TWO_RANK_CS,
        PROOF_RM,
        generations=SIZE,
    ),
    # A row counts once: size-plus-harmless again on new samples of both configurations (same prompts,
    # same CS and RM), so that its figure is not the best of three draws.
    Variant(
        "size-plus-harmless-replicate",
        f"size-plus-harmless on new samples: both configurations answered anew (rg --seed 1) on the same prompts{TWO_RANK_CS_WORDS}",
        (QWEN_HARMLESS, FAITHFUL),
        TWO_RANK_CS,
        PROOF_RM,
        rg_configurations=((QWEN, "harmless_prompt.txt", 2), (SMOLLM2, "faithful_prompt.txt", 2)),
        rg_flags=("--seed", "1"),
        generations=SIZE,
    ),
    Variant(
        "harmless-1.5b",
        f"the harmless demonstrations alone, at 1.5B: harmless-2shot > faithful-2shot (answered anew){TWO_RANK_CS_WORDS}",
        (QWEN_HARMLESS, QWEN_FAITHFUL),
        TWO_RANK_CS,
        PROOF_RM,
        rg_configurations=QWEN_FAITHFUL_ANEW,
        generations=SIZE,
    ),
    Variant(
        "size-seed-filter", "the size rubric without the length controls: the seed's CS filter, plain RM", SIZE_RUBRIC, generations=SIZE
    ),
    # --length_balance keeps as many chosen-longer pairs as chosen-shorter ones, and the 1.5B's answers
    # are mostly the longer (its refusals explain themselves): the size run keeps 53 of ~280 pairs.
    # ODIN's length head is the other control, one that keeps every pair.
    Variant(
        "size-length-head",
        "the size rubric, the seed's CS filter, RM --length_head (every pair kept, length left to the head)",
        SIZE_RUBRIC,
        rm_flags=PROOF_RM,
        generations=SIZE,
    ),
    Variant(
        "size-faithful-seed-filter",
        "size alone (faithful) without the length controls: the seed's CS filter, plain RM",
        (QWEN_FAITHFUL, FAITHFUL),
        rg_configurations=QWEN_FAITHFUL_ANEW,
        generations=SIZE,
    ),
    # At 100 prompts, half of proof-size.yaml's, so that both fit a run of its size.
    Variant(
        "size-scale-100",
        "the size recipe on the generation's first 100 prompts (pg-1.5b's baseline)",
        SIZE_RUBRIC,
        PROOF_CS,
        PROOF_RM,
        100,
        generations=SIZE,
    ),
    Variant(
        "pg-1.5b",
        "the size recipe on 100 prompts PG made on the 1.5B (better prompts?), every configuration answered anew",
        SIZE_RUBRIC,
        PROOF_CS,
        PROOF_RM,
        100,
        rg_configurations=((QWEN, "harmless_prompt.txt", 2), (SMOLLM2, "harmless_prompt.txt", 2), (SMOLLM2, "basic_prompt.txt", 1)),
        pg_model=QWEN,
        generations=SIZE,
    ),
)
BY_NAME = {v.name: v for v in VARIANTS}
SUPERVISED = BY_NAME["supervised-smollm2-135m"]


def supervised_at(pairs: int) -> Variant:
    """The supervised reference at the pair count of an ablation row (``--supervised_pairs``); its pairs
    are the first PAIRS of the same seeded shuffle, so references of different sizes are nested."""
    what = f"reference, not a recipe: the run's RM settings on {pairs} human pairs (seeded shuffle of {SUPERVISED_SOURCE})"
    return replace(SUPERVISED, name=f"{SUPERVISED.name}-{pairs}", what=what, supervised_pairs=pairs)


def overridden(flags: list[str], changes: Sequence[str]) -> list[str]:
    """``--flag value`` pairs with the values of ``changes`` in place of their own; new ones appended."""
    merged = dict(zip(flags[::2], flags[1::2])) | dict(zip(changes[::2], changes[1::2]))
    return [token for pair in merged.items() for token in pair]


def generation_kind(generation: Path) -> str:
    """The config that made GENERATION: size (proof-size.yaml) when its rg/ holds, or is making, the 1.5B's
    configuration, else proof."""
    return "size" if any((generation / "rg").glob(f"*{QWEN_HARMLESS}*")) else "proof"


def answers_dir(variant: Variant, generation: Path, folder: Path) -> Path:
    """Where CS reads the variant's answers: its own ``rg/``, the shared ``ablation/rg/`` (the generation's
    prompts and settings under more configurations) or the generation's ``rg/``."""
    if variant.own_answers:
        return folder / "rg"
    return folder.parent / "rg" if variant.rg_configurations else generation / "rg"


def rg_steps(variant: Variant, prompts: Path, answers: Path) -> list[tuple[str, list[str], tuple[Path, ...]]]:
    """One ``almost rg`` call per model (one engine start for its configurations), done when the answer
    file of each of them is (RG moves it into place once all its answers are in)."""
    calls = []
    for model in dict.fromkeys(m for m, _, _ in variant.rg_configurations):
        mine = [(path, n) for m, path, n in variant.rg_configurations if m == model]
        names = [configuration_name(model_short_name(model), demonstration_name(path), n) for path, n in mine]
        argv = [*overridden(RG, ("--model_name_or_path", model, *ENGINE_FLAGS.get(model, ()), *variant.rg_flags))]
        argv += ["--prompts_path", str(prompts), "--output_dir", str(answers)]
        argv += ["--prompt_file_path", *dict.fromkeys(path for path, _ in mine), "--n_shot", *map(str, sorted({n for _, n in mine}))]
        calls.append((f"rg {model}", ["rg", *argv, "--select", *names], tuple(answers / f"{name}.jsonl" for name in names)))
    return calls


def steps(variant: Variant, generation: Path, folder: Path, data_path: str) -> list[tuple[str, list[str], tuple[Path, ...]]]:
    """(step, almost argv, products: the step is done when they all exist) for one variant."""
    rm, rm_eval = folder / "rm", folder / "rm_eval"
    evaluate = (
        "rm eval",
        ["rm", "eval", *RM_EVAL, "--data_path", data_path, "--model_name_or_path", str(rm), "--output_dir", str(rm_eval)],
        (rm_eval / "metrics.json",),
    )
    if variant.supervised:
        train = ["rm", "train", *RM_TRAIN, *variant.rm_flags, "--data_path", str(folder / HUMAN_PAIRS), "--output_dir", str(rm)]
        return [("rm train", train, (rm / "metrics.json",)), evaluate]
    cs, answers = folder / "cs", answers_dir(variant, generation, folder)
    before = []
    if variant.pg_model:
        count = ("--num_generation", str(variant.num_prompts))
        argv = [*overridden(PG, ("--model_name_or_path", variant.pg_model, *ENGINE_FLAGS.get(variant.pg_model, ()), *count))]
        before.append(("pg", ["pg", *argv, "--output_dir", str(folder / "pg")], (folder / "pg" / "prompts.txt",)))
        prompts = folder / "pg" / "prompts.txt"
    else:
        prompts = folder / "prompts.txt" if variant.num_prompts else generation / "pg" / "prompts.txt"
    before += rg_steps(variant, prompts, answers)
    return before + [
        (
            "cs",
            ["cs", "--input_dir", str(answers), "--output_dir", str(cs), "--rubric", *variant.rubric, *variant.cs_flags],
            (cs / "comparison.jsonl",),
        ),
        (
            "rm train",
            ["rm", "train", *RM_TRAIN, *variant.rm_flags, "--data_path", str(cs / "comparison.jsonl"), "--output_dir", str(rm)],
            (rm / "metrics.json",),
        ),
        evaluate,
    ]


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_first_prompts(generation: Path, folder: Path, variant: Variant) -> None:
    """FOLDER/rg/: the rows of the first ``num_prompts`` prompts of each configuration the rubric names
    and the variant does not answer anew (RG rows are in prompt order, ``index`` 0, 1, ...), so CS sees
    a smaller run of the same generation; for an RG row also FOLDER/prompts.txt, those prompts."""
    if variant.rg_configurations:
        prompts = read_lines(generation / "pg" / "prompts.txt", "prompts")
        if len(prompts) < variant.num_prompts:
            sys.exit(f"{variant.name}: {generation / 'pg' / 'prompts.txt'} has {len(prompts)} prompts, fewer than {variant.num_prompts}")
        write_text_atomic(folder / "prompts.txt", "".join(f"{p}\n" for p in prompts[: variant.num_prompts]))
    for name in [name for name in variant.rubric if name not in variant.regenerated]:
        rows = read_jsonl(generation / "rg" / f"{name}.jsonl", "rg output")
        if len(rows) < variant.num_prompts:
            sys.exit(f"{variant.name}: {generation / 'rg' / name}.jsonl has {len(rows)} prompts, fewer than {variant.num_prompts}")
        write_jsonl_atomic(folder / "rg" / f"{name}.jsonl", rows[: variant.num_prompts])


def share_generation_answers(generation: Path, shared: Path, variant: Variant) -> None:
    """SHARED (ablation/rg/): a copy of each generation file the rubric names and the variant does not
    answer anew, beside the configurations RG rows add there, so CS reads them from one folder."""
    for name in [name for name in variant.rubric if name not in variant.regenerated]:
        if not (shared / f"{name}.jsonl").is_file():
            write_jsonl_atomic(shared / f"{name}.jsonl", read_jsonl(generation / "rg" / f"{name}.jsonl", "rg output"))


def usable_dev_rows() -> list[dict]:
    """The rows of hh-harmless-dev that make a pair (the rows `rm train` and `rm eval` keep), in file order."""
    with gzip.open(HH_HARMLESS_DEV, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [row for row in rows if pairs_from_rows([row], SUPERVISED_SOURCE).pairs]


def write_human_pairs(generation: Path, folder: Path, count: int | None = None) -> Path:
    """FOLDER/human_pairs.jsonl: COUNT human pairs (default: as many as the generation's CS kept), the
    first of a seeded shuffle of hh-harmless-dev's usable rows (never the test half, which the rows are
    read on). A file of our own: `rm train` refuses the shipped evaluation sets by name."""
    if count is None:
        stats = generation / "cs" / "cs_stats.json"
        if not stats.is_file():
            sys.exit(f"{folder.name}: {stats} not found: the reference takes as many pairs as the generation's CS kept; run its CS first")
        count = read_json(stats, "cs stats")["pairs"]
    rows = usable_dev_rows()
    if count > len(rows):
        sys.exit(f"{folder.name}: {count} pairs asked, more than the {len(rows)} usable pairs of {SUPERVISED_SOURCE}")
    order = np.random.default_rng(SUPERVISED_SEED).permutation(len(rows))
    return write_jsonl_atomic(folder / HUMAN_PAIRS, [rows[i] for i in order[:count]])


def prepare(variant: Variant, generation: Path, folder: Path) -> None:
    """The files a variant's steps read that no step writes: human pairs, first prompts, copied answers."""
    if variant.supervised:
        write_human_pairs(generation, folder, variant.supervised_pairs)
    elif variant.num_prompts and not variant.pg_model:
        write_first_prompts(generation, folder, variant)
    elif variant.rg_configurations and not variant.own_answers:
        share_generation_answers(generation, folder.parent / "rg", variant)


def run_variant(variant: Variant, generation: Path, folder: Path, data_path: str, dry_run: bool) -> None:
    times_path = folder / "times.json"
    times = read_json(times_path, "times") if times_path.is_file() else {}
    variant_steps = steps(variant, generation, folder, data_path)
    training_data = folder / HUMAN_PAIRS if variant.supervised else next(products for name, _, products in variant_steps if name == "cs")[0]
    if not dry_run and not training_data.exists():
        prepare(variant, generation, folder)
    for name, argv, products in variant_steps:
        command = [sys.executable, "-m", "almost", *argv]
        if all(p.exists() for p in products):
            print(f"{variant.name}: {name}: done ({products[0]})", flush=True)
            continue
        print(f"{variant.name}: {name}: almost {' '.join(argv)}", flush=True)
        if dry_run:
            continue
        start, cpu = time.time(), child_cpu_seconds()
        rc = subprocess.run(command).returncode
        if rc != 0:
            sys.exit(f"{variant.name}: {name} failed (exit {rc}); rerun the same command to resume")
        times[name] = {"seconds": round(time.time() - start, 1), "cpu_seconds": round(child_cpu_seconds() - cpu, 1)}
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(times_path, times)


def proof_run_times(generation: Path) -> dict:
    """The proof run's own cs / rm train / rm eval times, from the pipeline's step markers."""
    times = {}
    for name, folder in (("cs", "cs"), ("rm train", "rm"), ("rm eval", "rm_eval")):
        for marker in sorted((generation / folder).glob(".almost-step*.json")):
            record = read_json(marker, "step marker")
            if record.get("status") == "done":
                times[name] = {"seconds": record.get("seconds"), "cpu_seconds": record.get("cpu_seconds")}
    return times


def row(label: str, what: str, folder: Path, times: dict, references: Sequence[SupervisedReference]) -> list | None:
    """The row of the RM in FOLDER; its share of the margin of the supervised reference with the same
    base, read on the same human pairs, trained on as many pairs or the nearest count
    (``references``: ``run.proof.supervised_references``)."""
    metrics_path = folder / "rm_eval" / "metrics.json"
    if not metrics_path.is_file():
        return None
    metrics = read_json(metrics_path, "rm eval metrics")
    train = read_json(folder / "rm" / "metrics.json", "rm metrics")
    # A supervised row has no CS: its pairs are the human ones rm train read.
    has_cs = (folder / "cs" / "cs_stats.json").is_file()
    pairs = read_json(folder / "cs" / "cs_stats.json", "cs stats").get("pairs") if has_cs else (train.get("data") or {}).get("pairs")
    _, n, accuracy, balanced, interval, when_longer, when_shorter, prefer_longer, rho = rm_eval_row(label, metrics)
    reference = supervised_reference(references, train.get("base_model"), metrics.get("data"), pairs)
    if reference is not None and reference.folder.resolve() == folder.resolve():
        share = "(reference)"
    else:
        share = share_cell(metrics, reference, pairs)
    wall = sum(t.get("seconds") or 0 for t in times.values())
    cpu = sum(t.get("cpu_seconds") or 0 for t in times.values())
    timing = f"{wall / 60:.1f} min ({cpu / 60:.1f} CPU)" if {"rm train", "rm eval"} | ({"cs"} if has_cs else set()) <= set(times) else "–"
    return [
        label,
        what,
        pairs,
        (train.get("heldout") or {}).get("accuracy"),
        n,
        accuracy,
        balanced,
        interval,
        share,
        when_longer,
        when_shorter,
        prefer_longer,
        rho,
        timing,
    ]


def table(generation: Path, out: Path, variants: Sequence[Variant], scale_runs: Sequence[Path] = ()) -> str:
    header = [
        "variant",
        "what",
        "pairs kept",
        "rubric agreement (held out)",
        "human pairs",
        "accuracy",
        "length-balanced",
        "95% interval",
        "share of the supervised margin",
        "acc. chosen longer",
        "acc. chosen shorter",
        "'prefer longer'",
        "Spearman(reward, length)",
        "time: (pg + rg +) cs + rm train + rm eval",
    ]
    references = supervised_references(out)
    recipe = RECIPES[generation_kind(generation)]
    rows = [row("proof run", f"{recipe}, {run_prompts(generation)} prompts", generation, proof_run_times(generation), references)]
    rows += [
        row(f"proof run ({run.name})", f"{recipe}, {run_prompts(run)} prompts", run, proof_run_times(run), references) for run in scale_runs
    ]
    for variant in variants:
        folder = out / variant.name
        times = read_json(folder / "times.json", "times") if (folder / "times.json").is_file() else {}
        rows.append(row(variant.name, variant.what, folder, times, references))
    return markdown_table(header, [r for r in rows if r is not None])


def run_prompts(run: Path) -> int | None:
    """How many prompts a proof run's PG wrote."""
    prompts = run / "pg" / "prompts.txt"
    return len(read_lines(prompts, "prompts", allow_empty=True)) if prompts.is_file() else None


def scale_points(generation: Path, out: Path, scale_runs: Sequence[Path] = ()) -> list[tuple[int, dict, int]]:
    """(prompts, rm eval metrics, pairs kept) of the scale rows measured so far, of the proof run (all of
    its prompts) and of the proof runs of other sizes, smallest first."""
    kind = generation_kind(generation)
    scale_rows = [v for v in VARIANTS if v.num_prompts and not v.rg_configurations and kind in v.generations]
    folders = [(v.num_prompts, out / v.name) for v in scale_rows]
    folders += [(run_prompts(run), run) for run in (generation, *scale_runs)]
    points = {}  # by prompts: a whole run replaces a scale row of its own size
    for n, folder in folders:
        metrics_path = folder / "rm_eval" / "metrics.json"
        if n and metrics_path.is_file():
            pairs = read_json(folder / "cs" / "cs_stats.json", "cs stats").get("pairs")
            points[n] = (n, read_json(metrics_path, "rm eval metrics"), pairs)
    return sorted(points.values(), key=lambda p: p[0])


def scale_plot(points: list[tuple[int, dict, int]], path: Path) -> None:
    """Length-balanced accuracy (95% interval) and plain accuracy on the human pairs against the prompts
    the RM's pairs came from: docs/proof.md's scale figure."""
    plt = pyplot()
    x = [n for n, _, _ in points]
    balanced = [m["length_balanced"]["accuracy"] for _, m, _ in points]
    low = [b - m["length_balanced"]["ci95"][0] for b, (_, m, _) in zip(balanced, points)]
    high = [m["length_balanced"]["ci95"][1] - b for b, (_, m, _) in zip(balanced, points)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(x, balanced, yerr=[low, high], marker="o", capsize=4, label="length-balanced accuracy (95% interval)")
    ax.plot(x, [m["accuracy"] for _, m, _ in points], marker="s", linestyle="--", label="plain accuracy")
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.axhline(points[-1][1]["length_bias"]["length_only_accuracy"], color="grey", linestyle=":", label="'prefer longer'")
    for n, m, pairs in points:
        ax.annotate(
            f"{pairs} pairs", (n, m["length_balanced"]["ci95"][1]), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
        )
    # Log scale: the scale points grow by factors (100 ... 3,000 prompts); margins keep the end labels inside.
    ax.set_xscale("log")
    ax.set_xticks(x, labels=[f"{n:,}" for n in x], minor=False)
    ax.minorticks_off()
    ax.margins(x=0.1)
    ax.set(xlabel="PG prompts behind the RM's pairs", ylabel="on held-out human pairs", title="The proof recipe by scale")
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generation", type=Path, help="A proof run's directory (its rg/ answers are shared by every variant).")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(BY_NAME),
        help="Default: those made for the generation's config (the size rows for a run of proof-size.yaml).",
    )
    parser.add_argument("--data_path", default="hh-harmless-test", help="Human pairs for rm eval (choose options on hh-harmless-dev).")
    parser.add_argument("--output_dir", type=Path, help="Default: GENERATION/ablation (or GENERATION/ablation-dev with hh-harmless-dev).")
    parser.add_argument(
        "--scale_runs",
        type=Path,
        nargs="+",
        default=[],
        help="Proof runs with another pg.num_generation (run through rm eval): more rows and points of the scale figure.",
    )
    parser.add_argument(
        "--supervised_pairs",
        type=int,
        nargs="+",
        default=[],
        help="Supervised references at these pair counts too (an ablation row's CS count), after the variants.",
    )
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args()
    if not (args.generation / "rg").is_dir():
        parser.exit(2, f"proof_ablation: {args.generation / 'rg'} not found: pass the directory of an `almost demo --proof` run\n")
    for run in args.scale_runs:
        if not (run / "rm_eval" / "metrics.json").is_file():
            parser.exit(2, f"proof_ablation: {run / 'rm_eval' / 'metrics.json'} not found: run that proof run through rm eval first\n")
    out = args.output_dir or args.generation / ("ablation" if args.data_path == "hh-harmless-test" else f"ablation-{args.data_path}")
    # A supervised row read on the half it was trained on would measure nothing: never by default, refused if asked.
    chosen = args.variants or [
        v.name
        for v in VARIANTS
        if generation_kind(args.generation) in v.generations and not (v.supervised and args.data_path == SUPERVISED_SOURCE)
    ]
    if any(n < 1 for n in args.supervised_pairs):
        parser.exit(2, f"proof_ablation: --supervised_pairs takes pair counts of 1 or more, not {min(args.supervised_pairs)}\n")
    variants = [BY_NAME[name] for name in chosen] + [supervised_at(n) for n in dict.fromkeys(args.supervised_pairs)]
    trained_on_it = [v.name for v in variants if v.supervised and args.data_path == SUPERVISED_SOURCE]
    if trained_on_it:
        parser.exit(2, f"proof_ablation: {trained_on_it[0]} trains on {SUPERVISED_SOURCE}; read it on hh-harmless-test\n")
    for variant in variants:
        run_variant(variant, args.generation, out / variant.name, args.data_path, args.dry_run)
    if not args.dry_run:
        text = table(args.generation, out, variants, args.scale_runs)
        write_text_atomic(out / "ablation.md", text + "\n")
        print(text)
        if len(points := scale_points(args.generation, out, args.scale_runs)) > 1:
            scale_plot(points, out / "scale.png")
            print(f"scale plot: {out / 'scale.png'}")


if __name__ == "__main__":
    main()
