"""Workers that take trials from a study until it holds its budget of finished trials.

One worker per slot (a GPU, or a share of the CPU cores) runs in this process; any number of such
processes, on any number of machines, can share one study. A worker takes a trial only under the
study lock and only while finished plus running trials are below the budget, so the study ends with
exactly its budget of finished trials however many workers share it. (Optuna's MaxTrialsCallback
only stops a worker after the budget is reached, by which time others may have started more.)

Trials whose worker is gone are failed with a reason and their parameters queued again: at once
when the worker was a process on this machine that no longer exists (a `kill -9`), and after three
missed heartbeats for a worker elsewhere (a lost machine). Ctrl-C and SIGTERM only ask the workers
to stop (sweep.signals): each fails its running trial with the reason before the process exits.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from sweep.errors import SweepStopped
from sweep.signals import Interrupted, Stop, stop_on_signals
from sweep.spec import StudySpec
from sweep.storage import FINISHED, storage_lock
from sweep.study import Hooks, enqueue_initial, execute, make_sampler, open_study, preflight, suggest_config
from sweep.trial_process import Slot, TrialFailed, make_slots

# A sweep whose trials keep failing has a problem no further trial will fix (a model that does
# not fit, a broken data set): stop and say so rather than burn the budget.
MAX_FAILURES_IN_A_ROW = 5
POLL_S = 2.0  # how often a worker with nothing to do looks again (others' trials may fail)

MAX_RETRIES = 2  # a trial whose workers keep dying is probably killing them (host OOM)


def worker_identity() -> dict[str, object]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _process_start(pid)}


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, so that a reused pid is not mistaken
    for the original process; None where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _is_gone(worker: dict) -> bool:
    """True only for a worker known to be dead: a process of this machine that no longer runs."""
    if worker.get("host") != socket.gethostname():
        return False  # heartbeats decide for other machines
    pid = int(worker.get("pid", -1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = worker.get("started")
    return started is not None and _process_start(pid) not in (None, started)


def _requeue(study: optuna.Study, failed: FrozenTrial) -> None:
    """Queue the failed trial's parameters again, marked as its retry (the system attributes are
    those of Optuna's RetryFailedTrialCallback, which this is, less the experimental API)."""
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    if len(history) > MAX_RETRIES:
        return
    system_attrs = {**failed.system_attrs, "failed_trial": failed.number, "retry_history": history}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
        system_attrs=system_attrs,
    ))


def _fail_and_requeue(study: optuna.Study, storage: BaseStorage, trial_id: int, reason: str,
                      requeue: bool) -> None:
    try:
        storage.set_trial_user_attr(trial_id, "stop_reason", reason)
        if storage.set_trial_state_values(trial_id, state=TrialState.FAIL) and requeue:
            _requeue(study, storage.get_trial(trial_id))
    except UpdateFinishedTrialError:
        pass  # another worker got there first


def reclaim(study: optuna.Study, storage: BaseStorage, requeue: bool = True) -> int:
    """Fail the running trials whose worker is gone and, with `requeue`, queue their parameters
    again; how many."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if isinstance(worker, dict) and _is_gone(worker):
            reason = f"orphaned: its worker (pid {worker.get('pid')} on {worker.get('host')}) was killed"
            _fail_and_requeue(study, storage, t._trial_id, reason, requeue)
            n += 1
    if _heartbeat_interval(storage):
        study_id = storage.get_study_id_from_name(study.study_name)
        # Optuna's fail_stale_trials, with a reason recorded on the failed trial.
        for trial_id in storage._get_stale_trial_ids(study_id):
            reason = "its worker stopped sending heartbeats (machine or process lost)"
            _fail_and_requeue(study, storage, trial_id, reason, requeue)
            n += 1
    return n


def _heartbeat_interval(storage: BaseStorage) -> int | None:
    """Seconds between heartbeats; None for a storage without them (in memory, or RDB without)."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


def ask(study: optuna.Study) -> Trial:
    with warnings.catch_warnings():
        # Optuna expects heartbeats with study.optimize only; our loops beat them themselves.
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        return study.ask()


@contextmanager
def heartbeat(storage: BaseStorage, trial_id: int) -> Iterator[None]:
    """Record that the trial is alive every heartbeat interval while the block runs."""
    interval = _heartbeat_interval(storage)
    if not interval:
        yield
        return
    done = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a missed beat is retried next interval; the grace period allows it
                pass
            if done.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def run_to_end(study: optuna.Study, trial: Trial, spec: StudySpec, hooks: Hooks, slot: Slot,
               stop: Stop) -> FrozenTrial:
    """Run the trial and tell the study how it ended: complete, pruned, or failed with its reason.
    Also when `stop` interrupts it or an error of ours ends it: never left RUNNING."""
    state, value = TrialState.FAIL, None
    try:
        with heartbeat(study._storage, trial._trial_id):
            value = execute(trial, spec, hooks, slot, stop)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except TrialFailed:
        pass  # execute stored the reason
    except KeyboardInterrupt:
        if not stop.is_set():
            raise  # a Ctrl-C that no handler turned into a stop request: the caller's to handle
    finally:
        frozen = study.tell(trial, value, state=state if state != TrialState.COMPLETE else None)
        if hooks.trial_end:
            hooks.trial_end(frozen)
    return frozen


_DONE, _WAIT = "done", "wait"


class Coordinator:
    """The workers of one process on one study; `run` returns when the budget is met."""

    def __init__(self, study: optuna.Study, spec: StudySpec, hooks: Hooks, storage: BaseStorage) -> None:
        self.study, self.spec, self.hooks, self.storage = study, spec, hooks, storage
        self.study_id = storage.get_study_id_from_name(study.study_name)  # tells a re-created study apart
        self.identity = worker_identity()
        self.deadline = None if spec.timeout is None else time.monotonic() + spec.timeout
        self.stop = Stop()
        self.failures = 0  # in a row, across this process's workers
        self.last_failure = ""
        self.errors: list[BaseException] = []
        self._count = threading.Lock()

    def run(self) -> None:
        """Raises sweep.signals.Interrupted after a SIGINT or SIGTERM, its running trials failed."""
        slots = make_slots(self.spec.devices, self.spec.jobs)
        with stop_on_signals(self.stop), self._unless_deleted():
            with self._lock():
                reclaim(self.study, self.storage)
            if len(slots) == 1:
                self._work(slots[0])
            else:
                self._work_in_threads(slots)
        if self.stop.signum is not None:
            raise Interrupted(self.stop.reason, self.stop.signum)
        if self.failures >= MAX_FAILURES_IN_A_ROW:
            raise SweepStopped(
                f"stopped: {self.failures} trials failed in a row, the last with: {self.last_failure} "
                f"(loraplus-sweep studies show {self.study.study_name} lists them)"
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
            t.join()  # signals only request a stop (sweep.signals), so nothing interrupts this wait
        if self.errors:
            raise self.errors[0]

    @contextmanager
    def _unless_deleted(self) -> Iterator[None]:
        """Optuna raises KeyError from any call on a study deleted meanwhile: say that in one line."""
        try:
            yield
        except KeyError:
            try:
                alive = self.storage.get_study_id_from_name(self.study.study_name) == self.study_id
            except KeyError:
                alive = False
            if alive:
                raise
            raise SweepStopped(f"study {self.study.study_name} was deleted while this sweep ran; "
                               "nothing more to do") from None

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with storage_lock(self.spec.storage, self.study.study_name):
            yield

    def _claim(self) -> Trial | str:
        """A trial to run, or _WAIT (others' running trials may still fail) or _DONE."""
        with self._lock():
            reclaim(self.study, self.storage)
            trials = self.study.get_trials(deepcopy=False)
            counts = {s: 0 for s in TrialState}
            for t in trials:
                counts[t.state] += 1
            finished = sum(counts[s] for s in FINISHED)
            running, waiting = counts[TrialState.RUNNING], counts[TrialState.WAITING]
            if finished >= self.spec.n_trials:
                return _DONE
            if self.spec.sampler == "grid" and not waiting:  # a grid runs its points, nothing else
                return _WAIT if running else _DONE
            if finished + running >= self.spec.n_trials:
                return _WAIT
            self.study.sampler = make_sampler(self.spec, draw=len(trials))
            trial = ask(self.study)
            suggest_config(trial, self.spec)  # drawn now, by this sampler; execute reads them back
            trial.set_user_attr("worker", self.identity)
            return trial

    def _over(self) -> bool:
        return (
            self.stop.is_set()
            or self.failures >= MAX_FAILURES_IN_A_ROW
            or (self.deadline is not None and time.monotonic() >= self.deadline)
        )

    def _work(self, slot: Slot) -> None:
        while not self._over():
            trial = self._claim()
            if trial == _DONE:
                return
            if trial == _WAIT:
                self.stop.wait(POLL_S)
                continue
            self._run(trial, slot)

    def _run(self, trial: Trial, slot: Slot) -> None:
        frozen = run_to_end(self.study, trial, self.spec, self.hooks, slot, self.stop)
        failed = frozen.state == TrialState.FAIL and not self.stop.is_set()  # an interrupted one is not
        with self._count:
            self.failures = self.failures + 1 if failed else 0
            if failed:
                self.last_failure = frozen.user_attrs.get("stop_reason", "no reason recorded")


def run_study(spec: StudySpec, hooks: Hooks | None = None, study: optuna.Study | None = None) -> optuna.Study:
    """Run (or join, or continue) the study until it holds spec.n_trials finished (complete or
    pruned) trials. Failed trials do not count: another trial takes their place. Pass `study` when
    the caller has already checked the spec (preflight) and opened it with open_study.
    """
    if study is None:
        preflight(spec)
        study = open_study(spec)
    with storage_lock(spec.storage, study.study_name):
        enqueue_initial(study, spec)
    # The study's own storage object (Optuna's RDBStorage behind its cache) beats the heartbeats.
    Coordinator(study, spec, hooks or Hooks(), study._storage).run()
    return study
