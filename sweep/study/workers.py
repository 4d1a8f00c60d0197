"""Workers: the loops that take trials from a stored study until it holds its budget of finished
trials. `run`, `worker` and `confirm` all run their trials through this one loop.

One worker per slot (a GPU, or a share of the CPU cores) runs in this process; any number of such
processes, on any number of machines, can share one study. A worker takes a trial only under the
study lock and only while finished plus running trials are below the budget, so the study ends with
exactly its budget of finished trials however many workers share it. (Optuna's MaxTrialsCallback
only stops a worker after the budget is reached, by which time others may have started more.)

Trials whose worker is gone are failed with a reason and queued again (StoredStudy.reclaim).
Ctrl-C and SIGTERM only ask the workers to stop (sweep.core.signals): each fails its running trial with
the reason before the process exits.
"""

from __future__ import annotations

import math
import os
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from sweep.analysis import report
from sweep.core.errors import SweepStopped
from sweep.core.signals import Interrupted, Stop, stop_on_signals
from sweep.data.config import TrialConfig, is_plain
from sweep.data.hooks import Finished, Hooks
from sweep.data.result import EvalPoint, StopReason, TrialResult
from sweep.data.spec import StudySpec
from sweep.engine.trial_process import (
    Slot,
    SlotProcess,
    TrialFailed,
    close_early,
    make_slots,
    prestart,
    slot_process,
)
from sweep.study import search
from sweep.study.stored import FINISHED, RunningTrial, StoredStudy

# A sweep whose trials keep failing has a problem no further trial will fix (a model that does
# not fit, a broken data set): stop and say so rather than burn the budget.
MAX_FAILURES_IN_A_ROW = 5
POLL_S = 2.0  # how often a worker with nothing to do looks again (others' trials may fail)
# Grid points queued at a time: queueing writes a trial per point (8 to 25 ms on SQLite), so a grid
# of 100,000 queued up front took 13 to 40 minutes before its first trial, and then each count of
# the study's trials read every queued one.
GRID_BATCH = 32
# A replicate of round r trains at the study's seed + this + r: past the seeds confirm uses (+ 1, + 2,
# ...), so that a confirm run never repeats a replicate, which the race chose its arms by.
REPLICATE_SEED_OFFSET = 1000


def run_trial(cfg: TrialConfig, **hooks) -> TrialResult:
    """sweep.engine.train.run_trial, imported on first use: a sweep whose trials run in their own processes
    never imports torch and transformers for them (its slots' processes start while it checks)."""
    from sweep.engine.train import run_trial as run

    return run(cfg, **hooks)


def execute(trial: RunningTrial, cfg: TrialConfig, spec: StudySpec, hooks: Hooks, slot: SlotProcess,
            cancel: Stop) -> tuple[str, float | None]:
    """Run one trial on its slot and record it; (state, value): COMPLETE with the metric, PRUNED
    (stopped by the pruner, or diverged: a result about its learning rates), or FAIL with the reason
    stored. Setting `cancel` interrupts it (sweep.core.signals.Interrupted), its reason stored."""
    n = trial.number
    if hooks.trial_start:
        hooks.trial_start(n, cfg)
    # Plain LoRA is what every LoRA+ trial is judged against, and pruning judges by values before
    # the end, which favour whatever converges faster: the very claim under test. A plain-LoRA trial
    # runs to the end; the pruner still hears its values (successive halving ranks a rung by them).
    # So does a replicate (a trial at a seed of its own): its final value is what the race compares.
    anchor = is_plain(cfg.lam) or cfg.seed != spec.base.seed

    def on_eval(point: EvalPoint) -> bool:
        if hooks.eval:
            hooks.eval(n, point)
        return trial.report(point.metric, point.step) and not anchor

    def on_step(step: int, total: int, loss: float) -> None:
        if hooks.step:
            hooks.step(n, step, total, loss)
        cancel.check()  # a trial in this process has no other way to hear of it

    trial.note("slot", slot.slot.label)
    try:
        if spec.in_process:
            try:
                result = run_trial(cfg, on_eval=on_eval, on_step=on_step)
            except Exception as e:  # as a child's failure would be: the trial fails, the sweep goes on
                first = str(e).splitlines()[0] if str(e) else ""
                raise TrialFailed(f"{type(e).__name__}: {first}", traceback.format_exc()) from e
        else:
            result = slot.run(cfg, on_eval, on_step, spec.trial_timeout, cancel)
    except KeyboardInterrupt as e:
        trial.note("stop_reason", str(e) or "interrupted by the user")
        raise
    except TrialFailed as e:
        trial.note("stop_reason", str(e))
        if e.detail:
            trial.note("traceback", e.detail[-4000:])
        return "FAIL", None
    trial.record(result)
    if result.stop is StopReason.DIVERGED:
        return "PRUNED", None
    if result.stop is StopReason.STOPPED:
        trial.note("stop_reason", f"pruned at step {result.steps}")
        return "PRUNED", None
    if not math.isfinite(result.metric):
        trial.note("stop_reason", f"non-finite {result.metric_name}: {result.metric}")
        return "FAIL", None
    return "COMPLETE", result.metric


def run_to_end(store: StoredStudy, trial: RunningTrial, cfg: TrialConfig, spec: StudySpec, hooks: Hooks,
               slot: SlotProcess, stop: Stop) -> Finished:
    """Run the trial and tell the study how it ended: complete, pruned, or failed with its reason.
    Also when `stop` interrupts it or an error of ours ends it: never left RUNNING."""
    state, value = "FAIL", None
    try:
        with store.heartbeat(trial, spec.heartbeat):
            state, value = execute(trial, cfg, spec, hooks, slot, stop)
    except KeyboardInterrupt:
        if not stop.is_set():
            raise  # a Ctrl-C that no handler turned into a stop request: the caller's to handle
    finally:
        finished = store.tell(trial, state, value)
        if hooks.trial_end:
            hooks.trial_end(finished)
    return finished


_DONE, _WAIT = "done", "wait"


class Workers:
    """The workers of one process on one study; `run` returns when the budget is met."""

    def __init__(self, store: StoredStudy, spec: StudySpec, hooks: Hooks, queue_grid: bool = True,
                 queued_only: bool = False) -> None:
        """`queue_grid` False: a grid's points are all queued already (a confirm's (arm, seed) runs,
        each with its seed), so none is queued as the queue empties. `queued_only`: run the queued
        trials alone, as for a grid, whatever the sampler (a race's replicates): a failed one is not
        replaced by a point the sampler draws."""
        self.store, self.spec, self.hooks = store, spec, hooks
        self.queue_grid = queue_grid and not queued_only
        self.queued_only = queued_only
        self.deadline = None if spec.timeout is None else time.monotonic() + spec.timeout
        self.stop = Stop()
        self.failures = 0  # in a row, across this process's workers
        self.last_failure = ""
        self.errors: list[BaseException] = []
        self._count = threading.Lock()
        self._grid_points: list[dict] | None = None

    def run(self) -> None:
        """Raises sweep.core.signals.Interrupted after a SIGINT or SIGTERM, its running trials failed."""
        slots = make_slots(self.spec.devices, self.spec.jobs)
        try:
            with stop_on_signals(self.stop), self._unless_deleted():
                with self.store.lock():
                    self.store.reclaim()
                if len(slots) == 1:
                    self._work(slots[0])
                else:
                    self._work_in_threads(slots)
        finally:
            close_early()  # processes started for slots that no worker took
        if self.stop.signum is not None:
            raise Interrupted(self.stop.reason, self.stop.signum)
        if self.failures >= MAX_FAILURES_IN_A_ROW:
            raise SweepStopped(
                f"stopped: {self.failures} trials failed in a row, the last with: {self.last_failure} "
                f"(loraplus-sweep studies show {self.store.name} lists them)"
            )

    def _work_in_threads(self, slots: list[Slot]) -> None:
        def work(slot: Slot) -> None:
            try:
                with self._unless_deleted():
                    self._work(slot)
            except BaseException as e:  # handed to the main thread, which re-raises it
                self.errors.append(e)
                self.stop.request(f"stopped: another worker of this sweep failed ({type(e).__name__})")

        threads = [threading.Thread(target=work, args=(s,), name=s.label) for s in slots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()  # signals only request a stop (sweep.core.signals), so nothing interrupts this wait
        if self.errors:
            raise self.errors[0]

    @contextmanager
    def _unless_deleted(self) -> Iterator[None]:
        """Optuna raises KeyError from any call on a study deleted meanwhile: say that in one line."""
        try:
            yield
        except KeyError:
            if self.store.exists():
                raise
            raise SweepStopped(f"study {self.store.name} was deleted while this sweep ran; "
                               "nothing more to do") from None

    def _claim(self) -> tuple[RunningTrial, TrialConfig] | str:
        """A trial to run with its config, or _WAIT (others' running trials may still fail) or _DONE."""
        with self.store.lock():
            self.store.reclaim()
            counts = self.store.counts()
            finished = sum(counts[s] for s in FINISHED)
            running, waiting = counts["RUNNING"], counts["WAITING"]
            if finished >= self.spec.n_trials:
                return _DONE
            if (self.spec.sampler == "grid" or self.queued_only) and not waiting:  # its points, nothing else
                if self.queue_grid:  # the next batch
                    waiting = self.store.enqueue_missing(self._grid(), GRID_BATCH, failed=False)
                if not waiting:  # (a point that failed in this run waits for the next run)
                    return _WAIT if running else _DONE
            if finished + running >= self.spec.n_trials:
                return _WAIT
            trial = self.store.ask(self.spec, draw=sum(counts.values()))
            return trial, trial.config(self.spec)  # drawn now, under the lock, by this sampler

    def _grid(self) -> list[dict]:
        if self._grid_points is None:
            self._grid_points = search.initial_points(self.spec)
        return self._grid_points

    def _over(self) -> bool:
        return (
            self.stop.is_set()
            or self.failures >= MAX_FAILURES_IN_A_ROW
            or (self.deadline is not None and time.monotonic() >= self.deadline)
        )

    def _work(self, slot: Slot) -> None:
        with slot_process(slot) as process:  # one process serves this slot's trials
            self._work_on(process)

    def _work_on(self, slot: SlotProcess) -> None:
        while not self._over():
            claimed = self._claim()
            if claimed == _DONE:
                return
            if claimed == _WAIT:
                self.stop.wait(POLL_S)
                continue
            trial, cfg = claimed
            finished = run_to_end(self.store, trial, cfg, self.spec, self.hooks, slot, self.stop)
            failed = finished.state == "FAIL" and not self.stop.is_set()  # an interrupted one is not
            with self._count:
                self.failures = self.failures + 1 if failed else 0
                if failed:
                    self.last_failure = self.store.stop_reason_of(finished.number) or "no reason recorded"


def open_study(spec: StudySpec) -> StoredStudy:
    """The spec's study, created or continued, with its baselines queued, or the grid points that
    failed before and the first GRID_BATCH never tried (Workers queue the rest as they go)."""
    store = StoredStudy.create_or_load(spec)
    with store.lock():
        store.enqueue_missing(search.initial_points(spec), GRID_BATCH if spec.sampler == "grid" else None)
    return store


def run_study(spec: StudySpec, hooks: Hooks | None = None, store: StoredStudy | None = None) -> StoredStudy:
    """Run (or join, or continue) the study until it holds spec.n_trials finished (complete or
    pruned) trials. Failed trials do not count: another trial takes their place. Pass `store` when
    the caller has already checked the spec (preflight) and opened it (open_study)."""
    if store is None:
        from sweep.engine.checks import preflight

        spec = preflight(spec)
        store = open_study(spec)
    # A race's replicates are trials of the study but no part of its search's budget.
    replicates = sum(a["replicate_of"] is not None for a in store.queued_attrs())
    Workers(store, spec.replace(n_trials=spec.n_trials + replicates), hooks or Hooks()).run()
    if spec.replicate:
        race_study(store, spec, hooks or Hooks())
    return store


def race_study(store: StoredStudy, spec: StudySpec, hooks: Hooks) -> report.Race | None:
    """After the search: re-train the best trial of each lambda bin and the best plain-LoRA trial on a
    fresh seed per round (queued trials with the original's parameters, user attributes seed and
    replicate_of), dropping after each round the bins that report.race puts below the leader, until
    one is left or spec.replicate rounds are done; the race where it stopped. Resumable: the rounds
    and the bins still in are read back from the stored trials."""
    rounds_before = -1
    while True:
        state = report.race(store.frame())
        if state is None or state.rounds >= spec.replicate or state.rounds == rounds_before:
            return state  # done, or a round whose replicates all failed: the next run retries it
        alive = state.survivors if state.rounds else state.alive
        if len(alive) <= 1:  # the winner, or a study with one contender: nothing to race
            return state
        rounds_before = state.rounds
        seed = spec.base.seed + REPLICATE_SEED_OFFSET + state.rounds + 1
        trials = store.frame().set_index("number")
        with store.lock():
            held = {(a["replicate_of"], a["seed"]) for a in store.queued_attrs()}
            for b in alive:
                n = state.trials[b]
                if (n, seed) not in held:
                    point = {"eta_a": float(trials.at[n, "eta_a"]), "lambda": float(trials.at[n, "lambda"]),
                             "rank": int(trials.at[n, "rank"])}
                    store.enqueue(search.params_of(spec, point), {"replicate_of": n, "seed": seed})
            counts = store.counts()
            budget = sum(counts[s] for s in (*FINISHED, "RUNNING", "WAITING"))
        Workers(store, spec.replace(n_trials=budget), hooks, queued_only=True).run()


def prepare(spec: StudySpec) -> tuple[StudySpec, StoredStudy]:
    """What `run` and `worker` start from: the spec checked before any trial (a bad task or model
    fails here, before a study is created) with its data fingerprint, and its study opened."""
    with slots_starting(spec):
        # Imported once the slots' processes are starting: torch and transformers take seconds.
        from sweep.core.quiet import quiet_libraries
        from sweep.engine.checks import preflight

        quiet_libraries()
        spec = preflight(spec)
        return spec, open_study(spec)


@contextmanager
def slots_starting(spec: StudySpec) -> Iterator[None]:
    """Start the trial processes of this sweep's slots while the body (the parent's checks) runs:
    their start costs seconds of imports. If the body fails, no sweep will take them: ended."""
    # Only slots the checks will pass: explicit GPU ids may not exist, and --jobs beyond the cores is
    # refused (preflight says why in its own words); a process each would be memory spent for nothing.
    if not (spec.in_process or spec.devices not in ("auto", "cpu") or spec.jobs > (os.cpu_count() or 1)):
        prestart(make_slots(spec.devices, spec.jobs))
    try:
        yield
    except BaseException:
        close_early()
        raise
