"""``almost rm score``: add rewards to every row of a JSONL file, resumably.

Rows keep all their columns and gain:

- ``reward`` for a ``messages`` conversation (the last message is the answer judged), or for a
  ``prompt`` + ``response`` row (``almost rg`` output);
- ``reward_chosen`` and ``reward_rejected`` for a ``prompt`` + ``chosen`` + ``rejected`` row.

Rows are scored longest first in batches (little padding), without gradients, and appended to
``scored.jsonl.partial`` batch by batch: a killed run continues where it stopped, and the final
``scored.jsonl`` keeps the input order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from ..cards import write_dataset_card
from ..chat import as_messages
from ..config import require_option
from ..digests import digest_model, fingerprint
from ..errors import AlmostError
from ..readers import read_rows
from ..resumable import ResumableJsonl
from ..stages import RM_SCORE
from .client import RemoteRewardScorer
from .formats import context_messages
from .model import RewardScorer, RewardScorerSettings, load_scorer, reward_model_path

ROW_KEY = "_almost_row"  # resume key, left out of the final file


@dataclass
class RewardScoreConfig:
    """Settings of ``almost rm score``."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The reward model: a checkpoint from `almost rm train` (or its LoRA adapter folder)."}
    )
    data_path: str | None = field(
        default=None, metadata={"help": "JSONL/JSON or saved HF dataset with messages, prompt/response or prompt/chosen/rejected rows."}
    )
    output_dir: str | None = field(default=None, metadata={"help": f"Where {RM_SCORE.outputs.product_file} goes."})
    batch_size: int = field(default=8, metadata={"help": "Rows per batch (and per durable append)."})
    max_length: int = field(
        default=1024, metadata={"help": "Longest text in tokens; longer ones lose their beginning (the answer is kept whole)."}
    )
    dtype: str = field(default="auto", metadata={"help": "auto, bfloat16 or float32 (auto: bf16 on GPU, and on CPUs where it is faster)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model repositories to run their own code."})
    overwrite: bool = field(default=False, metadata={"help": "Start again even if finished or partial outputs exist."})


def conversations_to_score(row: dict, where: str) -> dict[str, list[dict]]:
    """Which reward columns a row gets, and the conversation each one scores."""
    if "messages" in row:
        messages = row["messages"]
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages)
        ):
            raise AlmostError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
        if messages[-1]["role"] != "assistant":
            raise AlmostError(f"{where}: the last message must be the assistant's answer to score")
        return {"reward": [{"role": m["role"], "content": str(m["content"])} for m in messages]}
    if "prompt" in row and "response" in row:
        return {"reward": as_messages(context_messages(row["prompt"], where), str(row["response"]))}
    if "prompt" in row and "chosen" in row and "rejected" in row:
        context = context_messages(row["prompt"], where)
        return {"reward_chosen": as_messages(context, str(row["chosen"])), "reward_rejected": as_messages(context, str(row["rejected"]))}
    raise AlmostError(
        f"{where} needs 'messages', 'prompt' + 'response', or 'prompt' + 'chosen' + 'rejected' (has: {', '.join(row) or 'nothing'})"
    )


class ScoringSettings(Protocol):
    """What ``rm score`` and ``rm eval`` share: how the reward model is read, and whether to start again."""

    batch_size: int
    max_length: int
    dtype: str
    trust_remote_code: bool
    overwrite: bool


def reward_store(config: ScoringSettings, model_path: str, final: Path, key: str, data_fingerprint: str, rows: int) -> ResumableJsonl:
    """The resumable output of ``rm score`` or ``rm eval``, emptied by --overwrite.

    Keyed by the reward model and the rows by content (a model retrained in the same folder must not
    add its rewards to the old one's); dtype and max_length change the rewards, batch_size only the speed.
    """
    settings = {
        "model": digest_model(model_path),
        "data": data_fingerprint,
        "rows": rows,
        "max_length": config.max_length,
        "dtype": config.dtype,
    }
    store = ResumableJsonl(final, key, settings)
    if config.overwrite:
        store.reset()
    return store


def config_scorer(config: ScoringSettings, model_path: str) -> RewardScorer | RemoteRewardScorer:
    """The reward model as ``rm score``'s or ``rm eval``'s settings ask for it."""
    return load_scorer(
        model_path,
        RewardScorerSettings(
            batch_size=config.batch_size, max_length=config.max_length, dtype=config.dtype, trust_remote_code=config.trust_remote_code
        ),
    )


def run_rm_score(config: RewardScoreConfig) -> dict:
    require_option(config.data_path, "data_path", "rows to score")
    if not config.output_dir:
        raise AlmostError("--output_dir is required")
    model_path = reward_model_path(config.model_name_or_path)
    rows = read_rows(config.data_path)
    if not rows:
        raise AlmostError(f"{config.data_path} has no rows")
    todo = [conversations_to_score(row, f"{config.data_path} row {i}") for i, row in enumerate(rows, 1)]

    final = Path(config.output_dir) / RM_SCORE.outputs.product_file
    store = reward_store(config, model_path, final, ROW_KEY, fingerprint({"rows": rows}), len(rows))
    if store.complete:  # refuses a finished file made with other settings
        print(f"almost rm score: {final} is already complete (--overwrite to redo)")
        return {"output": str(final), "rows": len(rows), "scored_now": 0}

    scorer = config_scorer(config, model_path)
    with store:
        pending = [i for i in range(len(rows)) if not store.done(i)]
        # Longest first: rows of similar length share a batch, so little compute goes to padding.
        pending.sort(key=lambda i: -sum(len(m["content"]) for conv in todo[i].values() for m in conv))
        with tqdm(total=len(rows), initial=len(rows) - len(pending), desc="almost rm score", unit="row") as bar:
            for start in range(0, len(pending), config.batch_size):
                batch = pending[start : start + config.batch_size]
                jobs = [(i, column, conv) for i in batch for column, conv in todo[i].items()]
                rewards = scorer.score([conv for _, _, conv in jobs])
                scored = {i: {**rows[i], ROW_KEY: i} for i in batch}
                for (i, column, _), reward in zip(jobs, rewards):
                    scored[i][column] = reward
                store.append(scored[i] for i in batch)
                bar.update(len(batch))
    store.finalize(order=range(len(rows)), drop_key=True)
    write_dataset_card(
        config.output_dir,
        RM_SCORE,
        {"scored": RM_SCORE.outputs.product_file},
        {
            "model": config.model_name_or_path,
            "data": Path(config.data_path).name,
            "rows": len(rows),
            "max_length": config.max_length,
        },
    )
    print(f"almost rm score: {len(rows)} rows -> {final}")
    return {"output": str(final), "rows": len(rows), "scored_now": len(pending)}
