"""Rich progress for a trial and for a sweep, on stderr so that stdout stays for results."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sweep.config import TrialConfig
from sweep.hooks import Finished, Hooks
from sweep.result import EvalPoint

err = Console(stderr=True)


def _progress() -> Progress:
    # markup=False: descriptions hold user text (a model path, a task file, a study name), which
    # rich would otherwise read as markup ("[/]" in a path ends the run with a MarkupError).
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[count]}", markup=False),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=True,  # gone when done: the result (or the error) is what stays
    )


class _TrialBar:
    """One trial's bar: step, smoothed loss and the last evaluation."""

    def __init__(self, progress: Progress, title: str) -> None:
        self.progress = progress
        self.id: TaskID = progress.add_task(title, total=None, count="starting", info="")
        self.loss = self.metric = ""

    def step(self, step: int, total: int, loss: float) -> None:
        self.loss = f"loss {loss:.4f}"
        self.progress.update(self.id, completed=step, total=total, count=f"step {step}/{total}",
                             info=f"{self.loss} {self.metric}")

    def eval(self, point: EvalPoint) -> None:
        self.metric = f"eval {point.metric:.4f}"
        self.progress.update(self.id, info=f"{self.loss} {self.metric}")


class TrialProgress:
    """Progress of a single trial (the `trial` command)."""

    def __init__(self, title: str) -> None:
        self.progress = _progress()
        self.bar = _TrialBar(self.progress, title)
        self.step, self.eval = self.bar.step, self.bar.eval

    def __enter__(self) -> TrialProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


class SweepProgress:
    """A bar for the trials finished (complete / pruned / failed, best so far), one per running trial."""

    def __init__(self, study_name: str, done: int, total: int) -> None:
        self.progress = _progress()
        self.sweep = self.progress.add_task(study_name, total=total, completed=done,
                                            count=f"{done}/{total} trials", info="")
        self.running: dict[int, _TrialBar] = {}
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.best_value: float | None = None
        self.best = ""
        self.total = total

    def __enter__(self) -> SweepProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def hooks(self) -> Hooks:
        return Hooks(
            trial_start=self.trial_start,
            step=lambda n, step, total, loss: self.running[n].step(step, total, loss),
            eval=lambda n, point: self.running[n].eval(point),
            trial_end=self.trial_end,
        )

    def trial_start(self, number: int, cfg: TrialConfig) -> None:
        title = f"#{number} eta_A {cfg.eta_a:.2e} lambda {cfg.lam:.3g} r {cfg.rank}"
        self.running[number] = _TrialBar(self.progress, title)

    def trial_end(self, trial: Finished) -> None:
        bar = self.running.pop(trial.number, None)
        if bar is not None:
            self.progress.remove_task(bar.id)
        state = trial.state
        self.counts[state] = self.counts.get(state, 0) + 1
        if state == "COMPLETE" and trial.value is not None:
            if self.best_value is None or trial.value > self.best_value:
                self.best_value = trial.value
                p = trial.params
                self.best = (f"best {trial.value:.4f} (eta_A {p['eta_a']:.2e}, lambda {p['lambda']:.3g}, "
                             f"r {p['rank']})")
        if state in ("COMPLETE", "PRUNED"):
            self.progress.advance(self.sweep)
        done = int(self.progress.tasks[0].completed)
        c = self.counts
        self.progress.update(
            self.sweep,
            count=f"{done}/{self.total} trials",
            info=f"{c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed  {self.best}",
        )
