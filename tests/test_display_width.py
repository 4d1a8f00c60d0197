"""The progress lines of run and trial keep their step, metric and ETA at 80 columns, the sweep's ETA
is known from the first evaluation on, and studies show opens with a summary of the study."""

import re

import optuna
import pytest
from rich.console import Console

from sweep.console import ui
from sweep.data.config import TrialConfig
from sweep.data.hooks import Finished
from sweep.data.result import EvalPoint
from sweep.data.spec import StudySpec

CLOCK = r"\d+:\d\d:\d\d"


@pytest.fixture
def screen(monkeypatch):
    """An 80-column terminal in place of stderr, recording what the progress draws."""
    console = Console(width=80, record=True, force_terminal=True, color_system=None)
    monkeypatch.setattr(ui, "err", console)
    return console


def drawn(screen: Console, progress) -> list[str]:
    screen.print(progress.progress.get_renderable())
    lines = screen.export_text().splitlines()
    assert lines and all(len(line.rstrip()) <= 80 for line in lines), lines
    return [line.rstrip() for line in lines]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sweeps_lines_keep_step_metric_and_eta_at_80_columns(screen):
    progress = ui.SweepProgress("minilm-l6-rotten-tomatoes-3f2a9c1d-with-a-long-suffix", 2, 20)
    hooks = progress.hooks()
    hooks.trial_start(3, TrialConfig(model="/models/some/very/long/path/to/a/checkpoint", eta_a=5e-4))
    hooks.step(3, 12, 300, 0.6931)
    hooks.eval(3, EvalPoint(12, 192, 0.8125, {}, 0.6931))
    sweep, trial = drawn(screen, progress)
    assert "2/20 trials" in sweep and re.search(rf"eta {CLOCK}$", sweep), sweep
    assert "step 12/300" in trial and "eval 0.8125" in trial and re.search(rf"eta ({CLOCK}|-:--:--)$", trial)
    assert trial.startswith("#3 eta_A 5.00e-04")  # the trial's title, shortened first but kept


def test_the_sweeps_eta_is_known_after_the_first_evaluation(screen):
    clock = Clock()
    progress = ui.SweepProgress("s", 2, 20, clock=clock)
    progress.trial_start(3, TrialConfig())
    clock.now += 10
    progress.step(3, 12, 300, 0.6931)
    assert progress.eta() is None and drawn(screen, progress)[0].endswith("eta -:--:--")
    progress.eval(3, EvalPoint(12, 192, 0.81, {}, 0.69))
    # 12 steps in 10 s; left: 288 of this trial and 300 for each of the 17 trials not started
    assert progress.eta() == pytest.approx((288 + 17 * 300) * 10 / 12)
    assert drawn(screen, progress)[-2].endswith("eta 1:14:50")
    clock.now += 10  # a trial that ends leaves its steps in the rate, and one trial fewer to run
    progress.trial_end(Finished(3, "COMPLETE", 0.81, {"eta_a": 5e-4, "lambda": 16.0, "rank": 8}))
    assert progress.eta() == pytest.approx(17 * 300 * 20 / 12)
    sweep = drawn(screen, progress)[-1]
    assert "3/20 trials" in sweep and "best 0.8100" in sweep and sweep.endswith("eta 2:21:40"), sweep


def test_a_trials_line_keeps_step_metric_and_eta_at_80_columns(screen):
    bar = ui.TrialProgress("/home/someone/models/a-long-model-name / /home/someone/data/a-task.csv")
    bar.step(40, 200, 0.5123)
    bar.eval(EvalPoint(40, 640, 0.7654, {}, 0.5123))
    (line,) = drawn(screen, bar)
    assert "step 40/200" in line and "eval 0.7654" in line and re.search(rf"eta ({CLOCK}|-:--:--)$", line)


def _study() -> tuple[dict, list]:
    spec = StudySpec(base=TrialConfig(model="minilm-l6", task="sst2"), objective="accuracy")
    study = optuna.create_study(direction="maximize")
    dist = {"eta_a": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
            "lambda": optuna.distributions.FloatDistribution(1, 64, log=True),
            "rank": optuna.distributions.CategoricalDistribution([4, 8])}
    for value, params, state in ((0.8, {"eta_a": 1e-3, "lambda": 1.0, "rank": 8}, "COMPLETE"),
                                 (0.9, {"eta_a": 2e-3, "lambda": 8.0, "rank": 4}, "COMPLETE"),
                                 (0.5, {"eta_a": 1e-4, "lambda": 32.0, "rank": 8}, "PRUNED")):
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dist, value=value if state == "COMPLETE" else None,
            state=optuna.trial.TrialState[state]))
    trials = sorted(study.trials, key=lambda t: -(t.value or 0))
    return {k: v for k, v in spec.to_dict().items() if k != "storage"}, trials


def test_studies_show_starts_with_the_studys_summary(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    spec, trials = _study()
    ui.print_study("sst2-study", spec, trials, lambda t: t.state.name.lower())
    out = capsys.readouterr().out
    head = out.split('"base"')[0]  # everything before the stored definition
    summary = [line.strip("│ ").split("│") for line in head.splitlines()[:9] if line.count("│") == 3]
    rows = {k.strip(): v.strip() for k, v in summary}
    assert rows == {"study": "sst2-study", "model": "minilm-l6", "task": "sst2",
                    "metric": "accuracy (maximized)", "trials": "3: 2 complete, 1 pruned",
                    "best": "0.9000 (trial #1)", "at": "eta_A 0.002, lambda 8, rank 4"}
    assert out.lstrip().startswith("┌") and out.index("sst2-study") < out.index("{")
    # the base's eta_a, lambda and rank, which the search draws, are not shown as if used
    definition = out[out.index('"base"'):out.index('"eta_a": [')]
    assert '"eta_a"' not in definition and '"lambda"' not in definition and '"rank"' not in definition
