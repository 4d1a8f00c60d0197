"""report on hand-built studies (stored trials, no training): reports scoped to named studies, and
what a report of a small study says it cannot tell."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from commands import invoke, one_line
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import create_trial
from test_hostile import snapshot

from sweep.analysis import importance, plots, report

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = {"eta_a": FloatDistribution(1e-5, 1e-1, log=True),
                 "lambda": FloatDistribution(1.0, 64.0, log=True), "rank": CategoricalDistribution([4, 8])}


def store(url: str, name: str, task: str, points: list[tuple[float, float, int, float]],
          metric: str = "accuracy", config: dict | None = None, **attrs) -> None:
    """A study of ours as run stores it, its trials (eta_a, lambda, rank, value) complete."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for key, value in {"model": "minilm-l6", "task": task, "metric_name": metric,
                       "spec": {"base": {"model": "minilm-l6", "task": task}}, **attrs}.items():
        study.set_user_attr(key, value)
    for eta_a, lam, rank, value in points:
        user = {"model": "minilm-l6", "task": task, "metric_name": metric, "metric": value, "tokens": 100,
                "wall_time_s": 1.0, "steps": 5, "init": "standard", "stop_reason": "completed",
                "config": {"task": task, "eta_a": eta_a, "lambda": lam, "rank": rank, **(config or {})}}
        study.add_trial(create_trial(params={"eta_a": eta_a, "lambda": lam, "rank": rank},
                                     distributions=DISTRIBUTIONS, value=value, user_attrs=user))


SEARCH = [(1e-4, 1.0, 8, 0.70), (3e-4, 4.0, 8, 0.75), (1e-3, 16.0, 4, 0.72)]


@pytest.fixture
def box(tmp_path, monkeypatch) -> Path:
    """results/loraplus.db (the default storage) with two studies of other tasks, and a foreign one."""
    (tmp_path / "results").mkdir()
    url = f"sqlite:///{tmp_path}/results/loraplus.db"
    store(url, "demo", "rotten-tomatoes", SEARCH)
    store(url, "other", "bbc-news", [(1e-4, 1.0, 8, 0.50), (2e-4, 8.0, 8, 0.55)])
    optuna.create_study(study_name="foreign", storage=url).optimize(lambda t: t.suggest_float("x", 0, 1),
                                                                     n_trials=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORAPLUS_SWEEP_DEBUG", raising=False)
    return tmp_path


def db(box: Path) -> Path:
    return box / "results" / "loraplus.db"


def test_report_of_a_named_study_holds_that_study_alone(box):
    r = invoke("report", "demo", "--format", "csv")
    assert r.exit_code == 0, r.output
    assert "rotten-tomatoes" in r.stdout and "bbc-news" not in r.stdout
    both = invoke("report", "demo", "other", "--format", "csv")
    assert both.exit_code == 0, both.output
    assert "rotten-tomatoes" in both.stdout and "bbc-news" in both.stdout


def test_report_out_of_a_named_study_writes_its_files_alone(box):
    r = invoke("report", "other", "--out", "results/default")
    assert r.exit_code == 0, r.output
    heatmaps = sorted(p.name for p in (box / "results" / "default").glob("heatmap-*.png"))
    assert heatmaps == ["heatmap-other.png"]
    assert "rotten-tomatoes" not in (box / "results" / "default" / "summary.csv").read_text()


def test_an_unknown_name_is_one_line_naming_it_and_the_stored_studies(box):
    before = snapshot(db(box))
    r = invoke("report", "demo", "nosuch", "--out", "rep")
    assert r.exit_code == 2
    line = one_line(r)
    assert "nosuch" in line and "'demo', 'other')" in line and "studies list" in line
    assert not (box / "rep").exists()  # refused before the output directory is made
    assert snapshot(db(box)) == before


def test_a_named_foreign_study_is_one_line(box):
    r = invoke("report", "foreign")
    assert r.exit_code == 2
    assert "foreign" in one_line(r) and "not written by loraplus-sweep" in one_line(r)


def test_a_named_study_brings_its_confirm_studies_along(box):
    from sweep.study.reporting import selected

    url = f"sqlite:///{db(box)}"
    for name, of in (("demo.confirm", "demo"), ("other.confirm", "other")):
        confirm = optuna.create_study(study_name=name, storage=url, direction="maximize")
        for key, value in (("kind", "confirm"), ("confirm_of", of), ("model", "minilm-l6"), ("task", "t"),
                           ("arms", {})):
            confirm.set_user_attr(key, value)
    assert selected(url, ["demo", "demo"]) == ["demo", "demo.confirm"]


def test_make_demo_reports_the_default_study_alone_into_results_default():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    report = next(line for line in recipe.splitlines() if "loraplus-sweep report" in line)
    assert re.search(r'loraplus-sweep report "\$\$name" --out results/default$', report), report


@pytest.mark.slow
def test_the_demo_study_name_is_the_one_run_default_creates():
    """The Makefile's name is the preset's as run derives it: the committed demo report's heatmap."""
    code = re.search(r"DEMO_STUDY := (.*?)\n\n", (ROOT / "Makefile").read_text(), re.S).group(1)
    code = code.replace("\\\n\t", " ")
    name = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert (ROOT / "results" / "default" / f"heatmap-{name}.png").is_file(), name


# What a small study's report says it cannot tell


def trials(points, task="rotten-tomatoes", metric="accuracy", **config) -> pd.DataFrame:
    """A trials frame as sweep.study.stored makes it: (lambda, value, metric_se) per completed trial."""
    return pd.DataFrame([{
        "study": "s", "model": "minilm-l6", "task": task, "metric_name": metric, "number": i,
        "state": "COMPLETE", "value": value, "metric_se": se, "eta_a": 1e-4 * (i + 1), "lambda": lam,
        "rank": 8, "init": "standard", "tokens": 10, "wall_time_s": 1.0,
        "config": {"task": task, "eta_a": 1e-4 * (i + 1), "lambda": lam, "rank": 8, **config},
    } for i, (lam, value, se) in enumerate(points)])


def test_a_study_of_plain_lora_alone_reports_no_gain_and_says_why(capsys):
    from sweep.console.ui import print_report, print_study_summary

    one = trials([(1.0, 0.79, 0.018)], eval_limit=500)  # run --n-trials 1: the lambda = 1 anchor alone
    row = report.summary(one).iloc[0]
    assert row["lora_plus_trials"] == 0 and math.isnan(row["gain"])
    assert "no LoRA+ trial (lambda > 1) completed" in row["notes"]
    print_study_summary("s", report.summary(one))
    print_report(report.tables(one))
    out = capsys.readouterr().out
    assert "+0.0000" not in out and "LoRA+ gain" not in out
    assert "no LoRA+ trial" in out
    csv = report.to_format(report.summary(one), "csv")
    assert "no LoRA+ trial" in csv


def test_a_gain_on_a_split_of_two_rows_says_it_is_too_small_to_judge():
    tiny = trials([(1.0, 0.5, 0.35), (4.0, 1.0, 0.0)], task="data/toy.csv", eval_limit=2)
    row = report.summary(tiny).iloc[0]
    assert row["gain"] == 0.5 and pd.isna(row["eval_rows"]) and row["eval_rows_at_most"] == 2
    assert "scored on at most 2 validation rows (eval_limit), standard error of accuracy ±0.0000: too " \
           "small to judge (under 100 rows)" in row["notes"]


def test_an_embedded_split_states_its_size_and_binomial_standard_error():
    small = trials([(1.0, 0.74, None), (8.0, 0.80, None)], eval_limit=50)
    row = report.summary(small).iloc[0]
    assert row["eval_rows"] == 50 and row["se"] == pytest.approx(math.sqrt(0.8 * 0.2 / 50))
    assert f"validation split of 50 rows, standard error of accuracy ±{row['se']:.4f}" in row["notes"]
    assert "gain +0.0600 within noise (its standard error ±0.0840)" in row["notes"]
    # The default study's 500 rows are enough to be judged, and a gain of 0.06 there is not noise.
    whole = report.summary(trials([(1.0, 0.74, None), (8.0, 0.80, None)], eval_limit=500)).iloc[0]
    assert whole["eval_rows"] == 500 and whole["notes"] == ""


def test_importance_over_fewer_trials_than_it_needs_says_how_many_instead_of_shares():
    points = [(2.0 ** (i % 6), 0.5 + 0.01 * i, None) for i in range(6)]
    table = importance.importance_table(trials(points))
    assert table["lambda"].isna().all()
    assert set(table["answer"]) == {"not enough trials: 6 completed, fANOVA needs 10"}
    assert "%" not in " ".join(table["answer"])


def test_report_csv_of_a_stored_one_trial_study_says_it_has_no_lora_plus_trial(box):
    store(f"sqlite:///{db(box)}", "first", "rotten-tomatoes", [(1e-4, 1.0, 8, 0.79)])
    r = invoke("report", "first", "--format", "csv")
    assert r.exit_code == 0, r.output
    assert "no LoRA+ trial (lambda > 1) completed" in r.stdout


# The lambda-curve plot


@pytest.fixture
def curve() -> pd.DataFrame:
    """bert on sst2 (accuracy, bins 0, 2 and 4: two empty bins between) and mrpc (f1, bins 0 and 1),
    llama on sst2 (bins 1 and 3); accuracy on 500 rows of an eval_limit sample, so each has an SE."""
    rows = [("bert", "sst2", "accuracy", 1.0, 0.80), ("bert", "sst2", "accuracy", 4.0, 0.85),
            ("bert", "sst2", "accuracy", 16.0, 0.90), ("bert", "mrpc", "f1", 1.0, 0.70),
            ("bert", "mrpc", "f1", 2.0, 0.80), ("llama", "sst2", "accuracy", 2.0, 0.60),
            ("llama", "sst2", "accuracy", 8.0, 0.70)]
    frame = pd.DataFrame([{
        "study": f"{m}-{t}", "model": m, "task": t, "metric_name": metric, "number": i, "state": "COMPLETE",
        "value": v, "eta_a": 1e-4, "lambda": lam, "rank": 8, "init": "standard", "tokens": 10,
        "wall_time_s": 1.0, "config": {"task": t, "eval_limit": 500},
    } for i, (m, t, metric, lam, v) in enumerate(rows)])
    return report.lambda_curve(frame)


def panels(fig) -> dict[str, object]:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}


def test_the_lambda_curves_plot_each_tasks_raw_metric_in_a_panel_of_its_own(curve):
    import matplotlib.pyplot as plt

    fig = plots.lambda_curves_figure(curve)
    try:
        shown = panels(fig)
        assert set(shown) == {"sst2", "mrpc"}
        assert shown["mrpc"].get_ylabel() == "f1 (higher is better)"
        for title, ax in shown.items():
            rows = curve[curve["task"] == title]
            points = {(x, y) for c in ax.containers for x, y in zip(*c.lines[0].get_data(), strict=True)}
            # The values themselves, not a ratio to the task's best.
            assert points == set(zip(rows["lambda"], rows["value"], strict=True)), title
    finally:
        plt.close(fig)


def test_no_line_of_the_lambda_curves_spans_a_bin_without_a_trial(curve):
    import matplotlib.pyplot as plt

    fig = plots.lambda_curves_figure(curve)
    try:
        segments = 0
        for ax in panels(fig).values():
            for line in ax.get_lines():
                if line.get_linestyle() in ("None", "", " ") or len(line.get_xdata()) < 2:
                    continue
                x, y = (np.asarray(v, float) for v in line.get_data())
                drawn = np.isfinite(y[:-1]) & np.isfinite(y[1:]) & (x[:-1] != x[1:])
                steps = np.log2(x[1:] / x[:-1])[drawn]
                assert (steps == 1).all(), (ax.get_title(), x, y)
                segments += len(steps)
        assert segments == 1  # mrpc's bins 0 and 1 alone are neighbours; sst2's bins never are
    finally:
        plt.close(fig)


def test_the_lambda_curves_legend_lies_outside_every_panel(curve):
    import matplotlib.pyplot as plt

    fig = plots.lambda_curves_figure(curve)
    try:
        assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend = fig.legends[0].get_window_extent(renderer)
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "bert" in labels and "llama" in labels
        for ax in panels(fig).values():
            assert not legend.overlaps(ax.get_window_extent(renderer)), ax.get_title()
    finally:
        plt.close(fig)
