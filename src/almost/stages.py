"""Every stage of the method, one ``Stage`` record each: the one place a stage is declared.

A record names the stage's command and help line, the module holding its config dataclasses and its
run function, the options through which it reads files and models (``inputs``: for each option the
stage whose output it is in a pipeline run, if any, and which of that stage's files), what it writes
(``outputs``: ``contracts.StageOutputs``), its folder in a run directory, and what its dataset or
model card says about it. The CLI's commands, the pipeline's plan, its steps' fingerprints, the
report's sections and the cards are derived from these records: adding a stage is adding a record
here and writing its module.

Modules are named, not imported: ``almost --help`` and the pipeline's planning load no stage until
its options or its run are needed. Code passes the records around (``check_output_dir(config,
RM_TRAIN)``); a stage's name (``"rm train"``) is what is written into files and messages.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .contracts import METRICS_FILE, MODEL_CONFIG, StageOutputs, keys


@dataclass(frozen=True, eq=False)
class Command:
    """``almost <command>``: a command whose module has its own ``main(argv) -> int`` (demo, pipeline ...)."""

    command: tuple[str, ...]  # ("demo",), ("rm", "serve")
    help: str  # one line for ``almost --help``
    module: str

    @property
    def name(self) -> str:
        """As typed after ``almost`` and as recorded in files: ``"rm train"``."""
        return " ".join(self.command)

    @property
    def prog(self) -> str:
        return f"almost {self.name}"

    def load(self):
        return importlib.import_module(self.module)


@dataclass(frozen=True, eq=False)
class Input:
    """An option through which a stage reads a file, a folder or a model.

    ``stage`` makes it in a pipeline run (the planner fills the option in from that stage's folder,
    unless the user set it), ``role`` says which of its files (None: its folder, e.g. a model). The
    pipeline fingerprints what the option names by content. ``schemes`` are the prefixes the value may
    carry before the path or model (``--judge rm:PATH``); a wired value gets the first one.
    """

    stage: Stage | None = None
    role: str | None = None
    model: bool = False  # a model name or path: checked (resolved) before a pipeline runs
    schemes: tuple[str, ...] = ()

    def target(self, value: str) -> str:
        """The path or model inside a value (``rm:PATH`` → ``PATH``)."""
        for scheme in self.schemes:
            if value.startswith(f"{scheme}:"):
                return value[len(scheme) + 1 :]
        return value

    def wired(self, path: str) -> str:
        return f"{self.schemes[0]}:{path}" if self.schemes else path


@dataclass(frozen=True)
class DatasetCard:
    """What the dataset card of a data stage says about its files (``cards.write_dataset_card``)."""

    task_categories: tuple[str, ...]
    tags: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class ModelCard:
    """What the model card of a training stage says about its model (``cards.write_model_card``)."""

    title: str
    description: str
    task: str  # the Hub's pipeline tag, also model-index's task
    tags: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Stage(Command):
    """``almost <command>``: ``run(*configs)`` does what the command line does, less the lock."""

    config_names: tuple[str, ...]  # the config dataclasses in ``module``, in the order ``run`` takes them
    run_name: str
    outputs: StageOutputs
    inputs: Mapping[str, Input] = field(default_factory=dict)
    # Its folder in a run (``almost pipeline``, ``report``), None: not a pipeline stage; an evaluation's steps get one below it per model.
    folder: str | None = None
    # Planned whenever its pipeline section is there, even without a subsection of its own (``rm:`` plans rm train).
    with_section: bool = False
    card: DatasetCard | ModelCard | None = None
    headline: str | None = None  # an evaluation's one figure, a key of its summary (the report's tables)
    # Steps of this stage that differ only in these options run as one call, which makes only theirs
    # (``--select``): rg's configurations of one model load the model once.
    shared_call: tuple[str, ...] = ()
    # Consecutive steps of such stages run in one child process: an evaluation works for seconds, and
    # a process of its own spent ~7 s more importing torch and transformers (2-core CPU, docs/pipeline.md).
    shares_process: bool = False

    def __post_init__(self):
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))
        object.__setattr__(self, "outputs", replace(self.outputs, command=self.name))

    @property
    def section(self) -> str | None:
        """Its section in a pipeline config (``rm`` for rm train and rm eval); None outside the pipeline."""
        return self.command[0] if self.folder else None

    @property
    def subsection(self) -> str | None:
        """Its part of the section (``train`` in ``rm.train``), for a command of two words."""
        return self.command[1] if self.folder and len(self.command) > 1 else None

    def config_types(self) -> tuple[type, ...]:
        module = self.load()
        return tuple(getattr(module, name) for name in self.config_names)

    def run(self, *configs) -> Any:
        return getattr(self.load(), self.run_name)(*configs)


# The keys of every row RG writes (one row per prompt); ``almost merge`` checks shards against them.
RG_ROW_KEYS = ("index", "prompt", "response", "bad", "bad_reasons", "config")
# rmsp_summary.json: per_turn holds one mapping per assistant turn (RMSP_TURN_KEYS); user_turns
# (USER_TURNS_KEY) counts the user simulator's turns, with one mapping per re-sampled reason.
USER_TURNS_KEY = "user_turns"
RESAMPLED_REASONS = ("user_repeats", "user_role_swap")  # why a user turn is re-sampled
RMSP_TURN_KEYS = ("turn", "dialogues", "kept", "bad_candidate_rate", "mean_best_reward", "mean_candidate_reward")
# The files a model folder of rm train, sft and rl holds besides its weights and tokenizer.
MODEL_FILES = {"model": MODEL_CONFIG, "metrics": METRICS_FILE}
# Options of every training stage that may name a file (TRL's and transformers' own).
TRAINER_FILES = {"deepspeed": Input(), "accelerator_config": Input(), "fsdp_config": Input()}
# ... and of the stages that render conversations with a chat template they may be given.
TEMPLATE_AND_TRAINER_FILES = {"chat_template_path": Input(), **TRAINER_FILES}
# rg writes one file per configuration, named after it; a ``--shard i/n`` run writes one shard of it,
# which ``almost merge`` joins. Its rows are the record: no summary.
RG_FILES = StageOutputs(
    {"answers": "{configuration}.jsonl", "shard": "{configuration}.shard-{i:d}-of-{n:d}.jsonl"}, product="answers", row_keys=RG_ROW_KEYS
)

PG = Stage(
    ("pg",),
    "1. Prompt generation: new user queries from a base LM, deduplicated.",
    "almost.feedback.pg",
    ("PGArguments",),
    "run_pg",
    StageOutputs(
        {"prompts": "prompts.txt", "stats": "pg_stats.json", "rounds": "pg_rounds.jsonl"},
        product="prompts",
        summary="stats",
        summary_keys=keys(
            "accepted", "accepted_unused", "rejected", "requests", "rounds", "generation_seconds", "seeds", "model", "backend"
        ),
    ),
    {"model_name_or_path": Input(model=True), "prompt_file_path": Input()},
    folder="pg",
    card=DatasetCard(
        ("text-generation",),
        ("synthetic", "prompts"),
        "New user queries written by a base language model from few-shot examples, deduplicated (ROUGE-L) and filtered.",
    ),
)
RG = Stage(
    ("rg",),
    "2. Response generation: answers under each configuration.",
    "almost.feedback.rg",
    ("RGArguments",),
    "run_rg",
    RG_FILES,
    {"model_name_or_path": Input(model=True), "prompts_path": Input(PG, "prompts"), "prompt_file_path": Input()},
    folder="rg",
    card=DatasetCard(
        ("text-generation",),
        ("synthetic",),
        "One answer per prompt from a language model prompted with demonstrations; `bad` marks answers that break RG's BAD-answer rules.",
    ),
    shared_call=("prompt_file_path", "n_shot"),
)
MERGE = Stage(("merge",), "Merge the outputs of sharded rg runs.", "almost.feedback.merge", ("MergeArguments",), "run_merge", RG_FILES)
CS = Stage(
    ("cs",),
    "3. Synthetic comparisons: rubric-ranked chosen/rejected pairs.",
    "almost.feedback.cs",
    ("CSArguments",),
    "run_cs",
    StageOutputs(
        {"comparisons": "comparison.jsonl", "stats": "cs_stats.json"},
        product="comparisons",
        summary="stats",
        # valid_answers: {configuration: count}; pairs_per_configuration_pair: {"chosen > rejected": count}.
        summary_keys=keys(
            "prompts",
            "pairs",
            "dropped_by_filter",
            "dropped_by_max_length_ratio",
            "dropped_by_length_balance",
            "prompts_with_fewer_than_two_valid",
            "valid_answers",
            "pairs_per_configuration_pair",
            "rubric",
            "chosen_longer",
            "chosen_shorter",
        ),
        # Written only when --max_length_ratio or --length_balance is on, so that the seed's file stays as it was.
        optional_keys=keys("dropped_by_max_length_ratio", "dropped_by_length_balance", "chosen_longer", "chosen_shorter"),
    ),
    {"input_dir": Input(RG)},
    folder="cs",
    card=DatasetCard(
        ("text-classification", "text-generation"),
        ("synthetic", "preference", "rlhf", "reward-modeling"),
        "Synthetic comparisons: for each prompt, answers of configurations ranked by a rubric (better model, more and "
        "better demonstrations) become chosen/rejected pairs.",
    ),
)
DPO = Stage(
    ("dpo",),
    "Direct preference optimisation on the pairs (TRL DPOTrainer): a policy without an RM.",
    "almost.policy.dpo",
    ("DPOArguments",),
    "run_dpo",
    # "train": TRL's train metrics, "global_step", the losses and the first and last logged DPO figures.
    StageOutputs(
        MODEL_FILES, product="model", summary="metrics", summary_keys=keys("model", "base_model", "ref_model", "data", "train", "config")
    ),
    {
        "model_name_or_path": Input(model=True),
        "ref_model": Input(model=True),
        "data_path": Input(CS, "comparisons"),
        **TEMPLATE_AND_TRAINER_FILES,
    },
    folder="dpo",
    card=ModelCard(
        "Policy trained with `almost dpo`",
        "A policy trained with TRL's `DPOTrainer` directly on synthetic comparisons (no reward model), beside the RM → "
        'RMSP → SFT → RL route of "Aligning Large Language Models through Synthetic Feedback" (Kim et al., EMNLP 2023).',
        "text-generation",
        ("dpo", "trl", "synthetic-feedback"),
    ),
)
# The training stages' summaries: "train" holds TRL's train metrics and "global_step" alike in rm train and sft;
# "config" the plain settings; rm train's "heldout" has rm eval's keys (None without held-out pairs).
RM_TRAIN = Stage(
    ("rm", "train"),
    "Train a reward model on preference pairs (TRL RewardTrainer).",
    "almost.reward.train",
    ("RewardTrainingConfig",),
    "run_rm_train",
    StageOutputs(
        MODEL_FILES,
        product="model",
        summary="metrics",
        summary_keys=keys("model", "base_model", "data", "train", "heldout", "length_head", "config"),
        optional_keys=keys("length_head"),  # only with --length_head
    ),
    {"model_name_or_path": Input(model=True), "data_path": Input(CS, "comparisons"), **TEMPLATE_AND_TRAINER_FILES},
    folder="rm",
    with_section=True,
    card=ModelCard(
        "Reward model trained with `almost rm train`",
        "A sequence-classification reward model (one output: the reward) trained with TRL's `RewardTrainer` on synthetic "
        'comparisons, following "Aligning Large Language Models through Synthetic Feedback" (Kim et al., EMNLP 2023).',
        "text-classification",
        ("reward-model", "trl"),
    ),
)
RM_SCORE = Stage(
    ("rm", "score"),
    "Add a reward to every row of a JSONL file (resumable).",
    "almost.reward.score",
    ("RewardScoreConfig",),
    "run_rm_score",
    StageOutputs({"scored": "scored.jsonl"}, product="scored"),
    {"model_name_or_path": Input(model=True), "data_path": Input()},
    card=DatasetCard(
        ("text-classification",), ("synthetic", "reward-modeling"), "Input rows with the reward a trained reward model gives each answer."
    ),
)
RM_EVAL = Stage(
    ("rm", "eval"),
    "Pairwise accuracy on preference data, with length-bias statistics.",
    "almost.reward.evaluate",
    ("RewardEvalConfig",),
    "run_rm_eval",
    StageOutputs(
        {"metrics": METRICS_FILE, "rewards": "rewards.jsonl", "table": "metrics.txt", "plot": "reward_eval.png"},
        product="metrics",
        summary="metrics",
        # stats.reward_pair_metrics (also rm train's "heldout"): length_bias and length_balanced have
        # their keys documented there; subsets only when the pairs name their subset.
        summary_keys=keys(
            "accuracy",
            "ci95",
            "n",
            "ties",
            "mean_margin",
            "subsets",
            "length_bias",
            "length_balanced",
            "model",
            "data",
            "rows_read",
            "skipped_identical",
            "skipped_unsplittable",
        ),
        optional_keys=keys("subsets"),
    ),
    {"model_name_or_path": Input(RM_TRAIN, model=True), "data_path": Input()},
    folder="rm_eval",  # human preference data; rubric agreement on held-out synthetic pairs is in rm/metrics.json
)
RMSP = Stage(
    ("rmsp",),
    "5. RM-guided self-play: multi-turn demonstrations.",
    "almost.policy.selfplay",
    ("RMSPArguments",),
    "run_rmsp",
    StageOutputs(
        {"demonstrations": "demonstrations.jsonl", "dropped": "rmsp_dropped.jsonl", "summary": "rmsp_summary.json"},
        product="demonstrations",
        summary="summary",
        summary_keys=keys(
            "dialogues",
            "kept_dialogues",
            "dropped_dialogues",
            "assistant_turns",
            "mean_turns_per_kept_dialogue",
            "end_reasons",
            "num_candidates",
            "max_turns",
            "per_turn",
            USER_TURNS_KEY,
        ),
    ),
    {
        "prompts_path": Input(PG, "prompts"),
        "reward_model_name_or_path": Input(RM_TRAIN, model=True),
        "model_name_or_path": Input(model=True),
        "user_model_name_or_path": Input(model=True),
        "prompt_file_path": Input(),
        "user_prompt_file_path": Input(),
    },
    folder="rmsp",
    card=DatasetCard(
        ("text-generation",),
        ("synthetic", "sft", "dialogue"),
        "Multi-turn demonstrations from reward-model-guided self-play: every assistant turn is the reward model's pick "
        "among sampled candidates.",
    ),
)
SFT = Stage(
    ("sft",),
    "6a. Supervised fine-tuning on demonstrations.",
    "almost.policy.sft",
    ("SFTArguments",),
    "run_sft",
    StageOutputs(MODEL_FILES, product="model", summary="metrics", summary_keys=keys("model", "base_model", "data", "train", "config")),
    {"model_name_or_path": Input(model=True), "data_path": Input(RMSP, "demonstrations"), **TEMPLATE_AND_TRAINER_FILES},
    folder="sft",
    card=ModelCard(
        "Chat model fine-tuned with `almost sft`",
        "Supervised fine-tuning with TRL's `SFTTrainer` on demonstrations, following \"Aligning Large Language Models through "
        'Synthetic Feedback" (Kim et al., EMNLP 2023): dialogues whose assistant turns a reward model picked during '
        "self-play (`almost rmsp`).",
        "text-generation",
        ("sft", "trl"),
    ),
)
RL = Stage(
    ("rl",),
    "6b. RL against the reward model with a KL penalty.",
    "almost.policy.rl",
    ("RLConfig",),
    "run_rl",
    StageOutputs(
        {**MODEL_FILES, "log": "rl_log.csv"},
        product="model",
        summary="metrics",
        summary_keys=keys(
            "algorithm", "policy", "reward_model", "prompts", "global_step", "beta", "length_penalty", "first_log", "last_log"
        ),
    ),
    {
        "prompts_path": Input(PG, "prompts"),
        "reward_model_name_or_path": Input(RM_TRAIN, model=True),
        "model_name_or_path": Input(SFT, model=True),
        **TRAINER_FILES,
    },
    folder="rl",
    card=ModelCard(
        "Policy trained with `almost rl`",
        "A policy trained by reinforcement learning (TRL) against a reward model learned from synthetic feedback, following "
        '"Aligning Large Language Models through Synthetic Feedback" (Kim et al., EMNLP 2023).',
        "text-generation",
        ("rlhf", "trl", "synthetic-feedback"),
    ),
)
# The policies `almost eval` compares with the model the first started from ("base"), each labelled by its folder, in order.
POLICIES = (DPO, SFT, RL)
# Policies `eval pairwise` also compares when a run trains both: DPO on the synthetic pairs, RL against the RM learned from them.
RIVAL_POLICIES = ((DPO, RL),)

# The multiple-choice evaluations: accuracy with its interval (evaluate.scoring.accuracy), per group too.
EVAL_HHH = Stage(
    ("eval", "hhh"),
    "Static HHH A/B preference accuracy (both orders added, per type).",
    "almost.evaluate.hhh",
    ("ModelArguments", "HHHConfig"),
    "run_hhh",
    StageOutputs(
        {"metrics": METRICS_FILE, "rows": "predictions.jsonl", "table": "metrics.txt"},
        product="metrics",
        summary="metrics",
        summary_keys=keys("accuracy", "ci95", "n", "ties", "position_a_rate", "per_type", "task", "model", "data", "skipped"),
    ),
    {"model_name_or_path": Input(model=True), "data_path": Input()},
    folder="eval/hhh",
    shares_process=True,
    headline="accuracy",
)
EVAL_TRUTHFULQA = Stage(
    ("eval", "truthfulqa"),
    "TruthfulQA MC1: P(true) per answer, argmax.",
    "almost.evaluate.truthfulqa",
    ("ModelArguments", "TruthfulQAConfig"),
    "run_truthfulqa",
    StageOutputs(
        {"metrics": METRICS_FILE, "rows": "predictions.jsonl", "table": "metrics.txt"},
        product="metrics",
        summary="metrics",
        summary_keys=keys("accuracy", "ci95", "n", "task", "model", "data", "chance", "per_category"),
        optional_keys=keys("per_category"),  # only when the questions have categories
    ),
    {"model_name_or_path": Input(model=True), "data_path": Input()},
    folder="eval/truthfulqa",
    shares_process=True,
    headline="accuracy",
)
EVAL_PAIRWISE = Stage(
    ("eval", "pairwise"),
    "Model vs baseline answers judged by an RM or an LLM, both orders.",
    "almost.evaluate.pairwise",
    ("PairwiseConfig",),
    "run_pairwise",
    StageOutputs(
        {"metrics": METRICS_FILE, "rows": "judgments.jsonl", "table": "metrics.txt"},
        product="metrics",
        summary="metrics",
        # length_balanced: evaluate.pairwise.length_split; per_category: {category: the same keys, without per_category}.
        summary_keys=keys(
            "win", "tie", "loss", "n", "win_rate", "ci95", "length_balanced", "per_category", "task", "model", "baseline", "judge", "data"
        ),
    ),
    {
        "model_name_or_path": Input(model=True),
        "baseline_model_name_or_path": Input(model=True),
        "data_path": Input(),
        "judge": Input(RM_TRAIN, schemes=("rm", "llm", "openai")),
    },
    folder="eval/pairwise",
    shares_process=True,
    headline="win_rate",
)

# In the order the pipeline plans them, the report shows them and ``almost --help`` lists them. A stage's inputs
# are wired in the order they are declared: that order is part of a step's command line, so of its fingerprint.
STAGES: tuple[Stage, ...] = (PG, RG, MERGE, CS, DPO, RM_TRAIN, RM_SCORE, RM_EVAL, RMSP, SFT, RL, EVAL_HHH, EVAL_TRUTHFULQA, EVAL_PAIRWISE)


def named(name: str) -> Stage | None:
    """The stage called ``name`` (``"rm train"``, as files record it), None when there is none."""
    return next((s for s in STAGES if s.name == name), None)


def pipeline_stages() -> list[Stage]:
    """The stages a pipeline config may name, in order."""
    return [s for s in STAGES if s.folder]


def sections() -> tuple[str, ...]:
    """The pipeline config's stage sections, in order: pg, rg, cs, dpo, rm, rmsp, sft, rl, eval."""
    return tuple(dict.fromkeys(s.section for s in pipeline_stages()))


def evaluations() -> list[Stage]:
    """``almost eval <kind>`` for every kind, in order."""
    return [s for s in pipeline_stages() if s.section == "eval"]
