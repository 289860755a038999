"""The ablation table of docs/proof.md: CS and RM variants trained on one shared generation.

    python scripts/proof_ablation.py almost-proof                # every variant, then the table
    python scripts/proof_ablation.py almost-proof --variants seed-filter length-head
    python scripts/proof_ablation.py almost-proof --dry_run      # the commands only

GENERATION is a run of ``almost demo --proof`` (or any run whose ``rg/`` holds the answers of the
configurations a variant's rubric names). Each variant runs ``almost cs`` → ``almost rm train`` →
``almost rm eval`` into ``GENERATION/ablation/<variant>/{cs,rm,rm_eval}``, with the proof config's RM
settings, so the variants differ from the proof run's own RM only in what their row says. The scale
rows (``scale-100``, ``scale-200``, ``scale-300``) keep the proof run's recipe and use only the RG rows
of its first N prompts (copied to ``<variant>/rg/``); the proof run itself is the point of all its
prompts. The RG rows (``more-shots``, ``seed-temperature``) answer the same first 300 prompts anew under
other configurations or sampling (``almost rg`` into ``<variant>/rg/``, the configurations they do not
change copied), then run the proof run's recipe on them. A step
whose product exists is skipped, so a rerun after a crash resumes (``rm train`` resumes from its
last checkpoint by itself). The wall and CPU seconds of each step are kept in ``times.json`` beside
it. At the end the table (one row per variant, plus the proof run's own RM read from GENERATION)
is printed and written to ``GENERATION/ablation/ablation.md``; once a scale row is measured, the scale
figure (``scale.png``) beside it. ``--scale_runs`` adds proof runs of other sizes (the proof config with
another ``pg.num_generation``, run as far as ``rm eval``) to the table and the figure as further points.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from almost.feedback.demos import demonstration_name
from almost.feedback.rg import configuration_name
from almost.readers import read_json, read_jsonl, read_lines
from almost.run.sections import rm_eval_row
from almost.run.tables import markdown_table, pyplot, save_figure
from almost.writes import write_json_atomic, write_jsonl_atomic, write_text_atomic

HARMLESS, FAITHFUL, BASIC = "smollm2-135m-harmless-2shot", "smollm2-135m-faithful-2shot", "smollm2-135m-basic-1shot"
HARMLESS_5, FAITHFUL_5 = "smollm2-135m-harmless-5shot", "smollm2-135m-faithful-5shot"
# The proof config's RM (src/almost/run/configs/proof.yaml) without its length options: every variant
# starts from these and adds only its own flags.
RM_TRAIN = [
    "--model_name_or_path",
    "smollm2-135m",
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
# The proof config's RG settings; an RG row adds its configurations and its own flags.
RG = [
    "--model_name_or_path",
    "smollm2-135m",
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


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    rubric: tuple[str, ...]
    cs_flags: tuple[str, ...] = ()
    rm_flags: tuple[str, ...] = ()
    # Only the first N prompts of the generation (their RG rows), for the scale and RG rows.
    num_prompts: int | None = None
    # RG rows: (demonstration file, shots) of the configurations answered anew, with these rg flags.
    rg_configurations: tuple[tuple[str, int], ...] = ()
    rg_flags: tuple[str, ...] = ()

    @property
    def regenerated(self) -> list[str]:
        return [configuration_name("smollm2-135m", demonstration_name(path), n) for path, n in self.rg_configurations]


# The proof run's own CS and RM options: the LoRA and scale rows change one thing on top of them.
PROOF_CS = ("--length_balance", "true", "--seed", "0")
PROOF_RM = ("--length_head", "true")


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
        rg_configurations=(("harmless_prompt.txt", 5), ("faithful_prompt.txt", 5)),
    ),
    Variant(
        "seed-temperature",
        "the proof run's recipe with its three configurations sampled at the seed's temperature 1.0 (proof: 0.7)",
        (HARMLESS, FAITHFUL, BASIC),
        PROOF_CS,
        PROOF_RM,
        300,
        rg_configurations=(("harmless_prompt.txt", 2), ("faithful_prompt.txt", 2), ("basic_prompt.txt", 1)),
        rg_flags=("--temperature", "1.0"),
    ),
)
BY_NAME = {v.name: v for v in VARIANTS}


def overridden(flags: list[str], changes: tuple[str, ...]) -> list[str]:
    """``--flag value`` pairs with the values of ``changes`` in place of their own; new ones appended."""
    merged = dict(zip(flags[::2], flags[1::2])) | dict(zip(changes[::2], changes[1::2]))
    return [token for pair in merged.items() for token in pair]


def steps(variant: Variant, generation: Path, folder: Path, data_path: str) -> list[tuple[str, list[str], Path]]:
    """(step, almost argv, product) for one variant."""
    cs, rm, rm_eval = folder / "cs", folder / "rm", folder / "rm_eval"
    answers = folder / "rg" if variant.num_prompts else generation / "rg"
    rg = []
    if variant.rg_configurations:
        files, shots = zip(*variant.rg_configurations)
        argv = [*overridden(RG, variant.rg_flags), "--prompts_path", str(folder / "prompts.txt"), "--output_dir", str(answers)]
        argv += ["--prompt_file_path", *files, "--n_shot", *map(str, sorted(set(shots))), "--select", *variant.regenerated]
        rg = [("rg", ["rg", *argv], answers / "README.md")]  # RG writes its dataset card last
    return rg + [
        (
            "cs",
            ["cs", "--input_dir", str(answers), "--output_dir", str(cs), "--rubric", *variant.rubric, *variant.cs_flags],
            cs / "comparison.jsonl",
        ),
        (
            "rm train",
            ["rm", "train", *RM_TRAIN, *variant.rm_flags, "--data_path", str(cs / "comparison.jsonl"), "--output_dir", str(rm)],
            rm / "metrics.json",
        ),
        (
            "rm eval",
            ["rm", "eval", *RM_EVAL, "--data_path", data_path, "--model_name_or_path", str(rm), "--output_dir", str(rm_eval)],
            rm_eval / "metrics.json",
        ),
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


def run_variant(variant: Variant, generation: Path, folder: Path, data_path: str, dry_run: bool) -> None:
    times_path = folder / "times.json"
    times = read_json(times_path, "times") if times_path.is_file() else {}
    variant_steps = steps(variant, generation, folder, data_path)
    first_product = variant_steps[0][2]
    if variant.num_prompts and not dry_run and not first_product.exists():
        write_first_prompts(generation, folder, variant)
    for name, argv, product in variant_steps:
        command = [sys.executable, "-m", "almost", *argv]
        if product.exists():
            print(f"{variant.name}: {name}: done ({product})", flush=True)
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


def row(label: str, what: str, folder: Path, times: dict) -> list | None:
    metrics_path = folder / "rm_eval" / "metrics.json"
    if not metrics_path.is_file():
        return None
    stats = read_json(folder / "cs" / "cs_stats.json", "cs stats")
    held = read_json(folder / "rm" / "metrics.json", "rm metrics").get("heldout") or {}
    _, n, accuracy, balanced, interval, when_longer, when_shorter, prefer_longer, rho = rm_eval_row(
        label, read_json(metrics_path, "rm eval metrics")
    )
    wall = sum(t.get("seconds") or 0 for t in times.values())
    cpu = sum(t.get("cpu_seconds") or 0 for t in times.values())
    timing = f"{wall / 60:.1f} min ({cpu / 60:.1f} CPU)" if {"cs", "rm train", "rm eval"} <= set(times) else "–"
    return [
        label,
        what,
        stats.get("pairs"),
        held.get("accuracy"),
        n,
        accuracy,
        balanced,
        interval,
        when_longer,
        when_shorter,
        prefer_longer,
        rho,
        timing,
    ]


def table(generation: Path, out: Path, names: list[str], scale_runs: Sequence[Path] = ()) -> str:
    header = [
        "variant",
        "what",
        "pairs kept",
        "rubric agreement (held out)",
        "human pairs",
        "accuracy",
        "length-balanced",
        "95% interval",
        "acc. chosen longer",
        "acc. chosen shorter",
        "'prefer longer'",
        "Spearman(reward, length)",
        "time: (rg +) cs + rm train + rm eval",
    ]
    recipe = "full rubric + CS --length_balance + RM --length_head (proof.yaml)"
    rows = [row("proof run", f"{recipe}, {run_prompts(generation)} prompts", generation, proof_run_times(generation))]
    rows += [row(f"proof run ({run.name})", f"{recipe}, {run_prompts(run)} prompts", run, proof_run_times(run)) for run in scale_runs]
    for name in names:
        folder = out / name
        times = read_json(folder / "times.json", "times") if (folder / "times.json").is_file() else {}
        rows.append(row(name, BY_NAME[name].what, folder, times))
    return markdown_table(header, [r for r in rows if r is not None])


def run_prompts(run: Path) -> int | None:
    """How many prompts a proof run's PG wrote."""
    prompts = run / "pg" / "prompts.txt"
    return len(read_lines(prompts, "prompts", allow_empty=True)) if prompts.is_file() else None


def scale_points(generation: Path, out: Path, scale_runs: Sequence[Path] = ()) -> list[tuple[int, dict, int]]:
    """(prompts, rm eval metrics, pairs kept) of the scale rows measured so far, of the proof run (all of
    its prompts) and of the proof runs of other sizes, smallest first."""
    folders = [(v.num_prompts, out / v.name) for v in VARIANTS if v.num_prompts and not v.rg_configurations]
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
    parser.add_argument("--variants", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    parser.add_argument("--data_path", default="hh-harmless-test", help="Human pairs for rm eval (choose options on hh-harmless-dev).")
    parser.add_argument("--output_dir", type=Path, help="Default: GENERATION/ablation (or GENERATION/ablation-dev with hh-harmless-dev).")
    parser.add_argument(
        "--scale_runs",
        type=Path,
        nargs="+",
        default=[],
        help="Proof runs with another pg.num_generation (run through rm eval): more rows and points of the scale figure.",
    )
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args()
    if not (args.generation / "rg").is_dir():
        parser.exit(2, f"proof_ablation: {args.generation / 'rg'} not found: pass the directory of an `almost demo --proof` run\n")
    for run in args.scale_runs:
        if not (run / "rm_eval" / "metrics.json").is_file():
            parser.exit(2, f"proof_ablation: {run / 'rm_eval' / 'metrics.json'} not found: run that proof run through rm eval first\n")
    out = args.output_dir or args.generation / ("ablation" if args.data_path == "hh-harmless-test" else f"ablation-{args.data_path}")
    for name in args.variants:
        run_variant(BY_NAME[name], args.generation, out / name, args.data_path, args.dry_run)
    if not args.dry_run:
        text = table(args.generation, out, args.variants, args.scale_runs)
        write_text_atomic(out / "ablation.md", text + "\n")
        print(text)
        if len(points := scale_points(args.generation, out, args.scale_runs)) > 1:
            scale_plot(points, out / "scale.png")
            print(f"scale plot: {out / 'scale.png'}")


if __name__ == "__main__":
    main()
