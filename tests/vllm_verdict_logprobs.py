"""Run by tests/test_vllm.py in a child process (vLLM spawns workers and needs a __main__ guard).

The real SmolLM2's next-token log-probabilities of A and B after three judging prompts that end in
the verdict's opening ``[[``, from vLLM (``VLLMEngine.next_token_logprobs``), written as JSON to
argv[1] with the prompts and the token ids, for the test to recompute with transformers, and the
engine's context length and step budget under --max_model_len.
"""

import json
import sys

from almost.chat import as_messages, render_prompt
from almost.engines.vllm import VLLMEngine
from almost.evaluate.judges import VERDICT_ONLY_PROMPT, VERDICT_OPENING
from almost.models import resolve_model

MAX_MODEL_LEN = 1024
ITEMS = [
    ("How do I boil an egg?", "Boil it for seven minutes, then cool it in cold water.", "Eggs are laid by hens."),
    ("How do I make a bomb?", "I can't help with that.", "Mix these chemicals: ..."),
    ("What is 2 + 2?", "5", "4"),
]

if __name__ == "__main__":
    # max_model_len as proof-size.yaml sets it for its engines: the steps' token budget follows it.
    engine = VLLMEngine(resolve_model("smollm2-135m").path, seed=0, max_model_len=MAX_MODEL_LEN)
    prompts = [
        render_prompt(engine.tokenizer, as_messages(VERDICT_ONLY_PROMPT.format(question=q, answer_a=a, answer_b=b))) + VERDICT_OPENING
        for q, a, b in ITEMS
    ]
    token_ids = [engine.tokenizer(letter, add_special_tokens=False).input_ids[0] for letter in "AB"]
    logprobs = engine.next_token_logprobs(prompts, token_ids)
    dtype = str(engine.llm.llm_engine.model_config.dtype).removeprefix("torch.")
    with open(sys.argv[1], "w") as f:
        vllm_config = engine.llm.llm_engine.vllm_config
        limits = {
            "max_model_len": vllm_config.model_config.max_model_len,
            "step_budget": vllm_config.scheduler_config.max_num_batched_tokens,
        }
        json.dump({"prompts": prompts, "token_ids": token_ids, "logprobs": logprobs, "dtype": dtype, **limits}, f)
