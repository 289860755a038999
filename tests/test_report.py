"""``almost report`` on a real tiny run (``conftest.build_tiny_run``): every stage's files and summary
keys are the ones its record declares, and every figure the report and the pipeline's table show is
the one the stages wrote (read back from the report's tables, not compared as formatted text)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
from pathlib import Path

import pytest

from almost import stages
from almost.cli import main as cli
from almost.contracts import REPORT_FIGURES, ContractError, read_summary, write_summary
from almost.run.report import write_report
from almost.run.summary import step_figures
from almost.stages import (
    CS,
    DPO,
    EVAL_HHH,
    EVAL_PAIRWISE,
    EVAL_TRUTHFULQA,
    PG,
    RESAMPLED_REASONS,
    RG,
    RL,
    RM_EVAL,
    RM_TRAIN,
    RMSP,
    RMSP_TURN_KEYS,
    SFT,
    USER_TURNS_KEY,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def table(text: str, first_column: str) -> dict[str, list[str]]:
    """The Markdown table of ``text`` whose header starts with ``first_column``: its rows by first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines[:-1]) if line.startswith(f"| {first_column} |") and lines[i + 1].startswith("|---"))
    found = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        found[cells[0]] = cells[1:]
    return found


def number(cell: str) -> float | None:
    return None if cell == "–" else float(cell)


def shown_with_interval(cells: list[str]) -> list[float]:
    """A figure, its interval ``[low, high]`` and its n, as three table cells, read back as four numbers."""
    value, ci, n = cells
    return [number(value), *numbers(ci), number(n)]


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]


def test_every_stage_writes_exactly_its_declared_files_and_keys(tiny_run: Path):
    for stage in stages.pipeline_stages():
        if stage.outputs.summary is None:
            continue
        folders = sorted(tiny_run.glob(f"{stage.folder}/*" if stage.section == "eval" else stage.folder))
        assert folders, stage.name
        for folder in folders:
            assert set(stage.outputs.files.values()) <= {p.name for p in folder.iterdir()}, folder
            stage.outputs.check_summary(load(folder / stage.outputs.summary_file))
    summary = load(tiny_run / RMSP.folder / RMSP.outputs.summary_file)
    assert all(tuple(turn) == RMSP_TURN_KEYS for turn in summary["per_turn"])
    assert set(RESAMPLED_REASONS) <= set(summary[USER_TURNS_KEY])
    rg_files = sorted((tiny_run / RG.folder).glob("*.jsonl"))
    configurations = ["tiny-faithful-1shot", "tiny-faithful-2shot"]
    assert [p.name for p in rg_files] == [RG.outputs.file("answers", configuration=c) for c in configurations]
    assert all(tuple(row) == RG.outputs.row_keys for path in rg_files for row in rows(path))


def test_report_of_a_real_run_shows_what_the_stages_wrote(tiny_run: Path):
    """Every summary is read through its stage's declaration (``contracts.Summary`` raises on a key the
    stage does not declare), so the report of a whole run also proves it asks for no other key."""
    assert cli(["report", str(tiny_run)]) == 0
    text = (tiny_run / "report.md").read_text()
    assert "No " not in text  # every section found its files
    prompts = (tiny_run / "pg" / PG.outputs.product_file).read_text().splitlines()
    assert int(re.search(r"(\d+) prompts in `pg/", text)[1]) == len(prompts)
    assert number(table(text, PG.outputs.summary_file)["requests"][0]) == load(tiny_run / "pg" / PG.outputs.summary_file)["requests"]

    answers = table(text, "configuration")
    for path in sorted((tiny_run / "rg").glob("*.jsonl")):
        rg = rows(path)
        good = [len(r["response"]) for r in rg if not r["bad"]]
        count, bad, rate, mean = (number(c) for c in answers[path.stem][:4])
        assert (count, bad) == (len(rg), len(rg) - len(good))
        assert (rate, mean) == pytest.approx((bad / len(rg), statistics.fmean(good)), abs=1e-3)

    cs = load(tiny_run / "cs" / CS.outputs.summary_file)
    kept = {(chosen, cells[0]): number(cells[1]) for chosen, cells in table(text, "chosen configuration").items()}
    assert kept == {tuple(pair.split(" > ")): count for pair, count in cs["pairs_per_configuration_pair"].items()}
    assert number(table(text, CS.outputs.summary_file)["dropped_by_filter"][0]) == cs["dropped_by_filter"]

    rm = table(text, "evaluation")
    held, human = (
        load(tiny_run / "rm" / RM_TRAIN.outputs.summary_file)["heldout"],
        load(tiny_run / "rm_eval" / RM_EVAL.outputs.summary_file),
    )
    for label, metrics in (("held-out synthetic pairs (rubric agreement)", held), ("rm_eval", human)):
        n, accuracy, *_, longer, _ = rm[label]
        assert number(n) == metrics["n"]
        assert (number(accuracy), number(longer)) == pytest.approx(
            (metrics["accuracy"], metrics["length_bias"]["length_only_accuracy"]), abs=1e-3
        )

    rmsp = load(tiny_run / "rmsp" / RMSP.outputs.summary_file)
    turns = table(text, "turn")
    for t in rmsp["per_turn"]:
        shown = [number(c) for c in turns[str(t["turn"])]]
        assert shown == pytest.approx([t["dialogues"], t["mean_best_reward"], t["mean_candidate_reward"]], abs=1e-3)
    users = rmsp[USER_TURNS_KEY]
    asked, sampled, retries = numbers(re.search(r"User-simulator turns: .*?re-samples", text)[0])
    assert (asked, sampled, retries) == (users["asked"], users["samples"], users["retries"])

    log = list(csv.DictReader(open(tiny_run / "rl" / RL.outputs.files["log"], newline="")))
    step, reward = (number(c) for c in table(text[text.index("## 6. RL") :], "")["first log"][:2])
    assert (step, reward) == pytest.approx((float(log[0]["step"]), float(log[0]["reward"])), abs=1e-3)

    # base, then each policy in the pipeline's order and its pairings; per evaluation its figure, 95% interval and n
    evaluation = table(text, "model")
    assert list(evaluation) == ["base", "dpo", "dpo-vs-base", "sft", "sft-vs-base", "rl"]
    for label in ("base", "dpo", "sft", "rl"):
        hhh = load(tiny_run / "eval" / "hhh" / label / EVAL_HHH.outputs.summary_file)
        assert shown_with_interval(evaluation[label][:3]) == pytest.approx([hhh["accuracy"], *hhh["ci95"], hhh["n"]], abs=1e-3)
    truthfulqa = load(tiny_run / "eval" / "truthfulqa" / "base" / EVAL_TRUTHFULQA.outputs.summary_file)
    assert shown_with_interval(evaluation["base"][3:6]) == pytest.approx(
        [truthfulqa["accuracy"], *truthfulqa["ci95"], truthfulqa["n"]], abs=1e-3
    )
    split = table(text, "pairing")
    for pairing in ("dpo-vs-base", "sft-vs-base"):
        pairwise = load(tiny_run / "eval" / "pairwise" / pairing / EVAL_PAIRWISE.outputs.summary_file)
        shown = [pairwise["win_rate"], *pairwise["ci95"], pairwise["n"]]
        assert shown_with_interval(evaluation[pairing][6:9]) == pytest.approx(shown, abs=1e-3)
        assert shown_with_interval([*split[pairing][:2], str(pairwise["n"])]) == pytest.approx(shown, abs=1e-3)
    assert evaluation["sft"][3:] == ["–"] * 6

    dpo = load(tiny_run / "dpo" / DPO.outputs.summary_file)["train"]
    logged = table(text, "")
    for when in ("first", "last"):
        row = dpo[f"{when}_log"]
        expected = [row["loss"], row["rewards/accuracies"], row["rewards/margins"]]
        assert [number(c) for c in logged[f"{when} logged step"]] == pytest.approx(expected, abs=1e-3)

    for png in ("rg_answer_lengths", "cs_pairs", "rm_accuracy", "rmsp_rewards", "rl_curves", "eval"):
        path = tiny_run / REPORT_FIGURES / f"{png}.png"
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000, png
        assert f"]({REPORT_FIGURES}/{png}.png)" in text


def test_step_figures_for_the_summary(tiny_run: Path):
    """The line of figures the pipeline prints per step holds the numbers its stage wrote."""
    prompts = (tiny_run / "pg" / PG.outputs.product_file).read_text().splitlines()
    assert numbers(step_figures(PG, tiny_run / "pg" / PG.outputs.product_file)) == [len(prompts)]
    pairs, cs = rows(tiny_run / "cs" / CS.outputs.product_file), load(tiny_run / "cs" / CS.outputs.summary_file)
    assert numbers(step_figures(CS, tiny_run / "cs" / CS.outputs.product_file)) == [len(pairs), cs["dropped_by_filter"]]
    first = load(tiny_run / "rmsp" / RMSP.outputs.summary_file)["per_turn"][0]
    dialogues = len(rows(tiny_run / "rmsp" / RMSP.outputs.product_file))
    expected = [dialogues, first["mean_best_reward"], first["mean_candidate_reward"], 1]
    assert numbers(step_figures(RMSP, tiny_run / "rmsp" / RMSP.outputs.product_file)) == pytest.approx(expected, abs=0.005)
    held = load(tiny_run / "rm" / RM_TRAIN.outputs.summary_file)["heldout"]
    assert numbers(step_figures(RM_TRAIN, tiny_run / "rm" / RM_TRAIN.outputs.product_file)) == pytest.approx(
        [held["accuracy"], held["n"]], abs=5e-4
    )
    human = load(tiny_run / "rm_eval" / RM_EVAL.outputs.summary_file)
    assert numbers(step_figures(RM_EVAL, tiny_run / "rm_eval" / RM_EVAL.outputs.product_file)) == pytest.approx(
        [human["accuracy"], human["n"]], abs=5e-4
    )
    train = load(tiny_run / "sft" / SFT.outputs.summary_file)["train"]
    expected = [train["global_step"], train["first_loss"], train["last_loss"]]
    assert numbers(step_figures(SFT, tiny_run / "sft" / SFT.outputs.product_file)) == pytest.approx(expected, abs=5e-4)
    dpo = load(tiny_run / "dpo" / DPO.outputs.summary_file)["train"]
    expected = [dpo["global_step"], dpo["first_log"]["loss"], dpo["last_log"]["loss"], dpo["last_log"]["rewards/margins"]]
    assert numbers(step_figures(DPO, tiny_run / "dpo" / DPO.outputs.product_file)) == pytest.approx(expected, abs=5e-4)
    log = [r for r in csv.DictReader(open(tiny_run / "rl" / RL.outputs.files["log"], newline="")) if r["reward"]]
    expected = [len(log), float(log[0]["reward"]), float(log[-1]["reward"]), float(log[-1]["kl"])]
    assert numbers(step_figures(RL, tiny_run / "rl" / RL.outputs.product_file)) == pytest.approx(expected, abs=5e-3)
    metrics = tiny_run / "eval" / "pairwise" / "sft-vs-base" / EVAL_PAIRWISE.outputs.summary_file
    assert numbers(step_figures(EVAL_PAIRWISE, metrics)) == pytest.approx([load(metrics)["win_rate"]], abs=5e-4)


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
        write_summary(CS.outputs, tmp_path, {**stats, "dropped_per_configuration_pair": {"a > b": 1}})
    with pytest.raises(ContractError, match="missing keys \\['pairs'\\]"):
        write_summary(CS.outputs, tmp_path, {k: v for k, v in stats.items() if k != "pairs"})
    assert not (tmp_path / CS.outputs.summary_file).exists()
    # Written in the caller's order; an optional key that is off is simply absent.
    path = write_summary(CS.outputs, tmp_path, stats)
    assert list(load(path)) == list(stats)
    summary = read_summary(CS.outputs, path)
    assert summary["pairs"] == 2 and summary.get("chosen_longer") is None
    with pytest.raises(ContractError, match="does not declare the summary key 'pairs_dropped_by_filter'"):
        summary.get("pairs_dropped_by_filter")


def test_files_directly_in_the_run_folder_are_read_too(tiny_run: Path, tmp_path: Path):
    """The seed release's layout: one output folder for every stage."""
    for name in CS.outputs.files.values():
        shutil.copy(tiny_run / "cs" / name, tmp_path / name)
    kept = table(write_report(tmp_path).read_text(), "chosen configuration")
    pairs = load(tmp_path / CS.outputs.summary_file)["pairs_per_configuration_pair"]
    assert {(chosen, cells[0]): number(cells[1]) for chosen, cells in kept.items()} == {
        tuple(pair.split(" > ")): count for pair, count in pairs.items()
    }


def test_missing_inputs_are_reported_not_fatal(tmp_path: Path):
    run = tmp_path / "empty"
    run.mkdir()
    text = write_report(run).read_text()
    assert text.count("in this run yet") == 8
    assert not (run / REPORT_FIGURES).exists()


def test_report_of_a_missing_directory_is_one_line_error(tmp_path: Path, capsys):
    assert cli(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run directory not found" in err


def test_a_run_whose_pg_kept_no_prompt_is_reported_as_zero_prompts(tmp_path: Path):
    # The report and the summary count prompts with the reader that accepts an empty file.
    (tmp_path / "pg").mkdir()
    product = tmp_path / "pg" / PG.outputs.product_file
    product.write_text("\n \n")
    assert "0 prompts in `pg/" in write_report(tmp_path).read_text()
    assert numbers(step_figures(PG, product)) == [0]


def error_bar_spans(ax) -> list[list[tuple[float, float]]]:
    """(low, high) of every bar's error bar, per ``ax.bar`` call, as matplotlib drew them."""
    from matplotlib.container import BarContainer

    drawn = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert drawn and all(c.errorbar is not None for c in drawn), "every bar is drawn with an error bar"
    return [[(low, high) for (_, low), (_, high) in c.errorbar.lines[2][0].get_segments()] for c in drawn]


def test_the_evaluation_plot_draws_each_figures_95_interval_and_says_n_is_small(tiny_run: Path):
    from almost.run.readings import eval_results
    from almost.run.sections import draw_evaluation, label_order
    from almost.run.tables import pyplot

    results = eval_results(tiny_run)
    labels = sorted({label for per_kind in results.values() for label in per_kind}, key=label_order)
    fig, ax = pyplot().subplots()
    draw_evaluation(ax, results, labels)
    expected = [[tuple(results[kind][label]["ci95"]) if label in results[kind] else None for kind in results] for label in labels]
    spans = error_bar_spans(ax)
    for label, drawn, cis in zip(labels, spans, expected):
        for span, ci in zip(drawn, cis):
            if ci is not None:
                assert span == pytest.approx(ci, abs=1e-9), label
    note = ax.get_xlabel().replace("\n", " ")
    hhh_n = load(tiny_run / "eval" / "hhh" / "base" / EVAL_HHH.outputs.summary_file)["n"]
    assert hhh_n < 30 and note.startswith("n < 30: ") and f"hhh n={hhh_n}" in note, note
    pyplot().close(fig)


def test_the_rm_plot_draws_intervals_and_notes_small_n_only_when_there_is_one():
    from almost.run.sections import draw_rm_accuracy
    from almost.run.tables import pyplot
    from almost.stats import reward_pair_metrics, wilson_interval

    def metrics(n: int) -> dict:
        """An RM right on two pairs of three, the chosen answer longer in every other pair."""
        chosen = [1.0 if i % 3 else 0.0 for i in range(n)]
        return reward_pair_metrics(chosen, [0.5] * n, [20 if i % 2 else 10 for i in range(n)], [15] * n)

    for n, small in ((12, True), (80, False)):
        m = metrics(n)
        fig, ax = pyplot().subplots()
        draw_rm_accuracy(ax, [("pairs", m)])
        (spans,) = error_bar_spans(ax)
        bias = m["length_bias"]
        prefer_longer = wilson_interval(round(bias["length_only_accuracy"] * n), n)
        cis = [m["ci95"], m["length_balanced"]["ci95"], bias["chosen_longer"]["ci95"], bias["chosen_shorter"]["ci95"], prefer_longer]
        values = [m["accuracy"], m["length_balanced"]["accuracy"], bias["chosen_longer"]["accuracy"]]
        values += [bias["chosen_shorter"]["accuracy"], bias["length_only_accuracy"]]
        for span, ci, value in zip(spans, cis, values, strict=True):
            # A percentile bootstrap interval may leave the value out: the bar then starts at the value.
            assert span == pytest.approx((min(ci[0], value), max(ci[1], value)), abs=1e-9)
        note = ax.get_xlabel().replace("\n", " ")
        groups = f"pairs n={n}, pairs, length-balanced n={n}, pairs, chosen longer n={n // 2}, pairs, chosen shorter n={n // 2}"
        assert note == f"n < 30: {groups}; intervals on so few items are wide" if small else not note, note
        pyplot().close(fig)
