"""``almost demo``: the whole method at tiny scale on the embedded model, in one command.

It is ``almost pipeline`` with the built-in config ``almost/run/configs/demo.yaml`` (PG → RG under three
configurations → CS → RM → RMSP → SFT → RL → evaluation of base vs SFT vs RL on SmolLM2-135M),
sized to finish on a 2-core CPU in well under 45 minutes. Run it again and finished stages are
skipped; interrupt it and it resumes.

``almost demo --proof`` runs the second built-in config ``almost/run/configs/proof.yaml`` instead: the
same stages at the scale of docs/proof.md's measurement, with the options that may carry signal beyond
length (harmless seeds and demonstrations, CS ``--length_balance``, RM ``--length_head``), the RM
evaluated on the shipped HH-RLHF harmless test half, and policy win rates judged by the RM and by an
LM; at the end it prints the proof table (``run.proof.proof_table``), see docs/proof.md.
``almost demo --proof size`` runs ``almost/run/configs/proof-size.yaml``: the same run with answers of
the embedded Qwen2.5-Coder-1.5B-Instruct on top of the rubric and that model as the LM judge (the size
contrast, docs/proof.md).
"""

from __future__ import annotations

from pathlib import Path

from .. import stages
from ..config import OneLineArgumentParser
from .pipeline import run_pipeline
from .proof import proof_table

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
DEFAULT_RUN_DIR = "almost-demo"
PROOF_CONFIG = Path(__file__).resolve().parent / "configs" / "proof.yaml"
PROOF_RUN_DIR = "almost-proof"
PROOF_SIZE_CONFIG = Path(__file__).resolve().parent / "configs" / "proof-size.yaml"
PROOF_SIZE_RUN_DIR = "almost-proof-size"
# `--proof` alone is the 135M proof; `--proof size` the size contrast.
PROOFS = ("135m", "size")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="almost demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--proof",
        nargs="?",
        const=PROOFS[0],
        choices=PROOFS,
        help="Run a proof config (docs/proof.md) and print its table at the end: alone, proof.yaml on SmolLM2-135M; "
        "'size', proof-size.yaml (Qwen2.5-Coder-1.5B answers on top of the rubric, and as the LM judge).",
    )
    parser.add_argument(
        "--output_dir",
        "--output-dir",
        help=f"Run directory (default ./{DEFAULT_RUN_DIR}, with --proof ./{PROOF_RUN_DIR}, with --proof size ./{PROOF_SIZE_RUN_DIR}).",
    )
    parser.add_argument("--until", choices=stages.sections(), help="Stop after this stage (e.g. cs for the synthetic feedback only).")
    parser.add_argument("--from", dest="first", choices=stages.sections(), help="Start again from this stage.")
    parser.add_argument("--dry_run", "--dry-run", action="store_true", help="Print the steps without running them.")
    args = parser.parse_args(argv)
    # Looked up at call time: the tests put cut-down configs in their place.
    config, default_dir = {
        None: (DEMO_CONFIG, DEFAULT_RUN_DIR),
        "135m": (PROOF_CONFIG, PROOF_RUN_DIR),
        "size": (PROOF_SIZE_CONFIG, PROOF_SIZE_RUN_DIR),
    }[args.proof]
    run_dir = args.output_dir or default_dir
    print(f"almost demo: config {config}, run directory {run_dir}", flush=True)
    result = run_pipeline(config, run_dir, args.until, args.first, args.dry_run)
    if args.proof and not args.dry_run:
        # Also after a failed step: the figures of the stages that finished are worth seeing.
        print("\n" + proof_table(run_dir))
    return result.exit_code
