"""Run by tests/test_vllm.py in a child process (vLLM spawns workers and needs a __main__ guard).

32 four-shot prompts (~1,100 tokens each), seeded, n=2, stop strings, on a fresh engine, twice (the
same call again on the same engine, after the first call has filled its prefix cache). The prompts
share their first two shots, which the engine caches before each seeded call, and each shows two of
the other five demonstrations (in turn) before its query, so what that shared prefix leaves to
compute is more than one engine step takes: prompts wait for later steps and find earlier prompts'
blocks in the cache. Writes both calls' samples, the token counts and the dtype the engine ran in as
JSON to argv[1].
"""

import json
import os
import sys

from almost import shipped
from almost.engines import Sampling
from almost.engines.vllm import VLLMEngine
from almost.feedback import demos
from almost.feedback.pg import read_prompt_file
from almost.models import resolve_model

NUM_PROMPTS = 32
SHARED_SHOTS = 2
EXTRA_SHOTS = 2

if __name__ == "__main__":
    demonstrations = demos.load_demonstrations(shipped.BETTER_DEMONSTRATIONS)
    queries = read_prompt_file(shipped.SEED_PROMPTS).seeds[:NUM_PROMPTS]
    shared = demonstrations.static_prompt(SHARED_SHOTS)
    others = demonstrations.dialogues[SHARED_SHOTS:]
    # Prompt i: the shared two shots, then two of the other demonstrations in turn (i, i + 1), then its query.
    prompts = [
        f"{shared}\n"
        + "".join(f"{others[(i + j) % len(others)]}\n{demos.SEPARATOR}\n" for j in range(EXTRA_SHOTS))
        + f"Human: {q}\n\nAssistant:"
        for i, q in enumerate(queries)
    ]
    engine = VLLMEngine(resolve_model("smollm2-135m").path, seed=0)
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=24, n=2, stop=demos.ANSWER_STOP, seed=11)
    samples = engine.generate(prompts, sampling)
    again = engine.generate(prompts, sampling)
    ids = [engine.tokenizer(p).input_ids for p in prompts]
    common = len(os.path.commonprefix(ids))
    dtype = str(engine.llm.llm_engine.model_config.dtype).removeprefix("torch.")
    with open(sys.argv[1], "w") as f:
        json.dump(
            {
                "samples": samples,
                "again": again,
                "prompt_tokens": sum(map(len, ids)),
                "beyond_shared_prefix": sum(len(i) - common for i in ids),
                "step_budget": engine.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens,
                "dtype": dtype,
            },
            f,
        )
