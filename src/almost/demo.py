"""``almost demo``: the whole method at tiny scale on the embedded model, in one command.

It is ``almost pipeline`` with the built-in config ``almost/configs/demo.yaml`` (PG → RG under three
configurations → CS → RM → RMSP → SFT → RL → evaluation of base vs SFT vs RL on SmolLM2-135M),
sized to finish on a 2-core CPU in well under 45 minutes. Run it again and finished stages are
skipped; interrupt it and it resumes.
"""

from __future__ import annotations

from pathlib import Path

from .pipeline import STAGES, run_pipeline
from .report import OneLineArgumentParser

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
DEFAULT_RUN_DIR = "almost-demo"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="almost demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", "--output-dir", default=DEFAULT_RUN_DIR, help=f"Run directory (default ./{DEFAULT_RUN_DIR}).")
    parser.add_argument("--until", choices=STAGES, help="Stop after this stage (e.g. cs for the synthetic feedback only).")
    parser.add_argument("--from", dest="first", choices=STAGES, help="Start again from this stage.")
    parser.add_argument("--dry_run", "--dry-run", action="store_true", help="Print the steps without running them.")
    args = parser.parse_args(argv)
    print(f"almost demo: config {DEMO_CONFIG}, run directory {args.output_dir}", flush=True)
    return run_pipeline(DEMO_CONFIG, args.output_dir, args.until, args.first, args.dry_run)
