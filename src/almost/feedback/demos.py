"""Demonstration files, few-shot prompts, and the answer rules shared by RG and self-play.

A demonstration file is a header (instructions for the assistant) followed by dialogues, each
separated by a line ``-----``. A dialogue is a transcript of ``Human:`` / ``Assistant:`` turns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..chat import transcript
from ..errors import AlmostError
from ..readers import read_text, require_file
from ..reward.formats import parse_transcript
from ..shipped import asset_or_path

SEPARATOR = "-----"
# An answer ends where the model starts the next dialogue or the next human turn.
ANSWER_STOP = (SEPARATOR, "\nHuman:")
MIN_ANSWER_CHARS = 50
# A short answer that declines ("I'm sorry, but I can't assist with that.", 40 characters: an instruct
# model's greedy answer to a harmful request) is not a degenerate one: it is the answer the harmless
# demonstrations ask for, and a rubric that ranks them on top needs it, so the minimum length does not
# apply to it. The other rules still do (a full sentence, no "don't know").
DECLINE_OPENING = re.compile(
    r"(i['’]?m sorry|i am sorry|sorry|i can['’]?t|i cannot|i won['’]?t|i will not|"
    r"i['’]?m (not able|unable)|i am (not able|unable)|i must decline|i['’]?m afraid i can)\b",
    re.IGNORECASE,
)
MIN_DECLINE_CHARS = 20


@dataclass(frozen=True)
class Demonstrations:
    name: str  # file stem without "_prompt", lower case: "faithful" for faithful_prompt.txt
    header: str
    dialogues: tuple[str, ...]

    def static_prompt(self, n_shot: int) -> str:
        """Header plus the first ``n_shot`` dialogues, ending with a separator line."""
        if n_shot < 0 or n_shot > len(self.dialogues):
            raise AlmostError(f"{self.name}: asked for {n_shot} demonstrations, the file has {len(self.dialogues)}")
        blocks = [self.header, *self.dialogues[:n_shot]]
        return f"\n{SEPARATOR}\n".join(blocks) + f"\n{SEPARATOR}"

    def chat_messages(self, n_shot: int, messages: list[dict]) -> list[dict]:
        """The header as the system message, the first ``n_shot`` dialogues as earlier user/assistant
        turns, then the conversation so far: what a chat template renders for ``--chat_format``."""
        self.static_prompt(n_shot)  # the same check of n_shot as the transcript format
        turns = [m for d in self.dialogues[:n_shot] for m in parse_transcript(d)]
        return [{"role": "system", "content": self.header}, *turns, *messages]


def demonstration_name(path: str | Path) -> str:
    stem = Path(path).stem.lower()
    return stem[: -len("_prompt")] if stem.endswith("_prompt") else stem


def load_demonstrations(path: str | Path) -> Demonstrations:
    path = require_file(asset_or_path(path), "demonstration file")
    text = read_text(path, "demonstration file")
    blocks = [b.strip() for b in re.split(rf"^\s*{re.escape(SEPARATOR)}\s*$", text, flags=re.M)]
    header, dialogues = blocks[0], [b for b in blocks[1:] if b]
    if not header:
        raise AlmostError(f"{path}: the first block (before the first '{SEPARATOR}' line) must be the header")
    if not dialogues:
        raise AlmostError(f"{path}: no dialogues after the header (separate them with a line '{SEPARATOR}')")
    for i, d in enumerate(dialogues, 1):
        if not d.startswith("Human:") or "\nAssistant:" not in d:
            raise AlmostError(f"{path}: dialogue {i} must start with 'Human:' and contain an 'Assistant:' turn")
    return Demonstrations(demonstration_name(path), header, tuple(dialogues))


def few_shot_prompt(demos: Demonstrations, n_shot: int, messages: list[dict]) -> str:
    """The static prompt, then the conversation so far (a blank line before each turn, as between the
    turns of a demonstration), ending with ``Assistant:`` for the next answer."""
    return f"{demos.static_prompt(n_shot)}{transcript(messages, strip=True)}\n\nAssistant:"


def cut_answer(text: str, to_sentence: bool = False) -> str:
    """Keep the answer up to the next dialogue separator or human turn; with ``to_sentence``, also
    back to its last full sentence when the token limit cut it mid-sentence (``trim_to_sentence``)."""
    for stop in ANSWER_STOP:
        i = text.find(stop)
        if i != -1:
            text = text[:i]
    return trim_to_sentence(text.strip()) if to_sentence else text.strip()


_SENTENCE_END = re.compile(r"[.!](?=\s|$)")


def trim_to_sentence(answer: str) -> str:
    """An answer cut off mid-sentence (at the token limit), back to its last complete sentence.

    Unchanged when it already ends a sentence or has no complete sentence. Small token budgets (CPU
    runs) otherwise make nearly every answer BAD for lacking a final period.
    """
    if answer.endswith((".", "!")):
        return answer
    ends = [m.end() for m in _SENTENCE_END.finditer(answer)]
    return answer[: ends[-1]] if ends else answer


def bad_answer_reasons(answer: str) -> list[str]:
    """Why an (already cut) answer is BAD; empty when it is usable."""
    a = answer.strip()
    reasons = []
    if len(a) < (MIN_DECLINE_CHARS if DECLINE_OPENING.match(a) else MIN_ANSWER_CHARS):
        reasons.append("too_short")
    if a.endswith(("?", ":")):
        reasons.append("ends_with_question_or_colon")
    if a.lower().startswith("well"):
        reasons.append("starts_with_well")
    if a and not a.endswith((".", "!")):
        reasons.append("no_final_period")
    low = a.lower()
    if "don't know" in low or "do not know" in low or "don’t know" in low:
        reasons.append("dont_know")
    if "Human:" in a:
        reasons.append("echoes_human")
    if "<Image>" in a:
        reasons.append("mentions_image")
    return reasons
