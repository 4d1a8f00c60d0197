"""Report aggregation, its printout and plots on hand-built trial frames with known answers, and
definitions kept apart from a stored database."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from sweep.analysis import plots, report
from sweep.core.errors import SweepError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRIC = {"sst2": "accuracy", "mrpc": "f1", "mnli": "accuracy", "cola": "matthews"}


def trial(model, task, number, state, value, eta_a, lam, rank=8, tokens=1000, wall_time_s=60.0):
    return {
        "study": f"{model}-{task}",
        "model": model,
        "task": task,
        "metric_name": METRIC[task],
        "number": number,
        "state": state,
        "value": value,
        "eta_a": eta_a,
        "lambda": lam,
        "rank": rank,
        "init": "standard",
        "tokens": tokens,
        "wall_time_s": wall_time_s,
        "seed": 0,  # an extra column, to be ignored
    }


NAN = float("nan")


@pytest.fixture
def trials() -> pd.DataFrame:
    """bert on sst2 and mrpc, llama on mnli only (no lambda = 1 trial), with pruned/failed/running rows.

    Lambda bins, by hand: sst2 {0: 0.82, 2: 0.85, 4: 0.90}, mrpc {0: 0.70, 2: 0.80, 3: 0.78, 4: 0.75},
    mnli {1: 0.60, 2: 0.65, 3: 0.70}.
    """
    rows = [
        trial("bert", "sst2", 0, "COMPLETE", 0.80, 1e-4, 1.0),
        # Ties #1 at lambda ~ 1 with a later number; listed first so row order cannot decide the tie.
        trial("bert", "sst2", 8, "COMPLETE", 0.82, 3e-4, 1.0000001, rank=16),
        trial("bert", "sst2", 1, "COMPLETE", 0.82, 2e-4, 1.0),
        trial("bert", "sst2", 2, "COMPLETE", 0.85, 1e-4, 4.0),
        trial("bert", "sst2", 3, "COMPLETE", 0.90, 5e-5, 16.0),
        trial("bert", "sst2", 4, "COMPLETE", 0.88, 1e-4, 15.0, rank=4),
        trial("bert", "sst2", 5, "PRUNED", 0.99, 1e-4, 16.0),
        trial("bert", "sst2", 6, "FAIL", NAN, 1e-3, 64.0, wall_time_s=5.0),
        trial("bert", "sst2", 7, "RUNNING", NAN, 1e-4, 2.0),
        trial("bert", "mrpc", 0, "COMPLETE", 0.70, 1e-4, 1.0),
        trial("bert", "mrpc", 1, "COMPLETE", 0.80, 1e-4, 4.0),
        trial("bert", "mrpc", 2, "COMPLETE", 0.75, 1e-4, 16.0),
        trial("bert", "mrpc", 3, "COMPLETE", 0.78, 2e-4, 11.3),  # log2 = 3.498 -> bin 3
        trial("bert", "mrpc", 4, "PRUNED", 0.99, 1e-4, 4.0),
        trial("llama", "mnli", 0, "COMPLETE", 0.60, 1e-4, 2.0, rank=16),
        trial("llama", "mnli", 1, "COMPLETE", 0.70, 1e-4, 8.0, rank=16),
        trial("llama", "mnli", 2, "COMPLETE", 0.65, 5e-5, 4.0, rank=16),
        trial("llama", "mnli", 3, "FAIL", NAN, 1e-2, 32.0, rank=16, wall_time_s=5.0),
    ]
    return pd.DataFrame(rows)


def row(frame: pd.DataFrame, **match) -> pd.Series:
    hits = frame
    for key, value in match.items():
        hits = hits[hits[key] == value]
    assert len(hits) == 1, f"expected one row for {match}, got {len(hits)}"
    return hits.iloc[0]


def keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(frame[["model", "task"]].itertuples(index=False, name=None))


def test_completed_keeps_only_complete_trials_with_finite_values():
    df = pd.DataFrame(
        [
            trial("bert", "sst2", 0, "COMPLETE", 0.8, 1e-4, 1.0),
            trial("bert", "sst2", 1, "COMPLETE", math.inf, 1e-4, 1.0),  # Optuna COMPLETEs an inf
            trial("bert", "sst2", 2, "COMPLETE", NAN, 1e-4, 1.0),
            trial("bert", "sst2", 3, "PRUNED", 0.9, 1e-4, 1.0),
            trial("bert", "sst2", 4, "FAIL", NAN, 1e-4, 1.0),
        ]
    )
    assert report.completed(df)["number"].tolist() == [0]


def test_best_configs_pick_the_best_completed_trial_per_model_and_task(trials):
    best = report.best_configs(trials)
    assert keys(best) == [("bert", "mrpc"), ("bert", "sst2"), ("llama", "mnli")]
    sst2 = row(best, task="sst2")  # the pruned 0.99 at lambda 16 does not count
    assert (sst2["study"], sst2["number"], sst2["eta_a"], sst2["lambda"]) == ("bert-sst2", 3, 5e-5, 16.0)
    assert (sst2["rank"], sst2["init"], sst2["value"]) == (8, "standard", 0.90)
    assert sst2["metric_name"] == "accuracy"
    mrpc = row(best, task="mrpc")
    assert (mrpc["number"], mrpc["lambda"], mrpc["value"], mrpc["metric_name"]) == (1, 4.0, 0.80, "f1")
    assert row(best, task="mnli")["number"] == 1


def test_best_configs_break_ties_by_lower_trial_number():
    df = pd.DataFrame(
        [
            trial("bert", "sst2", 5, "COMPLETE", 0.9, 3e-4, 8.0),
            trial("bert", "sst2", 2, "COMPLETE", 0.9, 1e-4, 2.0),
            trial("bert", "sst2", 7, "COMPLETE", 0.9, 2e-4, 4.0),
        ]
    )
    best = report.best_configs(df).iloc[0]
    assert (best["number"], best["eta_a"], best["lambda"]) == (2, 1e-4, 2.0)


def test_plain_lora_gain_is_best_minus_best_at_lambda_one(trials):
    gain = report.plain_lora_gain(trials)
    mrpc = row(gain, task="mrpc")
    assert (mrpc["best"], mrpc["best_lambda"], mrpc["best_plain"]) == (0.80, 4.0, 0.70)
    assert (mrpc["plain_eta_a"], mrpc["plain_rank"]) == (1e-4, 8)
    assert mrpc["gain"] == pytest.approx(0.10)
    assert row(gain, task="sst2")["gain"] == pytest.approx(0.90 - 0.82)


def test_plain_lora_tie_goes_to_lower_number_and_lambda_near_one_counts(trials):
    sst2 = row(report.plain_lora_gain(trials), task="sst2")
    # #1 (eta 2e-4, rank 8) and #8 (lambda 1.0000001, eta 3e-4, rank 16) both reach 0.82.
    assert (sst2["best_plain"], sst2["plain_eta_a"], sst2["plain_rank"]) == (0.82, 2e-4, 8)
    near = report.is_plain(pd.Series([1.0, 1.0000001, 1.00001, 2.0]))
    assert near.tolist() == [True, True, False, False]


def test_plain_lora_gain_is_nan_without_a_lambda_one_trial(trials):
    mnli = row(report.plain_lora_gain(trials), task="mnli")
    assert mnli["best"] == 0.70
    assert math.isnan(mnli["best_plain"]) and math.isnan(mnli["plain_eta_a"]) and math.isnan(mnli["gain"])
    assert mnli["plain_rank"] is pd.NA


def test_lambda_bin_rounds_log2_to_the_nearest_power_of_two():
    assert report.lambda_bin(1.0) == 0
    assert report.lambda_bin(16.0) == 4
    assert report.lambda_bin(11.3) == 3  # log2(11.3) = 3.498
    assert report.lambda_bin(11.4) == 4  # log2(11.4) = 3.511
    assert report.lambda_bin(0.5) == -1
    assert isinstance(report.lambda_bin(16.0), int)


def test_lambda_bin_sends_an_exact_midpoint_up_unlike_round():
    assert round(2.5) == 2  # banker's rounding, which lambda_bin does not use
    assert report.lambda_bin(2.0**2.5) == 3
    assert report.lambda_bin(2.0**3.5) == 4


def test_lambda_bin_of_a_series_is_an_int_series_with_the_same_index():
    bins = report.lambda_bin(pd.Series([1.0, 3.0, 64.0], index=[10, 11, 12]))
    assert bins.tolist() == [0, 2, 6]
    assert bins.index.tolist() == [10, 11, 12]
    assert pd.api.types.is_integer_dtype(bins)


def test_lambda_bin_rejects_non_positive_lambda():
    with pytest.raises(ValueError, match="lambda must be finite and > 0"):
        report.lambda_bin(pd.Series([4.0, 0.0]))


def test_lambda_curve_takes_the_best_value_per_bin_over_eta_and_rank(trials):
    curve = report.lambda_curve(trials)
    sst2 = curve[curve["task"] == "sst2"]
    assert sst2["lambda_bin"].tolist() == [0, 2, 4]
    assert sst2["lambda"].tolist() == [1.0, 4.0, 16.0]
    assert sst2["value"].tolist() == [0.82, 0.85, 0.90]
    assert sst2["eta_a"].tolist() == [2e-4, 1e-4, 5e-5]
    assert sst2["trial_lambda"].tolist() == [1.0, 4.0, 16.0]
    # Completed trials only: bin 0 has #0, #1, #8; bin 4 has #3 and #4 (lambda 15), not the pruned #5.
    assert sst2["trials"].tolist() == [3, 1, 2]
    mrpc = curve[curve["task"] == "mrpc"]
    assert mrpc["lambda_bin"].tolist() == [0, 2, 3, 4]
    assert mrpc["value"].tolist() == [0.70, 0.80, 0.78, 0.75]
    assert mrpc["trial_lambda"].tolist() == [1.0, 4.0, 11.3, 16.0]  # the trial's lambda, not the bin's


def test_lambda_curve_normalises_by_the_tasks_best_value(trials):
    curve = report.lambda_curve(trials)
    mrpc = curve[curve["task"] == "mrpc"]
    assert mrpc["normalised"].tolist() == pytest.approx([0.70 / 0.80, 1.0, 0.78 / 0.80, 0.75 / 0.80])


def test_default_lambda_maximises_the_mean_normalised_value_over_common_bins(trials):
    bert = report.default_lambda(trials)["bert"]
    # Bin 3 (mrpc only, 0.975) is not common to both tasks; of 0, 2, 4 bin 2 has the best mean.
    assert set(bert.by_bin) == {0, 2, 4}
    assert bert.by_bin[0] == pytest.approx((0.82 / 0.90 + 0.70 / 0.80) / 2)
    assert bert.by_bin[4] == pytest.approx((1.0 + 0.75 / 0.80) / 2)
    assert (bert.lambda_bin, bert.lam, bert.n_tasks) == (2, 4.0, 2)
    assert bert.mean_normalised == pytest.approx((0.85 / 0.90 + 1.0) / 2)
    assert bert.spread == pytest.approx((1.0 - 0.85 / 0.90) / 2)  # population std of two values
    assert bert.worst == pytest.approx(0.85 / 0.90)
    assert bert.excluded == ()


def test_default_lambda_of_a_one_task_model_is_its_best_bin_with_no_spread(trials):
    llama = report.default_lambda(trials)["llama"]
    assert (llama.lambda_bin, llama.lam, llama.n_tasks) == (3, 8.0, 1)
    assert (llama.mean_normalised, llama.spread, llama.worst) == (1.0, 0.0, 1.0)


def test_default_lambda_tie_goes_to_the_smaller_lambda():
    df = pd.DataFrame(
        [
            trial("bert", "sst2", 0, "COMPLETE", 0.9, 1e-4, 16.0),
            trial("bert", "sst2", 1, "COMPLETE", 0.9, 1e-4, 4.0),
        ]
    )
    assert report.default_lambda(df)["bert"].lambda_bin == 2


def test_default_lambda_excludes_a_task_whose_best_is_not_positive():
    df = pd.DataFrame(
        [
            trial("bert", "sst2", 0, "COMPLETE", 0.9, 1e-4, 16.0),
            trial("bert", "sst2", 1, "COMPLETE", 0.8, 1e-4, 4.0),
            trial("bert", "cola", 0, "COMPLETE", -0.1, 1e-4, 4.0),  # MCC below chance: no ratio to it
        ]
    )
    assert math.isnan(row(report.lambda_curve(df), task="cola")["normalised"])
    bert = report.default_lambda(df)["bert"]
    assert (bert.lambda_bin, bert.n_tasks, bert.excluded) == (4, 1, ("cola",))


def test_defaults_table_has_one_row_per_model(trials):
    table = report.defaults_table(report.default_lambda(trials))
    assert table["model"].tolist() == ["bert", "llama"]
    assert table["lambda"].tolist() == [4.0, 8.0]
    assert table["n_tasks"].tolist() == [2, 1]


def test_compute_spent_counts_every_state_and_sums_tokens_and_time(trials):
    spent = report.compute_spent(trials)
    assert keys(spent) == [("bert", "mrpc"), ("bert", "sst2"), ("llama", "mnli")]
    sst2 = row(spent, task="sst2")
    counts = [sst2[c] for c in ("trials", "complete", "pruned", "failed", "running")]
    assert counts == [9, 6, 1, 1, 1]
    assert (sst2["tokens"], sst2["wall_time_s"]) == (9000, 8 * 60.0 + 5.0)
    mrpc = row(spent, task="mrpc")
    assert [mrpc[c] for c in ("trials", "complete", "pruned", "failed", "running")] == [5, 4, 1, 0, 0]


def test_compute_spent_counts_a_trial_stopped_by_ctrl_c_as_interrupted_not_failed(trials):
    stopped = trials.index[(trials["task"] == "sst2") & (trials["state"] == "FAIL")]
    marked = trials.assign(stop_reason="")
    marked.loc[stopped, "stop_reason"] = "interrupted by SIGINT (Ctrl-C)"
    sst2 = row(report.compute_spent(marked), task="sst2")
    assert [sst2[c] for c in ("trials", "failed", "interrupted")] == [9, 0, 1]
    assert row(report.compute_spent(trials), task="sst2")["interrupted"] == 0  # no reasons stored


@pytest.fixture
def small() -> pd.DataFrame:
    return pd.DataFrame({"model": ["bert", "a|b"], "rank": [8, 16], "gain": [0.05, np.nan]})


def test_markdown_is_a_pipe_table_with_numbers_right_aligned(small):
    expected = (
        "| model | rank | gain |\n"
        "| --- | ---: | ---: |\n"
        "| bert | 8 | 0.05 |\n"
        "| a\\|b | 16 |  |\n"  # an escaped pipe; NaN as an empty cell
    )
    assert report.to_format(small, "markdown") == expected


def test_csv_has_a_header_and_no_index(small):
    assert report.to_format(small, "csv") == "model,rank,gain\nbert,8,0.05\na|b,16,\n"


def test_json_is_records_with_numbers_and_null_for_nan(small):
    text = report.to_format(small, "json")
    assert json.loads(text) == [
        {"model": "bert", "rank": 8, "gain": 0.05},
        {"model": "a|b", "rank": 16, "gain": None},
    ]
    assert "NaN" not in text and '"8"' not in text


def test_json_writes_a_missing_nullable_int_as_null(trials):
    records = json.loads(report.to_format(report.plain_lora_gain(trials), "json"))
    assert [r["plain_rank"] for r in records] == [8, 8, None]


def test_unknown_format_is_a_value_error(small):
    with pytest.raises(ValueError, match="use one of csv, json, markdown"):
        report.to_format(small, "xlsx")


def assert_png(path, written):
    assert written == path
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5000  # a rendered figure, not an empty canvas


def test_plot_heatmap_writes_a_png(trials, tmp_path):
    path = tmp_path / "heatmap.png"
    assert_png(path, plots.plot_heatmap(trials[trials["study"] == "bert-sst2"], path))


def test_a_grids_ranks_at_one_point_are_drawn_side_by_side(tmp_path):
    eta = pd.Series([1e-3, 1e-2])
    four, eight = plots.dodged(eta, 0, 2), plots.dodged(eta, 1, 2)
    assert (four < eta).all() and (eight > eta).all()  # apart, one each side of the true eta_A
    assert np.allclose(np.sqrt(four * eight), eta)  # the middle of the pair stays put
    assert plots.dodged(eta, 0, 1).equals(eta)  # a single rank is not moved
    grid = pd.DataFrame([trial("bert", "sst2", n, "COMPLETE", 0.8 + n / 100, eta_a, lam, rank)
                         for n, (eta_a, lam, rank) in enumerate(
                             [(e, lam, r) for e in (1e-4, 1e-3) for lam in (1, 8) for r in (4, 8)])])
    path = tmp_path / "grid.png"
    assert_png(path, plots.plot_heatmap(grid, path))


def test_plot_heatmap_refuses_several_studies(trials, tmp_path):
    with pytest.raises(ValueError, match="one study"):
        plots.plot_heatmap(trials, tmp_path / "heatmap.png")


def test_plot_heatmap_of_a_study_without_completed_trials_says_so(trials, tmp_path):
    running = trials[(trials["study"] == "bert-sst2") & (trials["state"] != "COMPLETE")]
    with pytest.raises(SweepError, match="no completed trials"):
        plots.plot_heatmap(running, tmp_path / "heatmap.png")


def test_plot_lambda_curves_writes_a_png(trials, tmp_path):
    path = tmp_path / "curves.png"
    assert_png(path, plots.plot_lambda_curves(report.lambda_curve(trials), path))


def test_a_study_name_never_leads_a_report_file_out_of_its_directory():
    from sweep.core.outfiles import safe_name

    for name in ("../../etc/passwd", "/abs/path", "..", "a/../../b", "ok-name_1.2", "x" * 5000):
        safe = safe_name(name)
        assert "/" not in safe and not safe.startswith(".") and safe and len(safe) <= 89
    assert safe_name("ok-name_1.2") == "ok-name_1.2"
    assert safe_name("a/b") != safe_name("a_b")  # a name that had to change cannot take another's file


def test_grid_equivalent_prices_a_full_grid_over_the_searched_region(trials):
    g = report.grid_equivalent(trials)
    sst2 = row(g, task="sst2")
    # eta_A 5e-5..1e-3: log10 span 1.301 -> 2 per decade -> round(2.60) + 1 = 4 points; lambda bins
    # 0..6 (1..64) -> 7; ranks {4, 8, 16} -> 3: 84 points, each at the median COMPLETE wall time 60 s.
    assert sst2["grid_points"] == 84 and sst2["grid_wall_time_s"] == 84 * 60.0
    assert sst2["trials"] == 9 and sst2["wall_time_s"] == 7 * 60.0 + 5.0 + 60.0  # every state counts
    assert sst2["grid_over_sweep"] == pytest.approx(84 * 60.0 / 485.0)
    assert sst2["grid_tokens"] == 84 * 1000
    mnli = row(g, task="mnli")  # eta 5e-5..1e-2: round(4.60) + 1 = 6; bins 1..5: 5; one rank
    assert mnli["grid_points"] == 30



def defined(rows, definition, **config):
    """Trial rows of one study definition, each with the trial config a study stores."""
    out = []
    for r in rows:
        settings = {"eta_a": r["eta_a"], "lambda": r["lambda"], "rank": r["rank"], "batch_size": 32, **config}
        out.append({**r, "study": f"{r['study']}-{definition}", "definition": definition, "config": settings})
    return out


def complete(task, number, value, lam, eta_a=1e-4, model="bert"):
    return trial(model, task, number, "COMPLETE", value, eta_a, lam)


@pytest.fixture
def two_epochs() -> pd.DataFrame:
    """bert on sst2 as two studies that differ only in epochs, and on mrpc as one study."""
    long = [complete("sst2", 0, 0.80, 1.0), complete("sst2", 1, 0.90, 4.0)]
    short = [complete("sst2", 0, 0.60, 1.0), complete("sst2", 1, 0.70, 16.0, eta_a=2e-4),
             complete("sst2", 2, 0.65, 4.0), trial("bert", "sst2", 3, "FAIL", NAN, 1e-2, 4.0)]
    mrpc = [complete("mrpc", 0, 0.70, 1.0), complete("mrpc", 1, 0.80, 4.0)]
    rows = defined(long, "aaaa1111", epochs=2.0) + defined(short, "bbbb2222", epochs=1.0)
    return pd.DataFrame(rows + defined(mrpc, "cccc3333", epochs=2.0))


def test_two_definitions_of_one_task_stay_two_rows_labelled_by_the_setting_that_differs(two_epochs):
    tables = report.tables(two_epochs)
    summary = tables["summary"]
    sst2 = summary[summary["task"] == "sst2"]
    assert sst2[["definition", "setup", "best", "best_plain", "trials"]].values.tolist() == [
        ["aaaa1111", "epochs=2", 0.90, 0.80, 2],
        ["bbbb2222", "epochs=1", 0.70, 0.60, 4],
    ]
    assert row(summary, task="mrpc")["setup"] == ""  # one definition: nothing to tell apart
    budget = tables["budget"]
    assert budget[budget["task"] == "sst2"]["setup"].tolist() == ["epochs=2", "epochs=1"]
    short = tables["lambda_curve"].query("setup == 'epochs=1'")
    assert short["lambda_bin"].tolist() == [0, 2, 4] and short["value"].tolist() == [0.60, 0.65, 0.70]


def test_default_lambda_counts_each_definition_of_a_task_as_one_named_curve(two_epochs):
    bert = report.default_lambda(two_epochs)["bert"]
    assert bert.tasks == ("mrpc", "sst2 [epochs=1]", "sst2 [epochs=2]") and bert.n_tasks == 3
    assert set(bert.by_bin) == {0, 2}  # bin 4 was tried under epochs=1 alone
    assert bert.lambda_bin == 2
    assert bert.mean_normalised == pytest.approx((1.0 + 0.65 / 0.70 + 1.0) / 3)
    table = report.defaults_table(report.default_lambda(two_epochs))
    assert table["tasks"].tolist() == ["mrpc; sst2 [epochs=1]; sst2 [epochs=2]"]


def test_definitions_whose_stored_settings_agree_are_told_apart_by_their_hash():
    a = defined([complete("sst2", 0, 0.8, 1.0)], "aaaa1111", epochs=1.0)
    b = defined([complete("sst2", 0, 0.7, 4.0)], "bbbb2222", epochs=1.0)  # e.g. another eta_A range
    setups = report.setups(pd.DataFrame(a + b))
    assert setups["setup"].tolist() == ["definition aaaa1111", "definition bbbb2222"]


def test_a_frame_without_definitions_is_one_definition_per_task(trials):
    summary = report.summary(trials)
    assert keys(summary) == [("bert", "mrpc"), ("bert", "sst2"), ("llama", "mnli")]
    assert summary["definition"].tolist() == ["", "", ""] and summary["setup"].tolist() == ["", "", ""]


def test_accuracy_on_an_eval_sample_has_a_binomial_standard_error_per_bin():
    df = pd.DataFrame(defined([complete("sst2", 0, 0.80, 4.0), complete("sst2", 1, 0.75, 4.0),
                               complete("sst2", 2, 0.90, 16.0)], "aaaa1111", eval_limit=500))
    curve = report.lambda_curve(df)
    assert curve["trials"].tolist() == [2, 1]
    assert curve["se"].tolist() == pytest.approx([math.sqrt(0.8 * 0.2 / 500), math.sqrt(0.9 * 0.1 / 500)])
    assert curve["se_basis"].tolist() == ["binomial, n_eval = eval_limit 500"] * 2
    assert curve["normalised_se"].tolist() == pytest.approx([math.sqrt(0.8 * 0.2 / 500) / 0.9,
                                                             math.sqrt(0.9 * 0.1 / 500) / 0.9])


def test_standard_error_is_nan_with_its_reason_where_it_cannot_be_known():
    se, why = report.standard_error("accuracy", 0.8, {"eval_limit": None})
    assert math.isnan(se) and why == "unknown: evaluated on the whole split, whose size is not stored"
    se, why = report.standard_error("f1", 0.8, {"eval_limit": 500})
    assert math.isnan(se) and why == "unknown: f1 is not a proportion"
    se, why = report.standard_error("loss", 2.3, {"eval_limit": 100})
    assert math.isnan(se) and why == "unknown: loss is not a proportion"
    assert report.standard_error("accuracy_mismatched", 0.5, {"eval_limit": 100})[0] == pytest.approx(0.05)


def test_an_embedded_task_scored_whole_has_the_binomial_standard_error_of_its_split():
    se, why = report.standard_error("accuracy", 0.9, {"task": "bbc-news", "eval_limit": None})
    assert se == pytest.approx(math.sqrt(0.9 * 0.1 / 414)) and why == "binomial, n_eval = the whole split 414"
    # An eval_limit above the split's size scores the split whole: its size is n_eval, not the limit.
    assert report.standard_error("accuracy", 0.9, {"task": "drug-reviews", "eval_limit": 500})[1] == (
        "binomial, n_eval = the whole split 196")
    assert report.standard_error("accuracy", 0.5, {"task": "rotten-tomatoes", "eval_limit": 100})[0] == (
        pytest.approx(0.05))


def test_a_metric_that_is_no_proportion_takes_the_trials_stored_bootstrap_standard_error():
    rows = [complete("cola", 0, 0.40, 1.0), complete("cola", 1, 0.43, 4.0), complete("cola", 2, 0.50, 16.0)]
    errors = (0.02, 0.02, 0.03)
    rows = [{**r, "metric_name": "matthews", "metric_se": se} for r, se in zip(rows, errors, strict=True)]
    curve = report.lambda_curve(pd.DataFrame(defined(rows, "aaaa1111", eval_limit=None)))
    assert curve["se"].tolist() == [0.02, 0.02, 0.03]
    assert curve["se_basis"].tolist() == ["bootstrap over the evaluated examples"] * 3
    # 0.43 trails 0.50 by 0.07 > hypot(0.02, 0.03): apart; with wider errors it would be a tie.
    assert curve["within_noise"].tolist() == [False, False, True]
    wide = [{**r, "metric_se": 0.05} for r in rows]
    curve = report.lambda_curve(pd.DataFrame(defined(wide, "aaaa1111", eval_limit=None)))
    assert curve["within_noise"].tolist() == [False, True, True]
    # Accuracy on an embedded task keeps its exact binomial error; elsewhere the stored error of what
    # was scored wins (a split smaller than eval_limit is scored whole); a trial recorded before
    # metric_se reads as before.
    assert report.standard_error("accuracy", 0.5, {"task": "rotten-tomatoes", "eval_limit": 100}, 0.2)[0] == (
        pytest.approx(0.05))
    assert report.standard_error("accuracy", 0.5, {"eval_limit": 100}, 0.07) == (
        0.07, "bootstrap over the evaluated examples")
    assert report.standard_error("accuracy", 0.5, {"eval_limit": 100}, None)[0] == pytest.approx(0.05)
    assert math.isnan(report.standard_error("matthews", 0.5, {}, None)[0])


def test_bins_within_noise_of_the_best_are_reported_as_ties():
    # n_eval 500: SEs 0.0160 and 0.0155, so 0.85 trails 0.86 by less than one SE of the difference.
    df = pd.DataFrame(defined([complete("sst2", 0, 0.70, 1.0), complete("sst2", 1, 0.85, 4.0),
                               complete("sst2", 2, 0.86, 16.0)], "aaaa1111", eval_limit=500))
    assert report.lambda_curve(df)["within_noise"].tolist() == [False, True, True]
    bert = report.default_lambda(df)["bert"]
    assert (bert.lambda_bin, bert.within_noise, bert.tied) == (4, (2, 4), True)
    assert bert.mean_se == pytest.approx(math.sqrt(0.86 * 0.14 / 500) / 0.86)
    assert report.defaults_table({"bert": bert})["within_noise"].tolist() == ["4, 16"]


def test_a_clear_winner_stays_a_single_bin():
    df = pd.DataFrame(defined([complete("sst2", 0, 0.70, 1.0), complete("sst2", 1, 0.80, 4.0),
                               complete("sst2", 2, 0.90, 16.0)], "aaaa1111", eval_limit=2000))
    assert report.lambda_curve(df)["within_noise"].tolist() == [False, False, True]
    bert = report.default_lambda(df)["bert"]
    assert (bert.lambda_bin, bert.within_noise, bert.tied) == (4, (4,), False)
    assert report.defaults_table({"bert": bert})["within_noise"].tolist() == ["16"]


def test_ties_across_tasks_use_the_standard_error_of_the_mean():
    # Normalised gaps 0.0116 (sst2) and 0.0056 (mnli), mean 0.0086; the SE of each bin's mean over the
    # two tasks is about 0.0106, so the difference's is about 0.015: a tie, stated once for the model.
    sst2 = [complete("sst2", 0, 0.85, 4.0), complete("sst2", 1, 0.86, 16.0)]
    mnli = [complete("mnli", 0, 0.895, 4.0), complete("mnli", 1, 0.90, 16.0)]
    df = pd.DataFrame(defined(sst2, "aaaa1111", eval_limit=500) + defined(mnli, "cccc3333", eval_limit=500))
    bert = report.default_lambda(df)["bert"]
    se_4 = math.hypot(math.sqrt(0.86 * 0.14 / 500) / 0.86, math.sqrt(0.9 * 0.1 / 500) / 0.9) / 2
    assert (bert.lambda_bin, bert.within_noise, bert.mean_se) == (4, (2, 4), pytest.approx(se_4))


def test_with_an_unknown_standard_error_only_equal_values_tie():
    equal = pd.DataFrame([complete("sst2", 0, 0.9, 16.0), complete("sst2", 1, 0.9, 4.0)])
    bert = report.default_lambda(equal)["bert"]
    assert (bert.lambda_bin, bert.within_noise) == (2, (2, 4)) and math.isnan(bert.mean_se)
    close = pd.DataFrame([complete("sst2", 0, 0.9, 16.0), complete("sst2", 1, 0.899, 4.0)])
    assert report.default_lambda(close)["bert"].within_noise == (4,)


def test_a_loss_has_no_standard_error_and_its_best_bin_is_the_lowest():
    df = pd.DataFrame([{**complete("sst2", 0, 2.1, 4.0), "metric_name": "loss"},
                       {**complete("sst2", 1, 2.0, 16.0), "metric_name": "loss"}])
    curve = report.lambda_curve(df)
    assert curve["se"].isna().all() and curve["within_noise"].tolist() == [False, True]
    assert report.default_lambda(df)["bert"].within_noise == (4,)


def test_the_rich_report_shows_setups_standard_errors_and_ties(two_epochs, capsys):
    from sweep.console.ui import print_report

    tied = pd.DataFrame(defined([complete("mnli", 0, 0.85, 4.0), complete("mnli", 1, 0.86, 16.0)],
                                "dddd4444", eval_limit=500))
    print_report(report.tables(pd.concat([two_epochs, tied.assign(model="llama")], ignore_index=True)))
    out = capsys.readouterr().out
    assert "sst2 [epochs=1]" in out and "sst2 [epochs=2]" in out
    assert "0.8500*" in out and "±0.0160 n=1" in out  # the tied bin of mnli, with its SE and count
    assert "within noise (lambdas)" in out and "4, 16" in out
    assert "only equal means" in out  # bert's SEs are unknown: f1 and accuracy on the whole split


def test_plot_lambda_curves_draws_each_definition_with_error_bars(two_epochs, tmp_path):
    path = tmp_path / "curves.png"
    sample = two_epochs.assign(config=[{**c, "eval_limit": 500} for c in two_epochs["config"]])
    assert_png(path, plots.plot_lambda_curves(report.lambda_curve(sample), path))


def test_the_stored_report_keeps_two_studies_of_one_task_with_other_epochs_apart(tmp_path):
    from sweep.data.spec import load_spec
    from sweep.study.reporting import gather
    from sweep.study.stored import StoredStudy, settings_hash

    url = f"sqlite:///{tmp_path}/sweep.db"
    hashes, names = {}, set()
    # The third study searches elsewhere at the second's trial settings (head_lr too, which follows
    # the eta_A range unless set): the same trials, pooled.
    studies = ((1.0, [1e-4, 1e-2], 0.6), (2.0, [1e-4, 1e-2], 0.7), (2.0, [1e-3, 1e-1], 0.8))
    for epochs, eta_a, value in studies:
        spec = load_spec(None, {"model": "bert", "task": "sst2", "epochs": epochs, "eval_limit": 100,
                                "sampler": "random", "storage": url, "eta_a": eta_a, "head_lr": 1e-3})
        store = StoredStudy.create_or_load(spec)
        running = store.ask(spec, draw=0)
        cfg = running.config(spec)  # a trial recorded as a finished one would be, without training
        for key, v in (("config", cfg.to_dict()), ("metric_name", "accuracy"), ("tokens", 10)):
            running.note(key, v)
        store.tell(running, "COMPLETE", value)
        hashes[epochs] = settings_hash(store.attrs["spec"])
        names.add(store.name)
    assert len(names) == 3  # three studies
    summary = gather(url).tables["summary"]
    assert summary[["definition", "setup", "best", "trials"]].values.tolist() == sorted(
        [[hashes[1.0], "epochs=1", 0.6, 1], [hashes[2.0], "epochs=2", 0.8, 2]])


def test_compute_spent_says_what_the_finished_trials_ran_in_and_on(trials):
    # The fixture stores neither: "?" for each, one pair.
    assert row(report.compute_spent(trials), task="sst2")["ran_on"] == "?, ?"
    ran = trials.assign(precision="fp32", device="cpu")
    sst2 = ran.index[ran["task"] == "sst2"]
    ran.loc[sst2[:2], ["precision", "device"]] = ["bf16", "NVIDIA H100 80GB HBM3"]
    ran.loc[sst2[-1], "precision"] = "bf16"  # RUNNING: not finished, not counted
    spent = report.compute_spent(ran)
    assert row(spent, task="sst2")["ran_on"] == "fp32, cpu (5); bf16, NVIDIA H100 80GB HBM3 (2)"
    assert row(spent, task="mrpc")["ran_on"] == "fp32, cpu"
    llama = ran.index[ran["model"] == "llama"]
    ran.loc[llama, "state"] = "FAIL"
    assert row(report.compute_spent(ran), task="mnli")["ran_on"] == ""


def test_the_heatmaps_colours_span_at_least_a_standard_error_either_side():
    close = pd.DataFrame({"value": [0.788, 0.792], "metric_se": [0.018, 0.0182]})
    lo, hi = plots.colour_range(close)  # within noise of each other: no longer the scale's two ends
    assert lo == pytest.approx(0.79 - 0.0181) and hi == pytest.approx(0.79 + 0.0181)
    apart = pd.DataFrame({"value": [0.6, 0.8], "metric_se": [0.02, 0.02]})
    assert plots.colour_range(apart) == (0.6, 0.8)
    unknown = pd.DataFrame({"value": [0.788, 0.792], "metric_se": [None, None]})
    assert plots.colour_range(unknown) == (0.788, 0.792)
    assert plots.colour_range(pd.DataFrame({"value": [1.0, 2.0]})) == (1.0, 2.0)
