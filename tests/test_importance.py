"""fANOVA parameter importance on hand-built trial frames whose metric depends on one known setting, its
few-trials answers, and the report that writes it as tables and a plot."""

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from sweep.analysis import importance, outputs, plots, report
from sweep.core.errors import SweepError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def frame(metric_of, n=16, study="s", metric="accuracy", seed=0, ranks=(4, 8, 16)):
    """n completed trials drawn as the sampler draws them (log-uniform eta_A and lambda), valued by
    metric_of(eta_a, lambda, rank)."""
    rng = np.random.default_rng(seed)
    eta = 10 ** rng.uniform(-5, -3, n)
    lam = 2 ** rng.uniform(0, 6, n)
    rank = rng.choice(ranks, n)
    return pd.DataFrame({
        "study": study, "model": "bert", "task": "sst2", "metric_name": metric, "number": range(n),
        "state": "COMPLETE", "value": metric_of(eta, lam, rank), "eta_a": eta, "lambda": lam, "rank": rank,
    })


def shares(table, study, over):
    return table[(table["study"] == study) & (table["parameters"] == over)].iloc[0]


EVER = "eta_a, lambda, rank"
EVER_B = "eta_b, lambda, rank"


def assert_most_important(row, setting):
    """`setting` explains most of the variance, three times what any other setting does (a forest on a
    few trials credits the others some)."""
    others = [row[p] for p in row["parameters"].split(", ") if p != setting and not math.isnan(row[p])]
    assert row[setting] > 0.5 and row[setting] > 3 * max(others), row.to_dict()


def test_a_metric_of_lambda_alone_makes_lambda_the_most_important():
    table = importance.importance_table(frame(lambda e, lam, r: -((np.log2(lam) - 3) ** 2)))
    row = shares(table, "s", EVER)
    assert_most_important(row, "lambda")
    assert math.isnan(row["eta_b"])  # not in this parameterisation
    assert row["answer"].startswith("lambda explains ") and "of the variance of accuracy" in row["answer"]
    assert f"{100 * row['lambda']:.0f} %" in row["answer"]


def test_a_metric_of_eta_a_alone_makes_eta_a_the_most_important():
    row = shares(importance.importance_table(frame(lambda e, lam, r: -((np.log10(e) + 4) ** 2))), "s", EVER)
    assert_most_important(row, "eta_a")


def test_a_metric_of_eta_b_is_read_as_eta_b_where_eta_b_is_a_parameter():
    table = importance.importance_table(frame(lambda e, lam, r: -((np.log10(e * lam) + 3.5) ** 2), n=30))
    row = shares(table, "s", EVER_B)
    assert_most_important(row, "eta_b")
    assert math.isnan(row["eta_a"])
    # Over eta_A instead, the same trials credit both learning-rate settings.
    assert shares(table, "s", EVER)["lambda"] > row["lambda"]


def test_shares_and_interactions_make_one_and_a_loss_is_measured_like_an_accuracy():
    rows = frame(lambda e, lam, r: np.log2(lam) + 0.3 * np.log10(e), metric="loss")
    table = importance.importance_table(rows)
    for r in table.to_dict("records"):
        explained = sum(r[p] for p in r["parameters"].split(", "))
        assert explained + r["interactions"] == pytest.approx(1.0, abs=1e-9) or (
            explained > 1 and r["interactions"] == 0)
    # Variance has no direction: the same trials maximised give the same shares.
    flipped = importance.importance_table(rows.assign(value=-rows["value"], metric_name="accuracy"))
    pd.testing.assert_series_equal(table["lambda"], flipped["lambda"])


def test_the_same_trials_give_the_same_shares_every_time():
    rows = frame(lambda e, lam, r: np.sin(np.log2(lam)) + np.log10(e), n=12)
    first, again = importance.importance_table(rows), importance.importance_table(rows.iloc[::-1])
    pd.testing.assert_frame_equal(first, again)


def test_fewer_completed_trials_than_the_minimum_say_so_instead_of_a_number():
    rows = frame(lambda e, lam, r: np.log2(lam), n=5)
    rows.loc[[0, 1], "state"] = ["PRUNED", "FAIL"]  # 3 completed
    table = importance.importance_table(rows)
    assert table["trials"].tolist() == [3, 3]
    assert table[["eta_a", "eta_b", "lambda", "rank", "interactions"]].isna().all().all()
    assert set(table["answer"]) == {f"not enough trials: 3 completed, fANOVA needs {importance.MIN_TRIALS}"}


def test_a_setting_held_at_one_value_has_no_share_and_the_rest_are_measured():
    rows = frame(lambda e, lam, r: np.log2(lam), n=10, ranks=(8,))
    row = shares(importance.importance_table(rows), "s", EVER)
    assert math.isnan(row["rank"])
    assert_most_important(row, "lambda")
    assert "rank one value" in row["answer"]


def test_a_fixed_lambda_says_it_held_one_value():
    rows = frame(lambda e, lam, r: np.log10(e), n=10).assign(**{"lambda": 1.0})
    row = shares(importance.importance_table(rows), "s", EVER)
    assert row["answer"].startswith("lambda held one value across these 10 trials")
    assert_most_important(row, "eta_a")


def test_a_metric_that_never_moved_has_nothing_to_explain():
    table = importance.importance_table(frame(lambda e, lam, r: 0.5 + 0 * e, n=10))
    assert set(table["answer"]) == {"nothing to explain: accuracy was 0.5 in all 10 trials"}
    assert table["interactions"].isna().all()


def test_each_study_is_measured_on_its_own_completed_trials():
    rows = pd.concat([frame(lambda e, lam, r: np.log2(lam), study="by-lambda"),
                      frame(lambda e, lam, r: np.log10(e), study="by-eta", seed=1)], ignore_index=True)
    rows.loc[len(rows)] = {**rows.iloc[0].to_dict(), "number": 99, "state": "COMPLETE", "value": math.inf}
    table = importance.importance_table(rows)
    assert table["study"].tolist() == ["by-eta", "by-eta", "by-lambda", "by-lambda"]
    assert table["trials"].tolist() == [16, 16, 16, 16]  # the infinite value left out
    assert_most_important(shares(table, "by-lambda", EVER), "lambda")
    assert_most_important(shares(table, "by-eta", EVER), "eta_a")


def test_the_report_tables_and_every_format_carry_the_importance():
    rows = frame(lambda e, lam, r: np.log2(lam), n=10).assign(init="standard", tokens=10, wall_time_s=1.0)
    table = report.tables(rows)["importance"]
    assert table["parameters"].tolist() == [EVER, EVER_B, EVER, EVER_B]
    assert table["among"].tolist() == [importance.ALL] * 2 + [importance.NEAR] * 2
    assert "lambda explains" in report.to_format(table, "markdown")
    assert "lambda explains" in report.to_format(table, "csv")
    assert "lambda explains" in report.to_format(table, "json")


def test_plot_importance_writes_a_png_and_refuses_a_study_without_shares(tmp_path):
    table = importance.importance_table(frame(lambda e, lam, r: np.log2(lam), n=10))
    path = plots.plot_importance(table, tmp_path / "importance.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    few = importance.importance_table(frame(lambda e, lam, r: np.log2(lam), n=3))
    with pytest.raises(SweepError, match="not enough trials"):
        plots.plot_importance(few, tmp_path / "few.png")


def test_a_report_folder_holds_the_importance_table_and_a_plot_per_study_with_enough_trials(tmp_path):
    rows = pd.concat([frame(lambda e, lam, r: np.log2(lam), study="full"),
                      frame(lambda e, lam, r: np.log2(lam), n=2, study="few")], ignore_index=True)
    rows = rows.assign(init="standard", tokens=10, wall_time_s=1.0)
    names = {p.name for p in outputs.write(rows, report.tables(rows), tmp_path)}
    assert {"importance.csv", "importance.md", "importance.json", "importance-full.png"} <= names
    assert "importance-few.png" not in names
    assert "not enough trials: 2 completed" in (tmp_path / "importance.md").read_text()


def test_report_out_writes_the_importance_of_a_stored_study(tmp_path):
    from sweep.data.spec import load_spec
    from sweep.study.stored import StoredStudy

    url = f"sqlite:///{tmp_path}/sweep.db"
    spec = load_spec(None, {"model": "bert", "task": "sst2", "sampler": "random", "storage": url,
                            "name": "toy", "n_trials": 10})
    store = StoredStudy.create_or_load(spec)
    for draw in range(10):  # recorded as finished trials are, without training; the metric follows lambda
        running = store.ask(spec, draw=draw)
        cfg = running.config(spec)
        for key, v in (("config", cfg.to_dict()), ("metric_name", "accuracy"), ("tokens", 10)):
            running.note(key, v)
        store.tell(running, "COMPLETE", 0.5 + 0.05 * math.log2(cfg.lam))
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["report", "--storage", url, "--format", "markdown", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "## importance" in res.stdout and "lambda explains" in res.stdout
    assert (out / "importance-toy.png").read_bytes().startswith(PNG_MAGIC)
    written = pd.read_csv(out / "importance.csv")
    assert written["study"].tolist() == ["toy"] * 4 and written["trials"].tolist()[:2] == [10, 10]
    assert written["among"].tolist() == [importance.ALL] * 2 + [importance.NEAR] * 2
    assert written.loc[written["parameters"] == EVER, "lambda"].iloc[0] > 0.5


def test_importance_within_noise_of_the_best_leaves_out_the_collapsed_runs():
    """Runs that collapse past an eta_B cliff make eta_B explain nearly everything over all trials;
    among the trials within noise of the best, what varies is lambda's small effect, and the report's
    second set of rows says so."""
    def metric(e, lam, r):
        return np.where(e * lam > 3e-3, 0.3, 0.80 + 0.01 * np.log2(lam) / 6)

    rows = frame(metric, n=40).assign(metric_se=0.02, init="standard", tokens=10, wall_time_s=1.0)
    table = report.tables(rows)["importance"]
    assert set(table["among"]) == {importance.ALL, importance.NEAR}
    over_all = table[(table["parameters"] == EVER_B) & (table["among"] == importance.ALL)].iloc[0]
    near = table[(table["parameters"] == EVER_B) & (table["among"] == importance.NEAR)].iloc[0]
    assert_most_important(over_all, "eta_b")
    collapsed = int((rows["eta_a"] * rows["lambda"] > 3e-3).sum())
    assert near["trials"] == len(rows) - collapsed >= importance.MIN_TRIALS
    assert_most_important(near, "lambda")
    assert "trials within noise of the best" in near["answer"]


def test_a_report_finds_each_studys_trials_within_noise_once(monkeypatch):
    """The summary's plateau (per model, task and definition) and the importance rows (per study) ask
    about the same trials where a study is its definition's only one: one pass of paired comparisons,
    the same answer as two."""
    def metric(e, lam, r):
        return np.where(e * lam > 3e-3, 0.3, 0.80 + 0.01 * np.log2(lam) / 6)

    rows = pd.concat([frame(metric, n=24, study=s, seed=i) for i, s in enumerate("ab")], ignore_index=True)
    rows = rows.assign(metric_se=0.02, init="standard", tokens=10, wall_time_s=1.0,
                       definition=rows["study"])
    passes = []
    real = report._within_noise
    monkeypatch.setattr(report, "_within_noise", lambda done: passes.append(set(done["study"])) or real(done))
    tables = report.tables(rows)
    assert sorted(map(sorted, passes)) == [["a"], ["b"]]
    for s in "ab":
        alone = rows[rows["study"] == s]
        within = report.plateau_trials(alone)
        assert report.plateau(alone).trials == len(within)
        recommended = tables["summary"].set_index("definition").loc[s, "recommended_trial"]
        assert recommended == report.plateau(alone).recommended["number"]
