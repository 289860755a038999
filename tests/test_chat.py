"""The one transcript format: as the RM reads it (text as given) and as the few-shot prompts of RG and RMSP
lay it out (each turn trimmed, after the demonstrations' last separator)."""

from __future__ import annotations

from almost.chat import transcript
from almost.feedback.demos import Demonstrations, few_shot_prompt
from almost.policy.turns import user_prompt

MESSAGES = [
    {"role": "system", "content": "left out"},
    {"role": "user", "content": " How do I boil an egg?\n"},
    {"role": "assistant", "content": "Nine minutes in boiling water. "},
]
DEMOS = Demonstrations("t", "Be helpful.", ("Human: Hi\n\nAssistant: Hello.",))


def test_transcript_keeps_text_as_given_unless_asked_to_strip():
    assert transcript(MESSAGES) == "\n\nHuman:  How do I boil an egg?\n\n\nAssistant: Nine minutes in boiling water. "
    assert transcript(MESSAGES, strip=True) == "\n\nHuman: How do I boil an egg?\n\nAssistant: Nine minutes in boiling water."
    assert transcript([]) == ""


def test_few_shot_prompts_continue_the_demonstrations_byte_for_byte():
    static = "Be helpful.\n-----\nHuman: Hi\n\nAssistant: Hello.\n-----"
    turns = "\n\nHuman: How do I boil an egg?\n\nAssistant: Nine minutes in boiling water."
    assert few_shot_prompt(DEMOS, 1, MESSAGES) == static + turns + "\n\nAssistant:"
    assert user_prompt(DEMOS, 1, MESSAGES) == static + turns + "\n\nHuman:"
