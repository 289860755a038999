"""The one prompt reader of rg, rmsp and rl: text lines or JSON rows, as text or as message lists."""

from __future__ import annotations

import gzip

import pytest

from almost.errors import AlmostError
from almost.readers import read_prompts


def test_text_file_gives_stripped_non_empty_lines(tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("a question\n\n  another one  \n")
    assert read_prompts(txt) == ["a question", "another one"]
    as_messages = [[{"role": "user", "content": "a question"}], [{"role": "user", "content": "another one"}]]
    assert read_prompts(txt, as_messages=True) == as_messages
    assert read_prompts(txt, limit=1) == ["a question"]
    packed = tmp_path / "prompts.txt.gz"
    packed.write_bytes(gzip.compress(txt.read_bytes()))
    assert read_prompts(packed) == ["a question", "another one"]


def test_rows_give_the_prompt_column(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": " first "}\n{"prompt": "second", "extra": 1}\n')
    assert read_prompts(jsonl) == ["first", "second"]
    json_list = tmp_path / "p.json"
    json_list.write_text('[{"prompt": "only"}]')
    assert read_prompts(json_list, as_messages=True) == [[{"role": "user", "content": "only"}]]


def test_rows_as_messages_may_hold_conversations(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"prompt": "hello"}\n'
        '{"prompt": [{"role": "user", "content": "hi"}]}\n'
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
        '{"messages": [{"role": "assistant", "content": "nothing to answer"}]}\n'
    )
    contexts = read_prompts(jsonl, as_messages=True)
    assert contexts == [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "hi"}], [{"role": "user", "content": "a"}]]
    assert read_prompts(jsonl, as_messages=True, limit=1) == contexts[:1]
    # As text, a row must hold its prompt as text.
    with pytest.raises(AlmostError, match="row 2: needs a non-empty string `prompt`"):
        read_prompts(jsonl)


@pytest.mark.parametrize(
    "name, content, as_messages, message",
    [
        ("empty.txt", "\n\n", False, "is empty"),
        ("empty.txt", "\n\n", True, "is empty"),
        ("bad.jsonl", '{"text": "x"}\n', False, "row 1: needs a non-empty string `prompt`"),
        ("bad.jsonl", '{"text": "x"}\n', True, "row 1: needs a 'prompt'"),
        ("only_answers.jsonl", '{"messages": [{"role": "assistant", "content": "b"}]}\n', True, "has no prompts"),
        ("missing.txt", None, False, "prompts file not found"),
    ],
)
def test_bad_prompt_files_are_named_in_one_line(tmp_path, name, content, as_messages, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(AlmostError, match=message):
        read_prompts(path, as_messages=as_messages)
