"""``almost <command> ...``: find the command's module and hand it the rest of the arguments.

Each command lives in its own module with a ``main(argv) -> int``; this file only dispatches and
turns user errors (``AlmostError``) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

from .allocator import reexec_with_tcmalloc
from .errors import AlmostError
from .locks import held_output_dirs, release_output_dirs

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("almost.run.demo", "Run the whole method at small scale on the embedded model."),
    "pg": ("almost.feedback.pg", "1. Prompt generation: new user queries from a base LM, deduplicated."),
    "rg": ("almost.feedback.rg", "2. Response generation: answers under each configuration."),
    "merge": ("almost.feedback.merge", "Merge the outputs of sharded rg runs."),
    "cs": ("almost.feedback.cs", "3. Synthetic comparisons: rubric-ranked chosen/rejected pairs."),
    "rm": ("almost.reward.cli", "4. Reward model: train | score | eval."),
    "rmsp": ("almost.policy.selfplay", "5. RM-guided self-play: multi-turn demonstrations."),
    "sft": ("almost.policy.sft", "6a. Supervised fine-tuning on demonstrations."),
    "rl": ("almost.policy.rl", "6b. RL against the reward model with a KL penalty."),
    "eval": ("almost.evaluate.cli", "7. Evaluation: hhh | truthfulqa | pairwise."),
    "pipeline": ("almost.run.pipeline", "Run every stage from one YAML config, skipping finished ones."),
    "report": ("almost.run.report", "Write report.md with plots for a run directory."),
    "push": ("almost.hub", "Upload a run's datasets and models, with their cards, to the Hugging Face Hub."),
}


def dispatch(prog: str, kind: str, table: dict[str, tuple[str, str]], argv: list[str]) -> int:
    """Hand ``argv[1:]`` to ``main`` of the module that ``argv[0]`` names in ``table``.

    Serves ``almost <command>`` and the commands with subcommands (``almost rm``, ``almost eval``).
    """
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"usage: {prog} <{kind}> [options]   ({prog} <{kind}> --help for its options)", "", f"{kind}s:"]
        width = max(map(len, table)) + 2
        lines += [f"  {name:<{width}}{help_}" for name, (_, help_) in table.items()]
        print("\n".join(lines))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in table:
        raise AlmostError(f"unknown {kind} {name!r}; choose one of {', '.join(table)}")
    return int(importlib.import_module(table[name][0]).main(rest) or 0)


def input_error(e: BaseException) -> str | None:
    """One line for the errors that can only come from a user's file, not from our code: the stages
    check their inputs themselves, this catches what reaches a library first (a model's chat
    template, a tokenizer file) so that it too ends in one line and exit 2, not a traceback."""
    if isinstance(e, AlmostError):
        return str(e)
    if isinstance(e, UnicodeDecodeError):
        return f"an input file is not UTF-8 text ({e.reason} at byte {e.start})"
    try:
        import jinja2
    except ImportError:  # pragma: no cover - transformers depends on it
        jinja2 = None
    if jinja2 is not None and isinstance(e, jinja2.TemplateError):
        where = f" line {e.lineno}" if getattr(e, "lineno", None) else ""
        return f"the model's chat template is broken ({type(e).__name__}{where}: {e.message or e})"
    return None


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # started as a program (not called from Python): the allocator can still be chosen
        reexec_with_tcmalloc()
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"almost {argv[0]}" if argv and argv[0] in COMMANDS else "almost"
    locked = held_output_dirs()
    try:
        return dispatch("almost", "command", COMMANDS, argv)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; rerun the same command to resume\n")
        return 130
    except Exception as e:
        message = input_error(e)
        if message is None:
            raise
        sys.stderr.write(f"{prog}: error: {' '.join(message.split())}\n")
        return 2
    finally:
        # The output directories this command locked (and created, if it wrote nothing there).
        release_output_dirs(keep=locked)


if __name__ == "__main__":
    sys.exit(main())
