"""The progress lines of run and trial keep their step, metric and ETA at 80 columns, the sweep's ETA
is known from the first evaluation on."""

import re

import pytest
from rich.console import Console

from sweep import ui
from sweep.config import TrialConfig
from sweep.hooks import Finished
from sweep.result import EvalPoint

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
