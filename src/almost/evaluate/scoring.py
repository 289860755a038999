"""What the multiple-choice evaluations share: next-token probabilities of answer options, and
writing/printing their results.

``hhh`` and ``truthfulqa`` ask a model a question whose answer is one short word ("A"/"B",
"true"/"false") and read the probability of each option's first token after the prompt. They take
any object with ``tokenizer`` (for the chat template; None means the seed's transcript format) and
``option_probs(prompts, options)``: ``LanguageModelOptions`` for a real model, a scripted one in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..chat import render_prompt
from ..config import require_option
from ..contracts import StageOutputs, write_summary
from ..errors import AlmostError
from ..models import inference_precision, length_sorted_batches, load_tokenizer
from ..redaction import portable
from ..writes import write_jsonl_atomic, write_text_atomic


class OptionScorer(Protocol):
    tokenizer: object | None

    def option_probs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """For each prompt, the probability of each option (the sum over its spellings) as the next token."""
        ...


def chat_prompt(tokenizer, question: str, answer_prefix: str) -> str:
    """A one-turn question to the assistant, with the start of its answer already written."""
    # render_prompt falls back to the seed's transcript for a tokenizer without a template (or None).
    return render_prompt(tokenizer, [{"role": "user", "content": question}]) + answer_prefix


class LanguageModelOptions:
    """A causal LM read at one position: softmax over the vocabulary after each prompt."""

    def __init__(
        self,
        model_path: str,
        batch_size: int = 8,
        max_length: int = 2048,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
    ):
        from transformers import AutoModelForCausalLM

        self.precision = inference_precision(dtype)
        self.tokenizer = load_tokenizer(model_path, trust_remote_code, padding_side="left", cache_dir=cache_dir)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=self.precision.load_dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir
            )
        except (OSError, ValueError) as e:
            raise AlmostError(f"cannot load a causal language model from {model_path}: {str(e).splitlines()[0]}") from None
        self.model = model.to(self.precision.device).eval()
        self.batch_size = max(1, batch_size)
        self.max_length = max_length

    def option_token_ids(self, options: Sequence[Sequence[str]]) -> list[list[int]]:
        """The first token of every spelling of every option (duplicates within an option dropped)."""
        ids = []
        for spellings in options:
            firsts = {self.tokenizer(s, add_special_tokens=False).input_ids[0] for s in spellings}
            ids.append(sorted(firsts))
        flat = [i for option in ids for i in option]
        if len(flat) != len(set(flat)):
            raise AlmostError(f"options {options} share a first token in this tokenizer; they cannot be told apart")
        return ids

    def option_probs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        import torch

        option_ids = self.option_token_ids(options)
        results: list[list[float]] = [[] for _ in prompts]
        batches = length_sorted_batches(
            self.tokenizer, prompts, self.batch_size, self.max_length, self.precision.device, "scoring", "prompt"
        )
        for batch, enc in batches:
            with torch.no_grad(), self.precision.autocast():
                # Left padding: the last position predicts the next token, and only its logits are needed.
                logits = self.model(**enc, logits_to_keep=1).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)
            for row, i in enumerate(batch):
                results[i] = [float(probs[row, ids].sum()) for ids in option_ids]
        return results


def require_paths(data_path: str | None, output_dir: str | None) -> None:
    require_option(data_path, "data_path")
    if not output_dir:
        raise AlmostError("--output_dir is required")


def accuracy_table(metrics: dict, group_key: str = "per_type", unit: str = "items") -> str:
    """Overall and per-group accuracy with 95% intervals, as aligned text."""
    lines = [f"{'':<28}{'accuracy':>9}  {'95% interval':>15}  {unit:>6}"]

    def line(name: str, acc: dict) -> str:
        low, high = acc["ci95"]
        return f"{name:<28}{acc['accuracy']:>9.3f}  [{low:.3f}, {high:.3f}]  {acc['n']:>6}"

    lines.append(line("all", metrics))
    for name, acc in metrics.get(group_key, {}).items():
        lines.append(line("  " + name, acc))
    return "\n".join(lines)


def write_results(outputs: StageOutputs, output_dir: str, metrics: dict, table: str, rows: list[dict]) -> None:
    """The evaluation's files as ``outputs`` declares them: per-item rows, the printed table, and its
    metrics (the summary, written last: it marks the evaluation finished); then print the table."""
    out = Path(output_dir)
    write_jsonl_atomic(out / outputs.files["rows"], rows)
    write_text_atomic(out / outputs.files["table"], table + "\n")
    # Paths as the run directory (the parent of this output folder) sees them, not this machine's.
    write_summary(outputs, out, portable(metrics, out.resolve().parent))
    print(table)
