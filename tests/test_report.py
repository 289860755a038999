"""``almost report`` on a real tiny run (``conftest.build_tiny_run``): every section's numbers are the
ones the stages wrote, every summary holds exactly the keys its stage declares in ``almost.contracts``,
and the report asks for no key that a stage does not declare."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from almost import contracts
from almost.cli import main as cli
from almost.contracts import (
    CS,
    EVALUATIONS,
    PG,
    REPORT_FIGURES,
    RG_ROW_KEYS,
    RL,
    RM_EVAL,
    RM_TRAIN,
    RMSP,
    RMSP_TURN_KEYS,
    SFT,
    ContractError,
    read_summary,
    write_summary,
)
from almost.run.report import write_report
from almost.run.summary import step_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Every stage's declaration in contracts.py, by its folder in the run.
DECLARED = {
    "pg": PG,
    "cs": CS,
    "rm": RM_TRAIN,
    "rm_eval": RM_EVAL,
    "rmsp": RMSP,
    "sft": SFT,
    "rl": RL,
    **{f"eval/{kind}/*": outputs for kind, outputs in EVALUATIONS.items()},
}


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def test_every_stage_writes_exactly_its_declared_files_and_keys(tiny_run: Path):
    for pattern, outputs in DECLARED.items():
        folders = sorted(tiny_run.glob(pattern))
        assert folders, pattern
        for folder in folders:
            assert set(outputs.files.values()) <= {p.name for p in folder.iterdir()}, folder
            outputs.check_summary(load(folder / outputs.summary_file))
    for turn in load(tiny_run / "rmsp" / RMSP.summary_file)["per_turn"]:
        assert tuple(turn) == RMSP_TURN_KEYS
    assert set(contracts.RESAMPLED_REASONS) <= set(load(tiny_run / "rmsp" / RMSP.summary_file)[contracts.USER_TURNS_KEY])
    rg_files = sorted((tiny_run / "rg").glob("*.jsonl"))
    assert [p.name for p in rg_files] == [contracts.rg_file("tiny-faithful-1shot"), contracts.rg_file("tiny-faithful-2shot")]
    assert all(tuple(row) == RG_ROW_KEYS for path in rg_files for row in rows(path))


def test_the_report_reads_only_declared_keys_of_every_stage(tiny_run: Path, monkeypatch):
    asked: dict[str, set[str]] = {}
    check_key = contracts.StageOutputs.check_key

    def recording(self, key):
        asked.setdefault(self.command, set()).add(key)
        check_key(self, key)  # raises on an undeclared key: the report would fail here

    monkeypatch.setattr(contracts.StageOutputs, "check_key", recording)
    write_report(tiny_run)
    # Every summary the report shows was read through its declaration.
    assert set(asked) == {"pg", "cs", "rm train", "rm eval", "rmsp", "eval hhh", "eval truthfulqa", "eval pairwise"}
    declared = {o.command: o.summary_keys for o in vars(contracts).values() if isinstance(o, contracts.StageOutputs)}
    assert all(keys <= declared[command] for command, keys in asked.items()), asked


def test_report_of_a_real_run_shows_what_the_stages_wrote(tiny_run: Path):
    assert cli(["report", str(tiny_run)]) == 0
    text = (tiny_run / "report.md").read_text()
    # PG: the prompts and pg_stats.json's numbers
    prompts = (tiny_run / "pg" / PG.product_file).read_text().splitlines()
    stats = load(tiny_run / "pg" / PG.summary_file)
    assert f"{len(prompts)} prompts" in text and f"| requests | {stats['requests']} |" in text
    # RG: answers, BAD answers and mean length per configuration
    for path in sorted((tiny_run / "rg").glob("*.jsonl")):
        answers = rows(path)
        good = [len(r["response"]) for r in answers if not r["bad"]]
        bad = len(answers) - len(good)
        assert f"| {path.stem} | {len(answers)} | {bad} | {bad / len(answers):.3f} | {statistics.fmean(good):.3f} |" in text
    # CS: pairs kept per configuration pair, and cs_stats.json's totals
    cs = load(tiny_run / "cs" / CS.summary_file)
    for pair, count in cs["pairs_per_configuration_pair"].items():
        chosen, rejected = pair.split(" > ")
        assert f"| {chosen} | {rejected} | {count} |" in text
    assert f"| dropped_by_filter | {cs['dropped_by_filter']} |" in text
    # RM: held-out agreement (rm train) and rm eval, with the length bias
    held = load(tiny_run / "rm" / RM_TRAIN.summary_file)["heldout"]
    human = load(tiny_run / "rm_eval" / RM_EVAL.summary_file)
    for label, m in (("held-out synthetic pairs (rubric agreement)", held), ("rm_eval", human)):
        assert f"| {label} | {m['n']} | {m['accuracy']:.3f} |" in text
        assert f"| {cell(m['length_bias']['length_only_accuracy'])} |" in text
    # RMSP: per turn, rmsp's own best vs mean candidate reward, and its counts of rejected user turns
    summary = load(tiny_run / "rmsp" / RMSP.summary_file)
    for t in summary["per_turn"]:
        assert f"| {t['turn']} | {t['dialogues']} | {cell(t['mean_best_reward'])} | {cell(t['mean_candidate_reward'])} |" in text
    users = summary[contracts.USER_TURNS_KEY]
    assert f"{users['asked']} asked, {users['samples']} sampled ({users['retries']} re-samples" in text
    # RL: the first and the last logged step
    log = list(csv.DictReader(open(tiny_run / "rl" / RL.files["log"], newline="")))
    assert f"| first log | {float(log[0]['step']):.3f} | {float(log[0]['reward']):.3f} |" in text
    # Evaluation: base vs SFT vs RL in that order, accuracy per evaluation and the pairwise win rate
    hhh = {label: load(tiny_run / "eval" / "hhh" / label / "metrics.json")["accuracy"] for label in ("base", "sft", "rl")}
    truthfulqa = load(tiny_run / "eval" / "truthfulqa" / "base" / "metrics.json")["accuracy"]
    assert f"| base | {hhh['base']:.3f} | {truthfulqa:.3f} | – |" in text
    assert f"| sft | {hhh['sft']:.3f} | – | – |" in text and f"| rl | {hhh['rl']:.3f} | – | – |" in text
    pairwise = load(tiny_run / "eval" / "pairwise" / "sft-vs-base" / "metrics.json")
    assert f"| sft-vs-base | – | – | {pairwise['win_rate']:.3f} |" in text
    assert text.index("| base |") < text.index("| sft |") < text.index("| rl |")
    assert "No " not in text  # every section found its files
    for png in ("rg_answer_lengths", "cs_pairs", "rm_accuracy", "rmsp_rewards", "rl_curves", "eval"):
        path = tiny_run / REPORT_FIGURES / f"{png}.png"
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000, png
        assert f"]({REPORT_FIGURES}/{png}.png)" in text


def test_step_figures_for_the_summary(tiny_run: Path):
    prompts = (tiny_run / "pg" / PG.product_file).read_text().splitlines()
    assert step_figures("pg", tiny_run / "pg" / PG.product_file) == f"{len(prompts)} prompts"
    pairs, cs = rows(tiny_run / "cs" / CS.product_file), load(tiny_run / "cs" / CS.summary_file)
    assert step_figures("cs", tiny_run / "cs" / CS.product_file) == f"{len(pairs)} pairs, {cs['dropped_by_filter']} dropped by the filter"
    first = load(tiny_run / "rmsp" / RMSP.summary_file)["per_turn"][0]
    dialogues = len(rows(tiny_run / "rmsp" / RMSP.product_file))
    expected = f"{dialogues} dialogues, best {first['mean_best_reward']:.2f} vs mean {first['mean_candidate_reward']:.2f} reward (turn 1)"
    assert step_figures("rmsp", tiny_run / "rmsp" / RMSP.product_file) == expected
    held = load(tiny_run / "rm" / RM_TRAIN.summary_file)["heldout"]
    assert step_figures("rm", tiny_run / "rm" / RM_TRAIN.product_file) == f"accuracy {held['accuracy']:.3f} on {held['n']} pairs"
    train = load(tiny_run / "sft" / SFT.summary_file)["train"]
    expected = f"{train['global_step']} steps, loss {train['first_loss']:.3f} → {train['last_loss']:.3f}"
    assert step_figures("sft", tiny_run / "sft" / SFT.product_file) == expected
    log = [r for r in csv.DictReader(open(tiny_run / "rl" / RL.files["log"], newline="")) if r["reward"]]
    first, last = log[0], log[-1]
    expected = f"{len(log)} logged steps, reward {float(first['reward']):.2f} → {float(last['reward']):.2f}, KL {float(last['kl']):.3f}"
    assert step_figures("rl", tiny_run / "rl" / RL.product_file) == expected
    win_rate = load(tiny_run / "eval" / "pairwise" / "sft-vs-base" / "metrics.json")["win_rate"]
    assert step_figures("eval", tiny_run / "eval" / "pairwise" / "sft-vs-base" / "metrics.json") == f"win_rate {win_rate:.3f}"


def test_a_key_no_stage_declares_is_neither_written_nor_read(tmp_path: Path):
    stats = {
        "prompts": 3,
        "pairs": 2,
        "dropped_by_filter": 1,
        "prompts_with_fewer_than_two_valid": 0,
        "valid_answers": {"a": 3, "b": 2},
        "pairs_per_configuration_pair": {"a > b": 2},
        "rubric": [["a"], ["b"]],
    }
    with pytest.raises(ContractError, match="undeclared keys \\['dropped_per_configuration_pair'\\]"):
        write_summary(CS, tmp_path, {**stats, "dropped_per_configuration_pair": {"a > b": 1}})
    with pytest.raises(ContractError, match="missing keys \\['pairs'\\]"):
        write_summary(CS, tmp_path, {k: v for k, v in stats.items() if k != "pairs"})
    assert not (tmp_path / CS.summary_file).exists()
    # Written in the caller's order; an optional key that is off is simply absent.
    path = write_summary(CS, tmp_path, stats)
    assert list(load(path)) == list(stats)
    summary = read_summary(CS, path)
    assert summary["pairs"] == 2 and summary.get("chosen_longer") is None
    with pytest.raises(ContractError, match="does not declare the summary key 'pairs_dropped_by_filter'"):
        summary.get("pairs_dropped_by_filter")


def test_files_directly_in_the_run_folder_are_read_too(tiny_run: Path, tmp_path: Path):
    """The seed release's layout: one output folder for every stage."""
    for name in CS.files.values():
        shutil.copy(tiny_run / "cs" / name, tmp_path / name)
    text = write_report(tmp_path).read_text()
    for pair, count in load(tmp_path / CS.summary_file)["pairs_per_configuration_pair"].items():
        assert "| {} | {} | {} |".format(*pair.split(" > "), count) in text


def test_missing_inputs_are_reported_not_fatal(tmp_path: Path):
    run = tmp_path / "empty"
    run.mkdir()
    text = write_report(run).read_text()
    assert text.count("in this run yet") == 7
    assert not (run / REPORT_FIGURES).exists()


def test_report_of_a_missing_directory_is_one_line_error(tmp_path: Path, capsys):
    assert cli(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run directory not found" in err


def test_a_run_whose_pg_kept_no_prompt_is_reported_as_zero_prompts(tmp_path: Path):
    # Regression: the report and the summary counted prompts with the reader that refuses an empty file.
    (tmp_path / "pg").mkdir()
    product = tmp_path / "pg" / PG.product_file
    product.write_text("\n \n")
    assert "0 prompts in `pg/" in write_report(tmp_path).read_text()
    assert step_figures("pg", product) == "0 prompts"
