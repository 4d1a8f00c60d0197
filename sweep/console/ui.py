"""What the commands show: rich progress for a trial and for a sweep on stderr, and results, reports
and stored studies as tables on stdout."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import pandas as pd
from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, Task, TaskID
from rich.table import Column, Table
from rich.text import Text

from sweep.data.config import TrialConfig
from sweep.data.hooks import Finished, Hooks
from sweep.data.result import EvalPoint, TrialResult

err = Console(stderr=True)


# How a progress line fills its width, in order: the title and the bar at their least, then the
# parts of rank 1 (a loss, the trial counts), then more of the title, the time elapsed (rank 2), the
# whole bar, the parts of rank 3 (the best trial's settings) and the whole title. The step or trial
# count, the metric and the ETA (rank None) are always shown.
GROWTH: tuple[tuple[str, int | None], ...] = (("title", 12), ("bar", 10), ("rank", 1), ("title", 32),
                                               ("rank", 2), ("bar", 24), ("rank", 3), ("title", None))
MIN_TITLE = 8  # a title shorter than this says nothing: none instead


def _layout(width: int, title: str, parts: list[tuple[str, int | None]]) -> tuple[int, int, list[int]]:
    """What a progress line of `width` columns shows: (the title's width, the bar's, 0 for none; the
    indices of `parts` kept, each (text, rank): see GROWTH)."""
    kept = [i for i, (text, rank) in enumerate(parts) if rank is None and text]

    def size(title_w: int, bar_w: int, keep: list[int]) -> int:
        text = cell_len(" ".join(parts[i][0] for i in keep))
        return text + (title_w + 1 if title_w else 0) + (bar_w + 1 if bar_w else 0)

    title_w = bar_w = 0
    for what, n in GROWTH:
        if what == "title":
            room = width - size(0, bar_w, kept) - 1
            want = min(cell_len(title) if n is None else n, cell_len(title), room)
            if want >= min(MIN_TITLE, cell_len(title)):
                title_w = max(title_w, want)
        elif what == "bar":
            if size(title_w, n, kept) <= width:
                bar_w = max(bar_w, n)
        else:
            for i, (text, rank) in enumerate(parts):
                if rank == n and text and size(title_w, bar_w, sorted([*kept, i])) <= width:
                    kept = sorted([*kept, i])
    return title_w, bar_w, kept


def _clock(seconds: float | None) -> str:
    return "-:--:--" if seconds is None else str(timedelta(seconds=max(0, int(seconds))))


class _FittedProgress(Progress):
    """Rich progress whose every line fits the terminal's width: at 80 columns a line of rich's
    columns wrapped or lost its bar and ETA. A task's fields: `count` and `metric` (always shown),
    `extra` ((text, rank) parts that give way first, see GROWTH) and `eta` (seconds; where absent,
    rich's own estimate from the task's progress)."""

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        rows = Table.grid()
        for task in tasks:
            if task.visible:
                rows.add_row(self._line(task, self.console.width))
        return rows

    @staticmethod
    def _line(task: Task, width: int) -> RenderableType:
        f = task.fields
        eta = f["eta"] if "eta" in f else task.time_remaining
        elapsed = task.finished_time if task.finished else task.elapsed
        extra = list(f.get("extra", ()))
        parts = [(f.get("count", ""), None), *(e for e in extra if e[1] == 1),
                 (f.get("metric", ""), None), *(e for e in extra if e[1] == 3),
                 (_clock(elapsed or 0), 2), (f"eta {_clock(eta)}", None)]
        # one column short of the width: a terminal may wrap a line that fills its last column
        title_w, bar_w, kept = _layout(width - 1, task.description, parts)
        line = Table.grid(padding=(0, 1))
        cells: list[RenderableType] = []
        if title_w:
            line.add_column(width=title_w, no_wrap=True, overflow="ellipsis")
            cells.append(Text(task.description, style="bold", no_wrap=True, overflow="ellipsis"))
        if bar_w:
            line.add_column(width=bar_w, no_wrap=True)
            cells.append(BarColumn(bar_width=bar_w).render(task))
        line.add_column(no_wrap=True)
        # plain Text, never markup: titles and parts hold user text (a model path, a study name)
        cells.append(Text(" ".join(parts[i][0] for i in kept), no_wrap=True))
        line.add_row(*cells)
        return line


def _progress() -> Progress:
    return _FittedProgress(console=err, transient=True)  # transient: the result (or the error) stays


def _line(text: str) -> None:
    err.print(text, markup=False, highlight=False, soft_wrap=True)


class _TrialBar:
    """One trial's bar: step, smoothed loss and the last evaluation. Where stderr is not a terminal (a
    log file, a batch job's output) rich draws no bars, so each evaluation is also a line there."""

    def __init__(self, progress: Progress, title: str) -> None:
        self.progress = progress
        self.title = title
        self.id: TaskID = progress.add_task(title, total=None, count="starting", metric="")
        self.loss = self.metric = ""
        self.total: int | None = None
        self.at = 0  # the last step taken

    def step(self, step: int, total: int, loss: float) -> None:
        self.loss = f"loss {loss:.4f}"
        self.total, self.at = total, step
        self.progress.update(self.id, completed=step, total=total, count=f"step {step}/{total}",
                             extra=[(self.loss, 1)])

    def eval(self, point: EvalPoint) -> None:
        self.metric = f"eval {point.metric:.4f}"
        self.progress.update(self.id, metric=self.metric)
        if not err.is_terminal:
            _line(f"{self.title}: step {point.step}/{self.total}, {self.metric}, "
                  f"train loss {point.train_loss:.4f}")


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

    def __init__(self, study_name: str, done: int, total: int, sign: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`sign`: +1 where a higher value is better, -1 where lower is (a loss; sweep.core.metrics.sign)."""
        self.sign = sign
        self.progress = _progress()
        self.sweep = self.progress.add_task(study_name, total=total, completed=done,
                                            count=f"{done}/{total} trials", metric="", eta=None)
        self.running: dict[int, _TrialBar] = {}
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.best_value: float | None = None
        self.best = self.best_at = ""
        self.total = total
        # The sweep's ETA from the steps taken per second, known from the first evaluation on: rich's
        # own estimate counts finished trials, and so says nothing until the first one ends.
        self.clock, self.started = clock, clock()
        self.steps_done = 0  # by the trials finished since this process started
        self.trial_steps: int | None = None  # a trial's steps (the latest known): what each trial left takes
        self.evaluated = False

    def __enter__(self) -> SweepProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def hooks(self) -> Hooks:
        return Hooks(
            trial_start=self.trial_start,
            step=self.step,
            eval=self.eval,
            trial_end=self.trial_end,
        )

    def step(self, number: int, step: int, total: int, loss: float) -> None:
        self.running[number].step(step, total, loss)
        self.trial_steps = total
        self._eta()

    def eval(self, number: int, point: EvalPoint) -> None:
        self.running[number].eval(point)
        self.evaluated = True
        self._eta()

    def eta(self) -> float | None:
        """Seconds until the sweep ends: the steps left (of the running trials, and a trial's steps for
        each trial not started) at the rate steps were taken since it started; None before the first
        evaluation, whose time the rate must include. Pruning only shortens it."""
        taken = self.steps_done + sum(bar.at for bar in self.running.values())
        elapsed = self.clock() - self.started
        if not self.evaluated or self.trial_steps is None or taken == 0 or elapsed <= 0:
            return None
        done = int(self.progress.tasks[0].completed)
        left = sum(max(0, (bar.total or self.trial_steps) - bar.at) for bar in self.running.values())
        left += max(0, self.total - done - len(self.running)) * self.trial_steps
        return left * elapsed / taken

    def _eta(self) -> None:
        self.progress.update(self.sweep, eta=self.eta())

    def trial_start(self, number: int, cfg: TrialConfig) -> None:
        title = f"#{number} eta_A {cfg.eta_a:.2e} lambda {cfg.lam:.3g} r {cfg.rank}"
        self.running[number] = _TrialBar(self.progress, title)

    def trial_end(self, trial: Finished) -> None:
        bar = self.running.pop(trial.number, None)
        if bar is not None:
            self.progress.remove_task(bar.id)
            self.steps_done += bar.at
        state = trial.state
        self.counts[state] = self.counts.get(state, 0) + 1
        if state == "COMPLETE" and trial.value is not None:
            if self.best_value is None or self.sign * (trial.value - self.best_value) > 0:
                self.best_value = trial.value
                p = trial.params
                self.best_at = f"(eta_A {p['eta_a']:.2e}, lambda {p['lambda']:.3g}, r {p['rank']})"
                self.best = f"best {trial.value:.4f} {self.best_at}"
        if state in ("COMPLETE", "PRUNED"):
            self.progress.advance(self.sweep)
        done = int(self.progress.tasks[0].completed)
        c = self.counts
        counts = f"{c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed"
        best = [] if self.best_value is None else [(self.best_at, 3)]
        self.progress.update(self.sweep, count=f"{done}/{self.total} trials", extra=[(counts, 1), *best],
                             metric="" if self.best_value is None else f"best {self.best_value:.4f}")
        self._eta()
        if not err.is_terminal:  # no bars in a log: a line per finished trial instead
            what = bar.title if bar is not None else f"#{trial.number}"
            how = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(state, state.lower())
            reason = trial.attrs.get("stop_reason")
            if reason and state != "COMPLETE":  # "pruned at step 160", "failed (out of memory: ...)"
                how = reason if reason.startswith(how) else f"{how} ({reason})"
            value = f"{trial.value:.4f}, " if trial.value is not None else ""
            best = f", {self.best}" if self.best else ""
            _line(f"{what}: {value}{how}; {done}/{self.total} trials, {counts}{best}")


def print_result(r: TrialResult) -> None:
    """One trial's result as a table on stdout."""
    out = Console()
    table = Table(title=Text(f"LoRA+ trial: {r.config.model} on {r.config.task}"), show_header=False)
    c = r.config
    rows = [
        ("eta_A / lambda / eta_B", f"{c.eta_a:.3g} / {c.lam:g} / {c.eta_b:.3g}"),
        ("rank / alpha / init", f"{c.rank} / {c.lora_alpha:g} / {c.init}"),
        (f"{r.metric_name} (final)", f"{r.metric:.4f}"),
        (f"{r.metric_name} (best)", f"{r.best_metric:.4f} at step {r.best_step}"),
        *((name, f"{v:.4f}") for name, v in r.metrics.items() if name != r.metric_name),
        ("stop reason", r.stop_reason),
        ("steps / examples / tokens", f"{r.steps} / {r.examples} / {r.tokens}"),
        ("tokens/s (training)", f"{r.tokens_per_s:,.0f}"),
        ("wall time", f"{r.wall_time_s:.1f} s (training {r.train_time_s:.1f} s)"),
        ("peak memory", f"{r.peak_memory_mb:,.0f} MiB on {r.device}"),
        ("update norm per group", ", ".join(f"{g} {v:.3g}" for g, v in r.update_norms.items())),
    ]
    for k, v in rows:
        _row(table, k, v)
    out.print(table)


def print_report(tables: dict[str, pd.DataFrame], fmt: str = "rich") -> None:
    """The tables of sweep.analysis.report.tables (and "confirm"), on stdout: rich tables, all of them as one
    JSON object or as markdown sections, or the summary as CSV."""
    from sweep.analysis.report import to_format

    if fmt == "json":
        print(json.dumps({name: json.loads(to_format(t, "json")) for name, t in tables.items()}))
        return
    if fmt == "csv":
        print(to_format(tables["summary"], "csv"), end="")
        return
    if fmt == "markdown":
        for name, t in tables.items():
            print(f"## {name}\n\n{to_format(t, 'markdown')}")
        return
    _print_search_tables(tables)
    if "confirm" in tables:
        print_confirm(tables["confirm"])


def _print_search_tables(tables: dict[str, pd.DataFrame]) -> None:
    from sweep.analysis.report import curve_label

    def task(r: dict[str, Any]) -> str:  # the task, with its setup where it has several definitions
        return curve_label(str(r["task"]), r.get("setup") or "")

    out = _stdout()
    s = tables["summary"].to_dict("records")
    t = Table("model", "task", "metric", "best", "eta_A", "lambda", "rank", "λ=1 best", "at eta_A", "gain",
              title="best configuration vs plain LoRA (λ = 1)")
    for r in s:
        _row(t, str(r["model"]), task(r), str(r["metric_name"]), _num(r["best"]),
             _num(r["eta_a"], ".2g"), _num(r["lambda"], ".3g"), _num(r["rank"], ".0f"),
             _num(r["best_plain"]), _num(r["plain_eta_a"], ".2g"), _gain(r))
    out.print(t)
    for r in s:  # what a row cannot tell, where it cannot: a gain without LoRA+, a split too small
        if r.get("notes"):
            out.print(Text(f"{r['model']} / {task(r)}: {r['notes']}"), style="yellow")
    for r in s:  # a region and its centre rather than the first trial to reach the top
        if not _missing(r.get("recommended_trial")):
            out.print(Text(
                f"{r['model']} / {task(r)}: recommended trial {int(r['recommended_trial'])} (eta_A "
                f"{r['recommended_eta_a']:.2g}, lambda {r['recommended_lambda']:.3g}), the centre of the "
                f"{int(r['plateau_trials'])} trial(s) within noise of the best: eta_B "
                f"{r['plateau_eta_b_low']:.2g} to {r['plateau_eta_b_high']:.2g}, "
                f"lambda {r['plateau_lambdas']}"))
    t = Table("model", "task", "trials", "complete", "pruned", "failed", "tokens", "wall time",
              title="compute spent")
    for r in s:
        _row(t, str(r["model"]), task(r), str(r["trials"]), str(r["complete"]), str(r["pruned"]),
             str(r["failed"]), f"{r['tokens']:,}", f"{r['wall_time_s'] / 60:.1f} min")
    out.print(t)
    t = Table("model", "task", "sweep trials", "sweep wall time", "grid points", "grid wall time (est.)",
              "grid / sweep", title="the same region as a full grid (eta_A every half decade, lambda every "
              "power of 2, every rank; each point at the median complete trial's cost)")
    for r in tables["budget"].to_dict("records"):
        _row(t, str(r["model"]), task(r), str(r["trials"]), f"{r['wall_time_s'] / 60:.1f} min",
             str(r["grid_points"]), f"{_num(r['grid_wall_time_s'] / 60, '.1f')} min",
             f"{_num(r['grid_over_sweep'], '.1f')}x")
    out.print(t)
    curve = tables["lambda_curve"]
    if not curve.empty:
        _print_lambda_curve(out, curve, task)
    d = tables["default_lambda"]
    t = Table("model", "default lambda", "mean normalised metric", "± SE", "within noise (lambdas)",
              "spread (std)", "worst task", "tasks",
              title="recommended default lambda (metric normalised per task by its best; each task "
                    "definition counts once)")
    for r in d.to_dict("records"):
        tasks = f"{r['n_tasks']}: {r['tasks']}" + (f" (left out: {r['excluded']})" if r["excluded"] else "")
        noise = r["within_noise"] + ("" if not _missing(r["mean_se"]) else " (SE unknown: only equal means)")
        _row(t, str(r["model"]), f"{r['lambda']:g}", _num(r["mean_normalised"]), _num(r["mean_se"]),
             noise, _num(r["spread"]), _num(r["worst"]), tasks)
    out.print(t)
    for r in d.to_dict("records"):
        out.print(f"{r['model']}: ties judged on {r['noise']}", highlight=False)
    if "importance" in tables and not tables["importance"].empty:
        _print_importance(out, tables["importance"])
    if "sweep_vs_grid" in tables:
        _print_sweep_vs_grid(out, tables["sweep_vs_grid"], task)


def _print_sweep_vs_grid(out: Console, versus: pd.DataFrame, task: Callable[[dict[str, Any]], str]) -> None:
    t = Table("model", "task", "grid points", "grid best", "at", "region", "sweep trials", "sweep best", "at",
              "in region", "trials to noise", "their compute", "sweep / grid",
              title="the sweep against a full grid of the same trials (region: the grid points within noise "
                    "of its best; compute in training tokens where trials record them)")
    for r in versus.to_dict("records"):
        at_grid = f"{r['grid_eta_a']:.2g}, λ {r['grid_lambda']:.3g}, r {r['grid_rank']}"
        at_sweep = f"{r['sweep_eta_a']:.2g}, λ {r['sweep_lambda']:.3g}, r {r['sweep_rank']}"
        to_noise = "never" if _missing(r["trials_to_noise"]) else str(int(r["trials_to_noise"]))
        best = f"{_num(r['grid_best'])} ± {_num(r['grid_se'])}"
        found = "yes" if r["sweep_best_in_region"] else "no"
        _row(t, str(r["model"]), task(r), str(r["grid_points"]), best, at_grid, str(r["region_points"]),
             str(r["sweep_trials"]), _num(r["sweep_best"]), at_sweep, found, to_noise,
             _percent(r["compute_to_noise"]), _percent(r["sweep_over_grid"]))
    out.print(t)


def _gain(r: dict[str, Any]) -> str:
    if not _missing(r["best_plain"]) and not r.get("lora_plus_trials", 1):
        return "no LoRA+ trial"
    return _num(r["gain"], "+.4f")


def _percent(share: Any) -> str:
    return "-" if _missing(share) else f"{100 * share:.0f} %"


def _print_importance(out: Console, shares: pd.DataFrame) -> None:
    """Each study's fANOVA shares over both parameterisations, then its answer in one line."""
    t = Table("model", "task", "study", "trials", "over", "lambda", "eta_A", "eta_B", "rank", "interactions",
              title="parameter importance: the share of the metric's variance each setting explains alone "
                    "(fANOVA)",
              caption="eta_B = lambda * eta_A, so each study is measured over (eta_A, lambda, rank) and over "
                      "(eta_B, lambda, rank): the shares of one row and its interactions make 100 %")
    for r in shares.to_dict("records"):
        _row(t, str(r["model"]), str(r["task"]), str(r["study"]), str(r["trials"]), str(r["parameters"]),
             *(_share(r, c) for c in ("lambda", "eta_a", "eta_b", "rank", "interactions")))
    out.print(t)
    for r in shares.drop_duplicates("study").to_dict("records"):
        out.print(Text(f"{r['study']}: {r['answer']}"))


def _share(r: dict[str, Any], column: str) -> str:
    if column != "interactions" and column not in str(r["parameters"]).split(", "):
        return ""
    if _missing(r["interactions"]):
        return "-"
    return "one value" if _missing(r[column]) else f"{100 * r[column]:.0f} %"


def _print_lambda_curve(out: Console, curve: pd.DataFrame, task: Callable[[dict[str, Any]], str]) -> None:
    """One row per curve, one column per lambda bin: the best value (* where within noise of the
    curve's best), its standard error where known, and the completed trials behind it."""
    lambdas = sorted(curve["lambda"].unique())
    t = Table("model", "task", *(f"{lam:g}" for lam in lambdas),
              title="lambda curve: best metric over eta_A and rank, per lambda bin",
              caption="bin 2^k holds lambda 2^(k-1/2) to 2^(k+1/2), so bin 1 holds 1 to 1.41; under each "
                      "value its standard error (where known) and n, the completed trials in the bin; "
                      "* within noise of the task's best (1 SE of the difference)")
    for _, rows in curve.groupby(["model", "task", "definition"], sort=True):
        cells = {r["lambda"]: r for r in rows.to_dict("records")}
        first = rows.iloc[0].to_dict()
        _row(t, str(first["model"]), task(first), *(_bin_cell(cells.get(lam)) for lam in lambdas))
    out.print(t)


def _bin_cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    se = "" if _missing(r["se"]) else f"±{r['se']:.4f} "
    return f"{r['value']:.4f}{'*' if r['within_noise'] else ''}\n{se}n={r['trials']}"


def print_confirm(frame: pd.DataFrame) -> None:
    """The table of sweep.study.confirm.table, with its footnotes."""
    from sweep.core.stats import MIN_PAIRS
    from sweep.study.confirm import NAMED

    t = Table("model / task\nLoRA+ arm", "pairs", "LoRA+ (eta_A, lambda, r)\nmean ± std",
              "plain (eta_A, r)\nmean ± std", "gain [95% CI]", "p", "MDE (80%)", "verdict",
              "diverged / failed\nLoRA+ | plain", "steps to plain's final", "cost",
              title="confirm: LoRA+ vs plain LoRA, paired by seed")
    # where plain LoRA also ran at LoRA+'s eta_B (--matched), each row says which plain side it pairs
    contrasts = frame["contrast"].nunique() > 1 if "contrast" in frame else False
    for r in frame.to_dict("records"):
        arm = f"lambda bin {_num(r['lambda bin'], '.0f')}" + (" (best)" if r["best"] else "")
        if r.get("lora+ source") == NAMED:
            arm = "your point (--arm)"
        if contrasts:
            arm += f"\nvs {r['contrast']}"
        if isinstance(r.get("split"), str):  # what the runs were scored on, and the arms' one head lr
            head = "" if _missing(r.get("head_lr")) else f", head lr {r['head_lr']:.2g}"
            arm += f"\n{r['split']} split{head}"
        _row(
            t, f"{r['model']} / {r['task']}\n{arm}", str(r["seeds"]),
            f"{r['lora+ eta_a']:.2g}, {r['lora+ lambda']:.3g}, {r['lora+ rank']}\n"
            f"{_num(r['lora+ mean'])} ± {_num(r['lora+ std'])}",
            f"{r['lora eta_a']:.2g}, {r['lora rank']}\n{_num(r['lora mean'])} ± {_num(r['lora std'])}",
            f"{_num(r['gain'], '+.4f')} [{_num(r['ci95 low'], '+.4f')}, {_num(r['ci95 high'], '+.4f')}]"
            + (" *" if r["significant"] else ""),
            _num(r["p"], ".3g"), _num(r["mde80"], ".4f"), str(r["verdict"]),
            f"{r['lora+ diverged']}/{r['lora+ failed']} | {r['lora diverged']}/{r['lora failed']}",
            f"LoRA+ {_num(r['steps lora+'], 'g')} / plain {_num(r['steps lora'], 'g')}",
            f"{r['trials']} trials, {r['tokens']:,} tokens, {r['wall_time_s'] / 60:.1f} min",
        )
    out = _stdout()
    out.print(t)
    significant = frame["significant"].fillna(False).astype(bool).any()
    out.print("* the 95% interval of the paired gain excludes 0" if significant else
              "no gain is significant: every 95% interval contains 0 or rests on too few pairs", style="dim")
    notes = [
        f"pairs: seeds where both arms have a result; a claim needs at least {MIN_PAIRS}",
        "MDE (80%): the smallest true gain these pairs would find 4 times in 5 (two-sided paired t at 95%, "
        "from the observed spread of the differences)",
        "diverged: kept in the pair, scored at the worst value the run recorded; failed: no result, that "
        "seed is left out (a re-run retries it)",
        "steps: the first evaluation at which the mean curve reaches plain LoRA's final mean; -: never",
    ]
    for note in notes:
        out.print(note, style="dim", highlight=False)


def print_study_summary(name: str, summary: pd.DataFrame) -> None:
    """A sweep's last lines, from its row of sweep.analysis.report.summary: trials finished, the best
    configuration, the best plain LoRA and the gain."""
    out = Console()
    for r in summary.to_dict("records") or [{"complete": 0, "pruned": 0, "failed": 0, "best": None}]:
        out.print(Text.assemble((name, "bold"), f": {r['complete'] + r['pruned']} finished trials "
                                f"({r['pruned']} pruned, {r['failed']} failed)"), highlight=False)
        if _missing(r["best"]):
            continue
        metric = "metric" if _missing(r["metric_name"]) else r["metric_name"]
        out.print(f"best {metric} {r['best']:.4f}: eta_A {r['eta_a']:.3g}, lambda {r['lambda']:.3g}, "
                  f"rank {_num(r['rank'], '.0f')} (trial {_num(r['best_trial'], '.0f')})",
                  highlight=False, markup=False)
        if not _missing(r["best_plain"]):
            gain = "" if _missing(r["gain"]) else f"; LoRA+ gain {r['gain']:+.4f}"
            out.print(f"best plain LoRA (lambda = 1): {r['best_plain']:.4f} at eta_A {r['plain_eta_a']:.3g}"
                      f"{gain}", highlight=False)
        if r.get("notes"):
            out.print(Text(r["notes"]), style="yellow")


def print_studies(rows: list[dict[str, Any]]) -> None:
    """sweep.study.stored.list_studies as a table."""
    # A study's name is what show, export and delete take: whole, on one line, at any width, with its
    # count and best value; the model and task (which the name repeats) give way first.
    longest = max((len(r["study"]) for r in rows), default=5)
    table = Table(Column("study", no_wrap=True, min_width=longest), "model", "task",
                  Column("trials", no_wrap=True, min_width=6), Column("best", no_wrap=True, min_width=6),
                  title="studies")
    for r in rows:
        if r.get("foreign"):
            _row(table, r["study"], "(foreign)", "-", r["trials"], _num(r["best"]))
        else:
            _row(table, r["study"], r["model"], r["task"], r["trials"], _num(r["best"]))
    if any(r.get("foreign") for r in rows):
        table.caption = "(foreign): not a loraplus-sweep study; report, export, confirm and worker skip it"
    Console().print(table)


def print_study(name: str, spec: dict[str, Any], trials: list[Any],
                stop_reason: Callable[[Any], str]) -> None:
    """A stored study in brief (what it tunes, its trials by state, its best value and configuration),
    then its trials (Optuna's FrozenTrial) in the order given (StoredStudy.ranked_trials: best first),
    then its definition."""
    out = Console()
    out.print(_study_summary(name, spec, trials))
    table = Table("#", "state", "value", "eta_A", "lambda", "rank", "stop reason", title=Text(name))
    for t in trials:
        p = _drawn(t)
        value = "-" if t.values is None else ", ".join(f"{v:.4f}" for v in t.values)
        _row(table, t.number, t.state.name, value, _param(p, "eta_a"), _param(p, "lambda"),
             p.get("rank", "-"), stop_reason(t))
    out.print(table)
    base = spec.get("base") if isinstance(spec, dict) else None
    if isinstance(base, dict):  # the search draws these: the base's values were never used
        spec = {**spec, "base": {k: v for k, v in base.items() if k not in SEARCHED}}
    out.print(Text("definition (eta_a, lambda and rank come from the search, not from base)"
                   if isinstance(base, dict) else "definition", style="bold"))
    out.print_json(json.dumps(spec))


SEARCHED = ("eta_a", "lambda", "rank")
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
          "WAITING": "queued"}


def _drawn(trial: Any) -> dict[str, Any]:
    from sweep.study.search import point

    try:
        return point(trial.params) or trial.params  # eta_A, whether drawn or eta_B / lambda
    except (TypeError, ZeroDivisionError):  # another tool's parameters of those names
        return trial.params


def _study_summary(name: str, spec: Any, trials: list[Any]) -> Table:
    """The lines a user looks for first: what the study tunes, and what it found."""
    from sweep.core.metrics import direction

    spec = spec if isinstance(spec, dict) else {}
    base = spec.get("base") if isinstance(spec.get("base"), dict) else {}
    # what a study without a stored definition (a confirm study) records of each of its runs
    ran = next((t.user_attrs for t in trials if isinstance(t.user_attrs.get("model"), str)), {})
    model, task = base.get("model", ran.get("model", "-")), base.get("task", ran.get("task", "-"))
    metric = spec.get("objective") or base.get("metric") or ran.get("metric_name")
    if base or metric:  # a study without an objective stored maximizes (sweep.study.stored.study_direction)
        way = direction(str(metric)) if metric else "maximize"
        metric = f"{metric or 'the task metric'} ({way}d)"
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    counts = ", ".join(f"{n} {STATES.get(state, state.lower())}"
                       for state, n in sorted(states.items(), key=lambda kv: -kv[1]))
    # ranked_trials puts the best first; the first complete one with one value is the study's best
    best = next((t for t in trials if t.state.name == "COMPLETE" and t.values and len(t.values) == 1), None)
    table = Table(show_header=False)
    rows = [("study", name), ("model", model), ("task", task),
            ("metric", metric or "-"), ("trials", f"{len(trials)}" + (f": {counts}" if counts else ""))]
    if best is None:
        rows.append(("best", "- (no complete trial yet)"))
    else:
        p = _drawn(best)
        run = best.user_attrs
        arm = f", arm {run['arm']} seed {run.get('seed', '-')}" if isinstance(run.get("arm"), str) else ""
        rows += [("best", f"{best.values[0]:.4f} (trial #{best.number}{arm})"),
                 ("at", f"eta_A {_param(p, 'eta_a')}, lambda {_param(p, 'lambda')}, "
                        f"rank {p.get('rank', '-')}")]
    for k, v in rows:
        _row(table, k, v)
    return table


def _param(params: dict[str, Any], key: str) -> str:
    v = params.get(key)
    return "-" if v is None else format(v, ".3g") if isinstance(v, int | float) else str(v)


def _row(table: Table, *values: Any) -> None:
    """Table cells as plain text: stored names and paths are data, never rich markup."""
    table.add_row(*(Text(str(v)) for v in values))


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _num(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None or pd.isna(v) else format(v, spec)


def _stdout() -> Console:
    """A terminal's own width; 160 columns when piped, so that tables stay whole in files and logs."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def sweep_live(spec: Any, store: Any) -> None:
    """Run a study (sweep.study.workers.run_study) with live progress, then its summary and any grid points
    left without a result. Ctrl-C or SIGTERM raise KeyboardInterrupt once the running trials are
    stored as failed."""
    from sweep.analysis import report
    from sweep.console.tracking import tracking
    from sweep.data.hooks import chain
    from sweep.study.storage import mask_url
    from sweep.study.workers import run_study

    done = store.finished_count()
    err.print(Text.assemble("study ", (spec.study_name, "bold"), f" in {mask_url(spec.storage)}: {done} of "
                            f"{spec.n_trials} trials finished"), highlight=False, soft_wrap=True)
    with (tracking(spec.track, store.name, spec.track_dir, warn=_warn) as tracked,
          SweepProgress(spec.study_name, done, spec.n_trials, _sign(spec)) as progress):
        run_study(spec, chain(progress.hooks(), tracked), store)
    print_study_summary(store.name, report.summary(store.frame()))
    missing = store.missing_grid_points(spec)
    if missing:
        err.print(f"{len(missing)} of {len(spec.grid)} grid points have no result (last failure: "
                  f"{missing[-1] or 'no reason recorded'}); run the same command again to retry them",
                  highlight=False, soft_wrap=True, markup=False)


def _sign(spec: Any) -> float:
    """+1 where the study's metric is better higher, -1 where lower (the study's own direction)."""
    from sweep.study.stored import study_direction

    return 1.0 if study_direction(spec) == "maximize" else -1.0


def _warn(message: str) -> None:
    """A line above the live progress (a tracker that failed mid-sweep)."""
    err.print(message, style="yellow", highlight=False, markup=False, soft_wrap=True)


def trial_live(cfg: TrialConfig, on_end: Callable[[Any, Any], None] | None = None) -> TrialResult:
    """One trial (sweep.engine.train.run_trial) with a progress bar, after the checks that would fail it
    (a one-class task, a missing device, too long inputs: one line, no training). `on_end` goes to
    run_trial (it gets the trained model and tokenizer)."""
    from sweep.core.quiet import quiet_libraries
    from sweep.engine.checks import check_trial
    from sweep.engine.train import run_trial

    quiet_libraries()
    task = check_trial(cfg).task
    with TrialProgress(f"{cfg.model} / {cfg.task}") as bar:
        return run_trial(cfg, on_eval=bar.eval, on_step=bar.step, task=task, on_end=on_end)


def confirm_live(study: Any, spec: Any, plan: Any) -> list[Any]:
    """Run a confirm plan (sweep.study.confirm.run_confirm) with live progress; the summaries of its arms."""
    from sweep.console.tracking import tracking
    from sweep.data.hooks import chain
    from sweep.study import confirm

    for arm in plan.arms:
        err.print(f"{arm.name}: eta_A {arm.eta_a:.3g}, lambda {arm.lam:.3g}, rank {arm.rank} ({arm.source})",
                  highlight=False, markup=False)
    done = confirm.runs_stored(spec.storage, plan)
    with (tracking(spec.track, plan.name, spec.track_dir, warn=_warn) as tracked,
          SweepProgress(plan.name, done, plan.runs, _sign(spec)) as progress):
        result = confirm.run_confirm(study, spec, plan, chain(progress.hooks(), tracked))
    return confirm.summaries(result, tuple(a.name for a in plan.challengers))
