"""Run by tests/test_vllm.py in a child process (vLLM spawns workers and needs a __main__ guard).

64 two-shot prompts (~680 tokens each, ~40k in all: far over vLLM's per-step token budget on CPU,
so a prompt cannot be prefilled with the others in one step), seeded, n=2, stop strings, on a
fresh engine, twice (the same call again on the same engine). Writes both calls' samples as JSON to
argv[1].
"""

import json
import sys

from almost import shipped
from almost.engines import Sampling
from almost.engines.vllm import VLLMEngine
from almost.feedback import demos
from almost.feedback.pg import read_prompt_file
from almost.models import resolve_model

NUM_PROMPTS = 64

if __name__ == "__main__":
    prefix = demos.load_demonstrations(shipped.BETTER_DEMONSTRATIONS).static_prompt(2)
    queries = read_prompt_file(shipped.SEED_PROMPTS).seeds[:NUM_PROMPTS]
    prompts = [f"{prefix}\nHuman: {q}\n\nAssistant:" for q in queries]
    engine = VLLMEngine(resolve_model("smollm2-135m").path, seed=0)
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=24, n=2, stop=demos.ANSWER_STOP, seed=11)
    samples = engine.generate(prompts, sampling)
    again = engine.generate(prompts, sampling)
    prompt_tokens = sum(len(engine.tokenizer(p).input_ids) for p in prompts)
    with open(sys.argv[1], "w") as f:
        json.dump({"samples": samples, "again": again, "prompt_tokens": prompt_tokens}, f)
