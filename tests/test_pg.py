"""Stage PG: prompt file, request building, filters, exact fast dedup, resume, CLI errors, real model."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from rouge_reference import rouge_l_reference
from scripted_engine import ScriptedEngine

from almost.cli import main as cli_main
from almost.errors import AlmostError
from almost.feedback.pg import (
    NearDuplicateIndex,
    PGArguments,
    bit_parallel_lcs,
    build_request,
    first_query,
    length_rejection,
    read_prompt_file,
    rouge_l_fmeasure,
    rouge_tokens,
    run_pg,
)
from almost.shipped import SEED_PROMPTS

# --- tokenization and ROUGE-L ----------------------------------------------------------------------


def test_rouge_tokens_follow_rouge_score_default_tokenizer():
    assert rouge_tokens("Don't PANIC!!  It's 9:30 a.m.") == ["don", "t", "panic", "it", "s", "9", "30", "a", "m"]
    assert rouge_tokens("C++ vs. C#: café") == ["c", "vs", "c", "caf"]  # non a-z0-9 letters split words
    assert rouge_tokens("?!...  ") == []


def dp_lcs(a, b):
    """Textbook LCS table, independent of rouge_l_reference's."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_reference_rouge_l_on_hand_made_cases():
    cat = rouge_tokens("the cat sat on the mat")
    assert rouge_l_reference(cat, rouge_tokens("the cat on the mat")) == pytest.approx(2 * 5 / 11)
    assert rouge_l_reference(cat, rouge_tokens("mat the on sat cat the")) == 0.5  # LCS "the on the"
    assert rouge_l_reference(cat, []) == 0.0 and rouge_l_reference([], []) == 0.0
    assert rouge_l_reference(["a", "b"], ["c"]) == 0.0


def test_fmeasure_matches_rouge_score_floats_at_the_boundary():
    # Exactly 0.5 in rationals both times, but rouge_score's 2PR/(P+R) rounds the second one down.
    assert rouge_l_fmeasure(2, 4, 4) == 0.5
    assert rouge_l_fmeasure(6, 11, 13) == 0.4999999999999999
    assert rouge_l_fmeasure(6, 13, 11) == rouge_l_fmeasure(6, 11, 13)  # symmetric
    assert rouge_l_fmeasure(0, 3, 3) == 0.0


def random_tokens(rng, vocab, low, high):
    return [rng.choice(vocab) for _ in range(rng.randint(low, high))]


def test_bit_parallel_lcs_equals_dynamic_programming():
    rng = random.Random(0)
    for _ in range(400):
        vocab = [f"w{i}" for i in range(rng.choice([2, 4, 10]))]
        a = random_tokens(rng, vocab, 0, 90)  # beyond 64 tokens: big ints, not machine words
        b = random_tokens(rng, vocab, 0, 90)
        masks = {}
        for i, t in enumerate(a):
            masks[t] = masks.get(t, 0) | (1 << i)
        assert bit_parallel_lcs(masks, len(a), b) == dp_lcs(a, b), (a, b)


def naive_is_duplicate(tokens, seen, threshold):
    return any(rouge_l_reference(tokens, other) >= threshold for other in seen)


def mutated(rng, tokens, vocab):
    """A copy of ``tokens`` with a few random substitutions, deletions and insertions."""
    tokens = list(tokens)
    for _ in range(rng.randint(1, 6)):
        i = rng.randint(0, len(tokens))
        op = rng.choice(["sub", "del", "ins"]) if i < len(tokens) else "ins"
        if op == "sub":
            tokens[i] = rng.choice(vocab)
        elif op == "del":
            del tokens[i]
        else:
            tokens.insert(i, rng.choice(vocab))
    return tokens


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_index_decisions_equal_pairwise_rouge_l(threshold):
    rng = random.Random(threshold)
    vocab = [f"w{i}" for i in range(40)]
    index, seen, texts, decisions = NearDuplicateIndex(threshold), [], [], []
    for _ in range(300):
        # Edited copies of earlier texts land on both sides of the threshold, and on it.
        tokens = mutated(rng, rng.choice(texts), vocab) if texts and rng.random() < 0.6 else random_tokens(rng, vocab, 0, 14)
        texts.append(tokens)
        text = " ".join(tokens)
        naive = naive_is_duplicate(tokens, seen, threshold)
        match = index.find_duplicate(text)
        assert (match is not None) == naive, text
        if match is not None:
            assert rouge_l_reference(tokens, seen[match]) >= threshold
        else:
            index.add(text)
            seen.append(tokens)
        decisions.append(naive)
    assert 30 < sum(decisions) < 270  # both kinds of decision were exercised


def test_index_boundary_cases():
    index = NearDuplicateIndex(0.5)
    index.add("alpha beta gamma delta")
    assert index.find_duplicate("alpha beta zeta eta") == 0  # LCS 2 of 4+4: F exactly 0.5 → duplicate
    assert index.find_duplicate("alpha zeta eta theta") is None  # 0.25
    assert index.find_duplicate("delta gamma beta alpha") is None  # same bag of words, LCS 1
    shared = [f"s{i}" for i in range(6)]
    index.add(" ".join(shared + [f"a{i}" for i in range(5)]))  # 11 tokens
    # 13 tokens with LCS 6: rationally 0.5, but rouge_score computes 0.4999999999999999 → not a duplicate.
    assert index.find_duplicate(" ".join(shared + [f"b{i}" for i in range(7)])) is None
    assert index.find_duplicate(" ".join(shared + [f"b{i}" for i in range(5)])) == 1  # 6 of 11+11: 0.545
    index.add("???")
    assert index.find_duplicate("???") is None and index.find_duplicate("") is None  # empty never matches
    assert len(index) == 3


def test_index_counts_repeated_tokens_correctly():
    index = NearDuplicateIndex(0.5)
    index.add("no no no no yes")
    assert index.find_duplicate("no no no") == 0  # LCS 3 of 5+3: 0.75
    assert index.find_duplicate("no maybe perhaps surely") is None  # LCS 1 of 5+4


# --- prompt file, requests, filters ----------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_read_prompt_file(tmp_path):
    pf = read_prompt_file(write(tmp_path / "p.txt", "\n### Instruction: ask things\nWhat is up?\n\nQuery: How are you?\n"))
    assert pf.instruction == "### Instruction: ask things"
    assert pf.seeds == ("What is up?", "How are you?")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ("\n  \n", "is empty"),
        ("### Instruction: ask things\n\n", "no seed queries"),
        ("What is up?\nHow are you?\n", "first line must be an instruction"),
    ],
)
def test_read_prompt_file_rejects_bad_files(tmp_path, text, message):
    with pytest.raises(AlmostError, match=message):
        read_prompt_file(write(tmp_path / "p.txt", text))


def test_build_request_and_first_query():
    request = build_request("### Instruction: ask", ["One?", "Two?"])
    assert request == "### Instruction: ask\nQuery: One?\nQuery: Two?\nQuery:"
    assert first_query(" How do magnets work?\nQuery: next one") == "How do magnets work?"
    assert first_query(" Why is it so? Query: and another") == "Why is it so?"
    assert first_query("\nA second line") == ""


@pytest.mark.parametrize(
    "prompt, reason",
    [
        ("", "empty"),
        ("?!", "no_words"),
        ("tell me a joke", "short_unpunctuated"),
        ("Tell me a joke!", None),
        ("x" * 29, "short_unpunctuated"),
        ("x" * 30, None),
        ("y" * 250, None),
        ("y" * 251, "too_long"),
        ("z" * 251 + "?", "too_long"),
    ],
)
def test_length_rejection(prompt, reason):
    assert length_rejection(prompt, min_chars=30, max_chars=250) == reason


def test_seed_prompt_asset_is_valid_and_has_no_near_duplicates():
    pf = read_prompt_file(SEED_PROMPTS)
    assert pf.instruction.startswith("### Instruction:")
    assert len(pf.seeds) >= 100
    tokens = [rouge_tokens(s) for s in pf.seeds]
    for i, a in enumerate(tokens):
        assert length_rejection(pf.seeds[i], 30, 250) is None, pf.seeds[i]
        for j in range(i):
            assert rouge_l_reference(a, tokens[j]) < 0.5, (pf.seeds[j], pf.seeds[i])


# --- the stage with a scripted engine --------------------------------------------------------------

WORDS = (
    "apple river music engine garden winter planet coffee ladder violin tiger silver candle forest rocket "
    "pillow mirror bridge carpet thunder lemon castle glacier puzzle harbor meadow anchor falcon velvet "
    "lantern orchid canyon pepper marble saddle tunnel walnut"
).split()


def scripted_query(request: str, sample: int) -> str:
    """A deterministic 'model': its answer depends on the request (hence on the sampled examples)."""
    h = int(hashlib.sha256(request.encode()).hexdigest(), 16)
    kind = h % 10
    if kind == 0:
        return "\nQuery: nothing on the first line"
    if kind == 1:
        return " short one\nQuery: x"
    if kind == 2:  # repeat the last example shown: a near-duplicate
        return " " + request.splitlines()[-2].removeprefix("Query: ") + "\n"
    if kind == 3:
        return " " + " ".join(WORDS) * 3 + "?"
    rng = random.Random(h)
    return " " + " ".join(rng.choice(WORDS) for _ in range(7)).capitalize() + "?\nQuery: another"


def pg_config(tmp_path: Path, name: str = "out", **overrides) -> PGArguments:
    prompt_file = tmp_path / "seeds.txt"
    if not prompt_file.exists():
        seeds = [f"What is the {a} of a {b} {c}?" for a, b, c in zip(WORDS, WORDS[5:], WORDS[11:])][:12]
        write(prompt_file, "### Instruction: ask an assistant something\n" + "\n".join(seeds) + "\n")
    settings = dict(
        output_dir=str(tmp_path / name), prompt_file_path=str(prompt_file), num_generation=25, batch_size=4, num_examples=5, seed=7
    )
    settings.update(overrides)
    return PGArguments(**settings)


def read_outputs(output_dir: str) -> tuple[list[str], dict]:
    out = Path(output_dir)
    stats = json.loads((out / "pg_stats.json").read_text())
    stats.pop("generation_seconds")
    return (out / "prompts.txt").read_text().splitlines(), stats


class Killed(BaseException):
    """Like a kill: not an Exception, so nothing on the way up can swallow it."""


class CrashingEngine(ScriptedEngine):
    """Dies on its ``crash_on``-th call."""

    def __init__(self, respond, crash_on: int):
        super().__init__(respond)
        self.crash_on = crash_on

    def generate(self, prompts, sampling, desc=None):
        if len(self.calls) + 1 == self.crash_on:
            raise Killed()
        return super().generate(prompts, sampling, desc)


def test_run_pg_writes_unique_filtered_prompts(tmp_path):
    config = pg_config(tmp_path)
    engine = ScriptedEngine(scripted_query)
    run_pg(config, engine)
    prompts, stats = read_outputs(config.output_dir)
    assert len(prompts) == 25 == stats["accepted"]
    assert set(stats["rejected"]) == {"empty", "short_unpunctuated", "near_duplicate", "too_long"}
    assert stats["requests"] == 4 * stats["rounds"] == 4 * len(engine.calls)
    assert stats["requests"] == stats["accepted"] + stats["accepted_unused"] + sum(stats["rejected"].values())
    seeds = [rouge_tokens(s) for s in read_prompt_file(config.prompt_file_path).seeds]
    for i, p in enumerate(prompts):
        assert length_rejection(p, 30, 250) is None
        assert not naive_is_duplicate(rouge_tokens(p), seeds + [rouge_tokens(q) for q in prompts[:i]], 0.5)
    requests, sampling = engine.calls[0]
    assert len(requests) == 4 and len(set(requests)) == 4  # each request has its own examples
    assert all(r.startswith("### Instruction:") and r.endswith("\nQuery:") and r.count("Query: ") == 5 for r in requests)
    assert (sampling.temperature, sampling.top_p, sampling.max_new_tokens) == (1.2, 0.9, 64)
    # Later rounds draw examples from accepted prompts too.
    assert any(p in engine.calls[-1][0][i] for p in prompts for i in range(4))
    log = [json.loads(line) for line in (Path(config.output_dir) / "pg_rounds.jsonl").read_text().splitlines()]
    assert [row["round"] for row in log] == list(range(stats["rounds"]))
    assert not list(Path(config.output_dir).glob("*.partial*"))


def test_prompts_accepted_earlier_in_a_round_count_for_later_ones(tmp_path):
    config = pg_config(tmp_path, num_generation=1, batch_size=3)
    engine = ScriptedEngine(lambda request, i: " Where do the lanterns of the old harbor go at night?")
    run_pg(config, engine)
    prompts, stats = read_outputs(config.output_dir)
    assert prompts == ["Where do the lanterns of the old harbor go at night?"]
    assert stats["rejected"] == {"near_duplicate": 2} and stats["rounds"] == 1


@pytest.mark.parametrize("crash_on", [1, 2, 5])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, crash_on):
    uninterrupted = pg_config(tmp_path, "uninterrupted")
    run_pg(uninterrupted, ScriptedEngine(scripted_query))

    config = pg_config(tmp_path, "resumed")
    with pytest.raises(Killed):
        run_pg(config, CrashingEngine(scripted_query, crash_on))
    out = Path(config.output_dir)
    assert not (out / "prompts.txt").exists() and not (out / "pg_stats.json").exists()
    partial = out / "pg_rounds.jsonl.partial"
    assert len(partial.read_text().splitlines()) == crash_on - 1
    with open(partial, "a") as f:
        f.write('{"round": 99, "candidates": [{"prompt": "torn')  # killed in the middle of a write
    engine = ScriptedEngine(scripted_query)
    run_pg(config, engine)
    assert read_outputs(config.output_dir) == read_outputs(uninterrupted.output_dir)
    total_rounds = read_outputs(config.output_dir)[1]["rounds"]
    assert len(engine.calls) == total_rounds - (crash_on - 1)  # finished rounds were not generated again


def test_killed_while_finishing_leaves_a_complete_result(tmp_path, monkeypatch):
    from almost.resumable import ResumableJsonl

    def killed_while_moving_the_log(self, order=None):
        raise Killed()

    config = pg_config(tmp_path, num_generation=5)
    with monkeypatch.context() as m:
        m.setattr(ResumableJsonl, "finalize", killed_while_moving_the_log)
        with pytest.raises(Killed):
            run_pg(config, ScriptedEngine(scripted_query))
    out = Path(config.output_dir)
    assert (out / "pg_rounds.jsonl.partial").exists() and len(read_outputs(config.output_dir)[0]) == 5
    assert run_pg(config, CrashingEngine(scripted_query, crash_on=1))["skipped"] is True
    assert (out / "pg_rounds.jsonl").exists() and not list(out.glob("*.partial*"))


def test_finished_run_is_a_no_op_and_overwrite_restarts(tmp_path, capsys):
    config = pg_config(tmp_path, num_generation=5)
    run_pg(config, ScriptedEngine(scripted_query))
    first = read_outputs(config.output_dir)
    untouchable = CrashingEngine(scripted_query, crash_on=1)
    assert run_pg(config, untouchable)["skipped"] is True
    assert "nothing to do" in capsys.readouterr().out
    config.overwrite = True
    engine = ScriptedEngine(scripted_query)
    run_pg(config, engine)
    assert engine.calls and read_outputs(config.output_dir) == first


def test_more_prompts_extend_a_smaller_run(tmp_path):
    run_pg(pg_config(tmp_path, "small", num_generation=6), ScriptedEngine(scripted_query))
    run_pg(pg_config(tmp_path, "large", num_generation=20), ScriptedEngine(scripted_query))
    small, large = read_outputs(str(tmp_path / "small"))[0], read_outputs(str(tmp_path / "large"))[0]
    assert small == large[:6]


def test_a_finished_run_asked_for_more_goes_on_from_its_rounds(tmp_path):
    uninterrupted = pg_config(tmp_path, "uninterrupted", num_generation=20)
    run_pg(uninterrupted, ScriptedEngine(scripted_query))
    small_rounds = run_pg(pg_config(tmp_path, num_generation=6), ScriptedEngine(scripted_query))["rounds"]
    engine = ScriptedEngine(scripted_query)
    grown = run_pg(pg_config(tmp_path, num_generation=20), engine)
    assert read_outputs(str(tmp_path / "out")) == read_outputs(uninterrupted.output_dir)
    assert len(engine.calls) == grown["rounds"] - small_rounds  # the small run's rounds were not drawn again
    # Fewer: the first prompts of the logged rounds, with no generation at all.
    run_pg(pg_config(tmp_path, num_generation=4), CrashingEngine(scripted_query, crash_on=1))
    assert read_outputs(str(tmp_path / "out"))[0] == read_outputs(uninterrupted.output_dir)[0][:4]
    with pytest.raises(AlmostError, match="different settings"):
        run_pg(pg_config(tmp_path, num_generation=30, temperature=0.7), ScriptedEngine(scripted_query))


def test_resuming_with_different_settings_is_refused(tmp_path):
    with pytest.raises(Killed):
        run_pg(pg_config(tmp_path), CrashingEngine(scripted_query, crash_on=3))
    with pytest.raises(AlmostError, match="different settings"):
        run_pg(pg_config(tmp_path, temperature=0.7), ScriptedEngine(scripted_query))
    # --num_generation only decides when to stop, so it may change.
    run_pg(pg_config(tmp_path, num_generation=3), ScriptedEngine(scripted_query))
    assert len(read_outputs(str(tmp_path / "out"))[0]) == 3


def test_gives_up_when_the_model_repeats_itself(tmp_path):
    config = pg_config(tmp_path, num_generation=3, max_rounds=4)
    engine = ScriptedEngine(lambda request, i: " Where do the lanterns of the old harbor go at night?")
    with pytest.raises(AlmostError, match="stopped after 4 rounds with 1 of 3 prompts"):
        run_pg(config, engine)
    assert len(engine.calls) == 4
    assert not (Path(config.output_dir) / "prompts.txt").exists()


# --- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt_text, message",
    [
        (None, "prompt file not found"),
        ("", "is empty"),
        ("### Instruction: ask\n", "no seed queries"),
        ("What is up?\nWhy?\n", "first line must be an instruction"),
    ],
)
def test_cli_bad_prompt_file_exits_2_with_one_line(tmp_path, capsys, prompt_text, message):
    prompt_file = tmp_path / "prompts.txt"
    if prompt_text is not None:
        write(prompt_file, prompt_text)
    out = tmp_path / "out"
    assert cli_main(["pg", "--output_dir", str(out), "--prompt_file_path", str(prompt_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("almost pg: error:") and message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model_name_or_path", "no-such-model"], "unknown model"),
        (["--num_generation", "0"], "--num_generation must be at least 1"),
        (["--backend", "tgi"], "unknown backend"),
    ],
)
def test_cli_bad_settings_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert cli_main(["pg", "--output_dir", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


@pytest.mark.slow
def test_pg_on_the_real_model(tmp_path, smollm2_path, capsys):
    out = tmp_path / "out"
    argv = [
        "pg",
        "--output_dir",
        str(out),
        "--model_name_or_path",
        smollm2_path,
        "--use_hf",
        "--num_generation",
        "3",
        "--batch_size",
        "4",
        "--max_new_tokens",
        "24",
    ]
    assert cli_main(argv) == 0
    prompts = (out / "prompts.txt").read_text().splitlines()
    assert len(prompts) == 3
    seeds = [rouge_tokens(s) for s in read_prompt_file(SEED_PROMPTS).seeds]
    for i, p in enumerate(prompts):
        assert length_rejection(p, 30, 250) is None and "Query:" not in p
        assert not naive_is_duplicate(rouge_tokens(p), seeds + [rouge_tokens(q) for q in prompts[:i]], 0.5)
    stats = json.loads((out / "pg_stats.json").read_text())
    assert stats["accepted"] == 3 and stats["backend"] == "hf"
    assert "wrote 3 prompts" in capsys.readouterr().out
