"""A length-disentangled reward model, after ODIN (Chen et al. 2024, "ODIN: Disentangled Reward
Mitigates Hacking in RLHF").

Two linear heads read the same pooled hidden state: the model's own ``score`` head (the *quality*
reward) and a second *length* head. Training fits their sum to the preferences (TRL's
Bradley-Terry loss) and adds, over the chosen and rejected sequences of each batch:

- ``+ length_correlation_coefficient * |pearson(quality, length)|``: the quality head is pushed
  away from anything that tracks length;
- ``- length_correlation_coefficient * pearson(length head, length)``: the length head is pulled
  towards it, so the length part of the preference has somewhere to go;
- ``+ orthogonality_coefficient * |cos(w_quality, w_length)|``: the two heads read different
  directions of the hidden state.

Length is the number of non-padding tokens of each sequence (prompt and answer; the two answers of
a pair share their prompt), as in ODIN. At scoring time only the quality head is used: it is saved
as the checkpoint's ``score`` head, so every stage loads it as a plain
``AutoModelForSequenceClassification``; the length head goes to ``length_head.safetensors`` beside
it, for inspection only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from trl import RewardTrainer

from ..errors import AlmostError

LENGTH_HEAD_FILE = "length_head.safetensors"


def pearson(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors; 0 when either is constant (nothing to correlate)."""
    x, y = x.float() - x.float().mean(), y.float() - y.float().mean()
    return (x * y).sum() / (x.norm() * y.norm() + eps)


def odin_loss_terms(
    quality: torch.Tensor,
    length_reward: torch.Tensor,
    lengths: torch.Tensor,
    quality_weight: torch.Tensor,
    length_weight: torch.Tensor,
    length_correlation_coefficient: float,
    orthogonality_coefficient: float,
) -> dict[str, torch.Tensor]:
    """The loss and its parts for one batch laid out as TRL does: the chosen sequences, then the
    rejected ones (``quality``, ``length_reward`` and ``lengths`` have 2 * pairs entries)."""
    total = quality + length_reward
    chosen, rejected = torch.chunk(total, 2)
    preference = -nn.functional.logsigmoid(chosen - rejected).mean()
    quality_corr = pearson(quality, lengths)
    length_corr = pearson(length_reward, lengths)
    wq, wl = quality_weight.reshape(-1).float(), length_weight.reshape(-1).float()
    orthogonality = (wq @ wl).abs() / (wq.norm() * wl.norm() + 1e-8)
    loss = preference + length_correlation_coefficient * (quality_corr.abs() - length_corr) + orthogonality_coefficient * orthogonality
    return {
        "loss": loss,
        "preference_loss": preference,
        "quality_length_corr": quality_corr,
        "length_head_length_corr": length_corr,
        "head_cosine": orthogonality,
    }


def last_token_index(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """The position a sequence-classification head reads: the last token that is not padding,
    found the way transformers' ``*ForSequenceClassification`` finds it."""
    if pad_token_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return (positions * (input_ids != pad_token_id)).argmax(-1)


def score_module(model: nn.Module) -> nn.Module:
    """The ``score`` head (under PEFT: the wrapper that holds its trainable copy)."""
    named = [(name, module) for name, module in model.named_modules() if name.split(".")[-1] == "score"]
    if not named:
        raise AlmostError("--length_head needs a model with a `score` head (a *ForSequenceClassification model)")
    return min(named, key=lambda item: len(item[0]))[1]


def trainable_weight(head: nn.Module) -> torch.Tensor:
    """The weight the head trains (under PEFT, the modules_to_save copy, not the frozen original)."""
    weights = [p for p in head.parameters() if p.requires_grad and p.dim() == 2]
    if len(weights) != 1:
        raise AlmostError(f"--length_head: expected one trainable score weight, found {len(weights)}")
    return weights[0]


def orthogonal_init(quality_weight: torch.Tensor, seed: int) -> torch.Tensor:
    """A random length-head weight orthogonal to the quality head's, with the same norm.

    Both heads get the same gradient from the preference loss, and a fresh score head is drawn
    right after ``set_seed(seed)``: a length head drawn from the same seed would start parallel to it
    (cosine 1), and the two would never separate.
    """
    q = quality_weight.reshape(-1)
    generator = torch.Generator().manual_seed(seed + 1)
    w = torch.randn(q.shape, generator=generator)
    w = w - (w @ q) / (q @ q + 1e-12) * q
    return (w / w.norm() * q.norm()).reshape(quality_weight.shape)


class DisentangledRewardTrainer(RewardTrainer):
    """TRL's RewardTrainer with ODIN's length head and penalties (see the module docstring)."""

    def __init__(self, *args, length_correlation_coefficient: float = 1.0, orthogonality_coefficient: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.accelerator.num_processes > 1:
            # The length head lives outside the wrapped model, so DDP would not average its gradients.
            raise AlmostError("--length_head runs in one process only (the length head is not synchronised across processes)")
        self.length_correlation_coefficient = length_correlation_coefficient
        self.orthogonality_coefficient = orthogonality_coefficient
        self.score_head = score_module(self.model)
        quality_weight = trainable_weight(self.score_head)
        self.length_head = nn.Linear(quality_weight.shape[-1], 1, bias=False).to(quality_weight.device)
        with torch.no_grad():
            self.length_head.weight.copy_(orthogonal_init(quality_weight.detach().float().cpu(), self.args.seed))
        self._hidden: torch.Tensor | None = None
        # The hidden states the score head reads, so the length head reads exactly the same ones.
        self.score_head.register_forward_hook(self._keep_hidden)

    def _keep_hidden(self, module, args, output):
        self._hidden = args[0]

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        # Before the scheduler is built, so the length head follows the same schedule.
        optimizer.add_param_group({"params": list(self.length_head.parameters()), "weight_decay": 0.0})
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs = model(**inputs)
        quality = outputs.logits.squeeze(-1)
        rows = torch.arange(quality.shape[0], device=quality.device)
        index = last_token_index(inputs["input_ids"], getattr(self.model.config, "pad_token_id", None))
        pooled = self._hidden[rows, index]
        length_reward = self.length_head(pooled.to(self.length_head.weight.dtype)).squeeze(-1)
        lengths = inputs["attention_mask"].sum(-1)
        terms = odin_loss_terms(
            quality.float(),
            length_reward.float(),
            lengths,
            trainable_weight(self.score_head),
            self.length_head.weight,
            self.length_correlation_coefficient,
            self.orthogonality_coefficient,
        )
        if self.args.center_rewards_coefficient is not None:
            terms["loss"] = terms["loss"] + self.args.center_rewards_coefficient * torch.mean(quality**2)
        with torch.no_grad():
            chosen, rejected = torch.chunk(quality, 2)
            # Accuracy and margin of the quality head alone: what every later stage will see.
            self._metrics[mode]["accuracy"].append((chosen > rejected).float().mean().item())
            self._metrics[mode]["margin"].append((chosen - rejected).mean().item())
            for key in ("preference_loss", "quality_length_corr", "length_head_length_corr", "head_cosine"):
                self._metrics[mode][key].append(terms[key].item())
        return (terms["loss"], outputs) if return_outputs else terms["loss"]

    def length_head_summary(self) -> dict:
        """The coefficients and the first and last logged values of each ODIN term (metrics.json)."""
        keys = ("preference_loss", "quality_length_corr", "length_head_length_corr", "head_cosine")
        logs = [entry for entry in self.state.log_history if all(k in entry for k in keys)]
        return {
            "file": LENGTH_HEAD_FILE,
            "length_correlation_coefficient": self.length_correlation_coefficient,
            "orthogonality_coefficient": self.orthogonality_coefficient,
            "first_log": {k: logs[0][k] for k in ("step", *keys) if k in logs[0]} if logs else None,
            "last_log": {k: logs[-1][k] for k in ("step", *keys) if k in logs[-1]} if logs else None,
        }

    def save_length_head(self, output_dir: Path) -> Path:
        from safetensors.torch import save_file

        path = Path(output_dir) / LENGTH_HEAD_FILE
        save_file({"weight": self.length_head.weight.detach().cpu().contiguous()}, str(path))
        return path
