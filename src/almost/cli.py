"""``almost <command> ...``: find the command and hand it the rest of the arguments.

The stage commands come from their records (``almost.stages``): a stage's command line is parsed
into its config dataclasses and its run function is called with them. The other commands (demo,
pipeline, report, push, rm serve) have a ``main(argv) -> int`` of their own. This file only
dispatches and turns user errors (``AlmostError``) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

import jinja2

from . import stages
from .allocator import reexec_with_tcmalloc
from .config import parse
from .errors import AlmostError
from .locks import held_output_dirs, release_output_dirs
from .stages import Command, Stage

DEMO = Command(("demo",), "Run the whole method at small scale on the embedded model.", "almost.run.demo")
TOOLS = (
    Command(("rm", "serve"), "Score {prompt, response} or messages over HTTP (for rmsp, pairwise and other tools).", "almost.reward.serve"),
    Command(("pipeline",), "Run every stage from one YAML config, skipping finished ones.", "almost.run.pipeline"),
    Command(("report",), "Write report.md with plots for a run directory.", "almost.run.report"),
    Command(("push",), "Upload a run's datasets and models, with their cards, to the Hugging Face Hub.", "almost.hub"),
)
# The commands that take a subcommand: what they are about (`almost --help` lists their subcommands
# after it), and what a subcommand is called in their messages.
GROUPS = {"rm": ("4. Reward model", "subcommand"), "eval": ("7. Evaluation", "evaluation")}


def commands() -> list[Command]:
    """Every command, in the order ``almost --help`` lists them: the demo, the stages, then the tools."""
    return [DEMO, *stages.STAGES, *TOOLS]


def table(prefix: tuple[str, ...]) -> dict[str, Command | tuple[Command, ...]]:
    """The words that may follow ``almost <prefix>``: a command, or the commands of a group."""
    found: dict[str, list[Command]] = {}
    for command in commands():
        if command.command[: len(prefix)] == prefix and len(command.command) > len(prefix):
            found.setdefault(command.command[len(prefix)], []).append(command)
    return {word: group[0] if len(group[0].command) == len(prefix) + 1 else tuple(group) for word, group in found.items()}


def help_line(word: str, entry: Command | tuple[Command, ...]) -> str:
    if isinstance(entry, Command):
        return entry.help
    return f"{GROUPS[word][0]}: {' | '.join(c.command[-1] for c in entry)}."


def run_command(command: Command, argv: list[str]) -> int:
    """A stage: its options parsed (``--config`` YAML, then flags) and its run function called with them;
    any other command: its module's ``main``."""
    if not isinstance(command, Stage):
        return int(command.load().main(argv) or 0)
    description = (command.load().__doc__ or "").split("\n\n")[0]
    command.run(*parse(command.prog, command.config_types(), argv, description=description))
    return 0


def dispatch(prefix: tuple[str, ...], argv: list[str]) -> int:
    """Hand ``argv[1:]`` to the command ``argv[0]`` names after ``almost <prefix>``.

    Serves ``almost <command>`` and the commands with subcommands (``almost rm``, ``almost eval``).
    """
    entries = table(prefix)
    prog = " ".join(("almost", *prefix))
    kind = GROUPS[prefix[0]][1] if prefix else "command"
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"usage: {prog} <{kind}> [options]   ({prog} <{kind}> --help for its options)", "", f"{kind}s:"]
        width = max(map(len, entries)) + 2
        lines += [f"  {word:<{width}}{help_line(word, entry)}" for word, entry in entries.items()]
        print("\n".join(lines))
        return 0 if argv else 2
    word, rest = argv[0], argv[1:]
    if word not in entries:
        raise AlmostError(f"unknown {kind} {word!r}; choose one of {', '.join(entries)}")
    entry = entries[word]
    if isinstance(entry, Command):
        return run_command(entry, rest)
    return dispatch((*prefix, word), rest)


def input_error(e: BaseException) -> str | None:
    """One line for the errors that can only come from a user's file, not from our code: the stages
    check their inputs themselves, this catches what reaches a library first (a model's chat
    template, a tokenizer file) so that it too ends in one line and exit 2, not a traceback."""
    if isinstance(e, AlmostError):
        return str(e)
    if isinstance(e, UnicodeDecodeError):
        return f"an input file is not UTF-8 text ({e.reason} at byte {e.start})"
    if isinstance(e, jinja2.TemplateError):
        where = f" line {e.lineno}" if getattr(e, "lineno", None) else ""
        return f"the model's chat template is broken ({type(e).__name__}{where}: {e.message or e})"
    return None


def exit_on_input_error(prog: str, e: Exception) -> int:
    """For an error ``input_error`` knows, one line on stderr and exit status 2; any other is raised again."""
    message = input_error(e)
    if message is None:
        raise e
    sys.stderr.write(f"{prog}: error: {' '.join(message.split())}\n")
    return 2


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # started as a program (not called from Python): the allocator can still be chosen
        reexec_with_tcmalloc()
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"almost {argv[0]}" if argv and argv[0] in table(()) else "almost"
    locked = held_output_dirs()
    try:
        return dispatch((), argv)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; rerun the same command to resume\n")
        return 130
    except Exception as e:
        return exit_on_input_error(prog, e)
    finally:
        # The output directories this command locked (and created, if it wrote nothing there).
        release_output_dirs(keep=locked)


if __name__ == "__main__":
    sys.exit(main())
