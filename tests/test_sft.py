"""almost sft: data reading, answer-only loss masks on multi-turn dialogues, training, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from almost.cli import main as cli_main
from almost.errors import AlmostError
from almost.models import load_tokenizer
from almost.policy.sft import TRANSCRIPT_CHAT_TEMPLATE, encode_dialogue, row_to_dialogue

DIALOGUE = [
    {"role": "user", "content": "How do plants grow?"},
    {"role": "assistant", "content": "They turn light into sugar."},
    {"role": "user", "content": "And what about roots?"},
    {"role": "assistant", "content": "Roots take up water and minerals."},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_to_dialogues():
    assert row_to_dialogue({"messages": DIALOGUE}, "r") == (DIALOGUE, 0)
    messages, first = row_to_dialogue({"prompt": "Hi?", "completion": "Hello there."}, "r")
    assert messages == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello there."}] and first == 1
    messages, first = row_to_dialogue({"prompt": DIALOGUE[:3], "completion": [DIALOGUE[3]]}, "r")
    assert messages == DIALOGUE and first == 3
    with pytest.raises(AlmostError, match="no assistant turn"):
        row_to_dialogue({"messages": DIALOGUE[:1]}, "r")
    with pytest.raises(AlmostError, match="message 1"):
        row_to_dialogue({"messages": [{"role": "bot", "content": "x"}]}, "r")
    with pytest.raises(AlmostError, match="needs a `messages` column"):
        row_to_dialogue({"text": "x"}, "r")


def test_masks_cover_every_assistant_turn_and_nothing_else(tiny_model_path):
    tokenizer = load_tokenizer(tiny_model_path, padding_side="right")
    ids, mask = encode_dialogue(tokenizer, DIALOGUE)
    assert len(ids) == len(mask)
    # The whole sequence is exactly the chat template's rendering.
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(DIALOGUE, tokenize=False)
    trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert trained == "They turn light into sugar.<|im_end|>\nRoots take up water and minerals.<|im_end|>\n"
    untrained = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    assert "How do plants grow?" in untrained and "And what about roots?" in untrained and "SmolLM" in untrained
    # prompt/completion: only the completion's answer is trained.
    _, mask_last = encode_dialogue(tokenizer, DIALOGUE, first_trained=3)
    assert tokenizer.decode([t for t, m in zip(ids, mask_last) if m]) == "Roots take up water and minerals.<|im_end|>\n"


def test_transcript_template_for_tokenizers_without_one(tiny_model_path):
    tokenizer = load_tokenizer(tiny_model_path, padding_side="right")
    tokenizer.chat_template = TRANSCRIPT_CHAT_TEMPLATE
    ids, mask = encode_dialogue(tokenizer, DIALOGUE)
    trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert trained == " They turn light into sugar.<|im_end|> Roots take up water and minerals.<|im_end|>"
    assert tokenizer.decode(ids).startswith("\n\nHuman: How do plants grow?\n\nAssistant: They")


def test_sft_trains_assistant_tokens_only_and_loss_falls(tmp_path, tiny_model_path):
    import torch
    from safetensors.torch import load_file

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Tell me fact {i}."},
                {"role": "assistant", "content": "Here is a short fact about the world."},
                {"role": "user", "content": "One more please."},
                {"role": "assistant", "content": "Water boils at one hundred degrees."},
            ]
        }
        for i in range(4)
    ]
    data = write_jsonl(tmp_path / "demonstrations.jsonl", rows)
    out = tmp_path / "sft"
    args = [
        "sft",
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(data),
        "--output_dir",
        str(out),
        "--max_steps",
        "8",
        "--learning_rate",
        "3e-3",
        "--per_device_train_batch_size",
        "4",
        "--warmup_ratio",
        "0",
        "--lr_scheduler_type",
        "constant",
        "--report_to",
        "none",
    ]
    assert cli_main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    losses = metrics["train"]["losses"]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5
    assert metrics["data"]["assistant_turns"] == 8
    before = load_file(f"{tiny_model_path}/model.safetensors")
    after = load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    card = (out / "README.md").read_text()
    assert "almost sft" in card and f"**Base model:** `.../{Path(tiny_model_path).name}`" in card and tiny_model_path not in card
    assert f"| loss, last logged step | {losses[-1]:.3f} |" in card
    assert (out / "chat_template.jinja").exists() and (out / "tokenizer.json").exists()


def test_labels_given_to_the_trainer_mask_user_tokens(tmp_path, tiny_model_path):
    """What TRL's SFTTrainer actually trains on: labels are -100 on every non-assistant token."""
    import datasets
    from trl import SFTTrainer

    from almost.policy.sft import SFTArguments

    tokenizer = load_tokenizer(tiny_model_path, padding_side="right")
    ids, mask = encode_dialogue(tokenizer, DIALOGUE)
    config = SFTArguments(output_dir=str(tmp_path / "o"), report_to="none", max_steps=1)
    dataset = datasets.Dataset.from_dict({"input_ids": [ids], "assistant_masks": [mask]})
    trainer = SFTTrainer(model=tiny_model_path, args=config, train_dataset=dataset, processing_class=tokenizer)
    labels = trainer.train_dataset[0]["labels"]
    assert [label != -100 for label in labels] == [bool(m) for m in mask]
    assert [label for label in labels if label != -100] == [t for t, m in zip(ids, mask) if m]


def test_lora_sft_saves_a_merged_model_or_the_adapter_alone(tmp_path, tiny_model_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Hi?", "completion": "Hello, nice to meet you."}] * 2)
    out = tmp_path / "lora"
    args = [
        "sft",
        "--model_name_or_path",
        tiny_model_path,
        "--data_path",
        str(data),
        "--max_steps",
        "1",
        "--use_peft",
        "--report_to",
        "none",
    ]
    assert cli_main([*args, "--output_dir", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and (out / "model.safetensors").exists()
    assert (out / "adapter" / "adapter_config.json").exists()
    assert "| use_peft | True |" in (out / "README.md").read_text()

    alone = tmp_path / "adapter-alone"
    assert cli_main([*args, "--merge_lora", "false", "--output_dir", str(alone)]) == 0
    assert json.loads((alone / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    assert not (alone / "config.json").exists() and not (alone / "adapter").exists()
    assert "| merge_lora | False |" in (alone / "README.md").read_text()


def test_bad_data_exits_2(tmp_path, tiny_model_path, capsys):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"messages": [\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_answer = write_jsonl(tmp_path / "q.jsonl", [{"messages": DIALOGUE[:1]}])
    out = tmp_path / "out"
    for data in (bad_json, empty, no_answer, tmp_path / "missing.jsonl"):
        args = ["sft", "--model_name_or_path", tiny_model_path, "--data_path", str(data), "--output_dir", str(out), "--report_to", "none"]
        assert cli_main(args) == 2, data
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error" in err[0], err
        assert not out.exists()
