"""One text format for (conversation, answer) pairs, used identically by RM training, scoring,
evaluation, self-play and RL: the tokenizer's chat template when it has one, otherwise the seed's
``\\n\\nHuman: ...\\n\\nAssistant: ...`` transcript.
"""

from __future__ import annotations

import jinja2

from .errors import AlmostError

ROLE_NAMES = {"user": "Human", "assistant": "Assistant"}


def transcript(messages: list[dict], strip: bool = False) -> str:
    """The seed's Anthropic-HH style transcript: ``\\n\\nHuman: ...\\n\\nAssistant: ...``; system turns
    have no place in it. ``strip`` trims each turn's text, as the few-shot prompts of RG and RMSP always
    have, while RM inputs keep the text as given: the models read these bytes, so neither may change."""
    return "".join(
        f"\n\n{ROLE_NAMES[m['role']]}: {m['content'].strip() if strip else m['content']}" for m in messages if m["role"] in ROLE_NAMES
    )


def render_conversation(tokenizer, messages: list[dict]) -> str:
    """A whole conversation (ending with the assistant answer being judged) as one string."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return transcript(messages)


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The conversation before an assistant answer, ready for the answer to be appended."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return transcript(messages) + "\n\nAssistant:"


def check_chat_template(tokenizer, where: str, required_by: str | None = None) -> None:
    """A chat template that does not compile is the user's file's fault: one line naming it, before
    anything is written, instead of a traceback at the first prompt. ``required_by`` (an option's
    name) makes a missing template an error too, for options that have no transcript fallback."""
    if not getattr(tokenizer, "chat_template", None):
        if required_by:
            raise AlmostError(f"{required_by} renders prompts with the model's chat template, and {where} has none")
        return
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    except jinja2.TemplateSyntaxError as e:
        raise AlmostError(f"the chat template of {where} is not valid Jinja (line {e.lineno}: {e.message})") from None


def as_messages(prompt: str | list[dict], answer: str | None = None) -> list[dict]:
    """A prompt (text or messages) plus an optional answer → a message list."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages
