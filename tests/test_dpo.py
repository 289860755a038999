"""almost dpo: it trains the tiny policy towards the chosen answers (its weights change, the implicit
reward of the chosen answers rises above the rejected ones'), trains on prompts rendered as every
later stage renders them (the chat template, else the transcript), writes its card and the metrics
its record declares, reads a reference policy, and saves LoRA merged or alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model
from safetensors.torch import load_file

from almost.chat import render_prompt, transcript
from almost.cli import main as cli_main
from almost.contracts import TRAINING_STATUS
from almost.policy.dpo import DPOArguments, DPOTraining
from almost.policy.sft import TRANSCRIPT_CHAT_TEMPLATE
from almost.stages import DPO

PAIRS = [
    {"prompt": f"How often should I water plant number {i}?", "chosen": "Water it when the top of the soil feels dry.", "rejected": "No."}
    for i in range(8)
]
QUIET = ["--report_to", "none", "--disable_tqdm", "true"]


def write_pairs(path: Path, rows: list[dict] = PAIRS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def without_chat_template(model: str, target: Path) -> str:
    """A copy of the tiny model whose tokenizer has no chat template."""
    shutil.copytree(model, target)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    (target / "chat_template.jinja").unlink(missing_ok=True)
    return str(target)


def test_dpo_trains_the_policy_towards_the_chosen_answers(tmp_path, tiny_model_path):
    out = tmp_path / "dpo"
    args = ["dpo", "--model_name_or_path", tiny_model_path, "--data_path", str(write_pairs(tmp_path / "comparison.jsonl"))]
    args += ["--output_dir", str(out), "--max_steps", "6", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3"]
    assert cli_main([*args, "--warmup_ratio", "0", "--lr_scheduler_type", "constant", *QUIET]) == 0

    metrics = json.loads((out / DPO.outputs.summary_file).read_text())
    DPO.outputs.check_summary(metrics)
    train = metrics["train"]
    assert train["global_step"] == 6 and len(train["losses"]) == 6
    # Policy == reference at the first step: implicit rewards 0 and the loss log(2); then the chosen answers win.
    assert train["first_log"]["rewards/margins"] == 0 and train["first_log"]["loss"] == pytest.approx(0.6931, abs=1e-4)
    assert train["last_log"]["rewards/margins"] > 0.1 and train["last_log"]["rewards/accuracies"] == 1
    assert train["last_log"]["loss"] < train["first_log"]["loss"] - 0.1
    assert metrics["data"] == {
        "rows": 8,
        "pairs": 8,
        "skipped_identical": 0,
        "skipped_unsplittable": 0,
        "trained_pairs": 8,
        "dropped_long": 0,
        "truncated": 0,
    }
    before, after = load_file(f"{tiny_model_path}/model.safetensors"), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((out / TRAINING_STATUS).read_text())["status"] == "done"

    card = (out / "README.md").read_text()
    assert "almost dpo" in card and f"**Base model:** `.../{Path(tiny_model_path).name}`" in card and tiny_model_path not in card
    assert "`comparison.jsonl`: 8 usable pairs from 8 rows" in card and "against the starting policy, frozen" in card
    assert f"| DPO loss, last logged step | {train['last_log']['loss']:.3f} |" in card and "| beta | 0.1 |" in card
    assert (out / "chat_template.jinja").exists() and (out / "tokenizer.json").exists()


@pytest.mark.parametrize("template", ["the model's own", "none: the transcript"])
def test_dpo_trains_on_prompts_rendered_as_every_later_stage_renders_them(tmp_path, tiny_model_path, template):
    model = tiny_model_path if template == "the model's own" else without_chat_template(tiny_model_path, tmp_path / "plain")
    config = DPOArguments(
        output_dir=str(tmp_path / "out"), model_name_or_path=model, data_path=str(write_pairs(tmp_path / "p.jsonl")), report_to="none"
    )
    trainer = DPOTraining(config).setup()
    tokenizer, row = trainer.processing_class, trainer.train_dataset[0]
    messages = [{"role": "user", "content": PAIRS[0]["prompt"]}]
    assert tokenizer.decode(row["prompt_ids"]) == render_prompt(tokenizer, messages)
    assert tokenizer.decode(row["chosen_ids"]).strip().startswith(PAIRS[0]["chosen"])
    assert tokenizer.decode(row["rejected_ids"]).strip().startswith(PAIRS[0]["rejected"])
    if template != "the model's own":
        assert tokenizer.chat_template == TRANSCRIPT_CHAT_TEMPLATE
        assert tokenizer.decode(row["prompt_ids"]) == transcript(messages) + "\n\nAssistant:"
        # The answer ends with the end-of-sequence token, so the policy learns to stop.
        assert row["chosen_ids"][-1] == tokenizer.eos_token_id


def test_dpo_against_a_given_reference_policy(tmp_path, tiny_model_path):
    reference = build_tiny_model(tmp_path / "reference", seed=1)
    out = tmp_path / "dpo"
    args = ["dpo", "--model_name_or_path", tiny_model_path, "--ref_model", str(reference), "--output_dir", str(out)]
    args += ["--data_path", str(write_pairs(tmp_path / "p.jsonl")), "--max_steps", "1", "--per_device_train_batch_size", "4", *QUIET]
    assert cli_main(args) == 0
    metrics = json.loads((out / DPO.outputs.summary_file).read_text())
    # Another policy as the reference: the implicit rewards differ from 0 before the first update.
    assert metrics["train"]["first_log"]["rewards/chosen"] != 0 and metrics["ref_model"] == "reference"
    assert "against `reference`" in (out / "README.md").read_text()


def test_lora_dpo_saves_a_merged_model_or_the_adapter_alone(tmp_path, tiny_model_path):
    data = write_pairs(tmp_path / "p.jsonl")
    args = ["dpo", "--model_name_or_path", tiny_model_path, "--data_path", str(data), "--max_steps", "1", "--use_peft", *QUIET]
    out = tmp_path / "lora"
    assert cli_main([*args, "--output_dir", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and (out / "model.safetensors").exists()
    assert (out / "adapter" / "adapter_config.json").exists()
    card = (out / "README.md").read_text()
    assert "| use_peft | True |" in card and "the policy with its LoRA adapters off" in card

    alone = tmp_path / "adapter-alone"
    assert cli_main([*args, "--merge_lora", "false", "--output_dir", str(alone)]) == 0
    assert json.loads((alone / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    assert not (alone / "config.json").exists() and not (alone / "adapter").exists()
    assert "| merge_lora | False |" in (alone / "README.md").read_text()
