"""StoredStudy: a study in a results database, and the only module that calls Optuna on studies and
trials (create, load, list, delete; ask, record, tell; the trial-budget lock, heartbeats, reclaiming
trials whose worker is gone). The stored-trial schema, written and read, lives here too.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from sweep.core import liveness
from sweep.core.errors import SweepError
from sweep.core.metrics import direction
from sweep.core.schema import short
from sweep.data.config import TrialConfig, identity_of
from sweep.data.hooks import Finished
from sweep.data.result import TrialResult
from sweep.data.spec import RUN_KEYS, StudySpec
from sweep.study import search
from sweep.study.storage import mask_url, open_storage, storage_lock

FINISHED = ("COMPLETE", "PRUNED")
MAX_RETRIES = 2  # a trial whose workers keep dying is probably killing them (host OOM)
# User attributes that a queued trial carries into its run, and into its retry.
QUEUED_ATTRS = ("arm", "seed", "eval_split", "replicate_of")
# Trial user attributes a report reads; the rest is kept for provenance.
ROW_ATTRS = ("model", "task", "metric_name", "metric_se", "init", "tokens", "wall_time_s", "stop_reason",
             "steps", "precision", "base", "device", "outcomes")
# And what a confirm or an export reads: the arm and seed of a run, its curve, its whole config.
RUN_ATTRS = ("arm", "seed", "history", "config", "replicate_of")
LOST = "its worker stopped sending heartbeats (machine or process lost)"


class RunningTrial:
    """A trial this process runs: its parameters, progress reports and the record of its result."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial
        self.number = trial.number

    def config(self, spec: StudySpec) -> TrialConfig:
        """The trial's config: drawn now by the study's sampler, or read back for a queued point."""
        return search.trial_config(self._trial, spec)

    def note(self, key: str, value: Any) -> None:
        self._trial.set_user_attr(key, value)

    def report(self, value: float, step: int) -> bool:
        """Record an evaluation; whether the pruner says stop."""
        self._trial.report(value, step)
        return self._trial.should_prune()

    def record(self, result: TrialResult) -> None:
        """Everything a report or a re-run needs, as user attributes of the trial."""
        cfg = result.config
        attrs = {
            "config": cfg.to_dict(),
            "model": cfg.model,
            "task": cfg.task,
            "task_kind": result.kind,
            "precision": result.precision,
            "base": result.base,
            "metric_name": result.metric_name,
            "metric": result.metric,
            "metric_se": result.metric_se,
            "outcomes": result.outcomes,
            "best_metric": result.best_metric,
            "metrics": result.metrics,
            "history": [[p.step, p.metric] for p in result.history],
            "history_len": len(result.history),
            "steps": result.steps,
            "tokens": result.tokens,
            "tokens_per_s": result.tokens_per_s,
            "wall_time_s": result.wall_time_s,
            "train_time_s": result.train_time_s,
            "eval_time_s": result.eval_time_s,
            "setup_time_s": result.setup_time_s,
            "device": result.device,
            "peak_memory_mb": result.peak_memory_mb,
            "stop": result.stop.value,
            "stop_reason": result.stop_reason,
            "update_norms": result.update_norms,
            "seed": cfg.seed,
            "init": cfg.init,
            "versions": result.versions,
        }
        for k, v in attrs.items():
            self._trial.set_user_attr(k, v)


class StoredStudy:
    """One study of a results database, opened through `create_or_load`, `load` or `find`."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage, url: str) -> None:
        self._study, self._db, self.url = study, storage, url
        self.name = study.study_name
        self.id = storage.get_study_id_from_name(self.name)  # tells a re-created study apart

    # Opening

    @classmethod
    def create_or_load(cls, spec: StudySpec) -> StoredStudy:
        """The spec's study, created or loaded (same name: same definition), its definition stored
        for `worker`s that join it."""
        storage = _open(spec.storage)
        study = optuna.create_study(study_name=spec.study_name, storage=storage,
                                    direction=study_direction(spec), sampler=search.sampler(spec),
                                    pruner=search.pruner(spec), load_if_exists=True)
        store = cls(study, storage, spec.storage)
        _not_foreign(store)
        _same_direction(study, spec)
        stored = store.attrs.get("definition_hash")
        if stored is None:
            metric = {"metric_name": spec.objective} if spec.objective else {}
            store.set_attrs(definition_hash=spec.definition_hash(), model=spec.base.model,
                            task=spec.base.task, **metric)
        elif stored != spec.definition_hash():
            raise SweepError(
                f"study {spec.study_name!r} in {mask_url(spec.storage)} was created with another definition "
                "(other settings, other task data, or an older loraplus-sweep); pick another --study-name, "
                "or leave it unset to name the study after its definition"
            )
        # The latest budget, sampler and pruner, for workers that join. Not the storage URL (it may
        # hold a password) nor how this machine runs trials.
        shared = {k: v for k, v in spec.to_dict().items() if k not in ("storage", *RUN_KEYS)}
        if store.attrs.get("spec") != shared:
            store.set_attrs(spec=shared)
        return store

    @classmethod
    def create_or_load_named(cls, url: str, name: str, spec: StudySpec) -> StoredStudy:
        """A study of queued trials only (a confirm study): no search, never pruned."""
        storage = _open(url)
        study = optuna.create_study(study_name=name, storage=storage, direction=study_direction(spec),
                                    sampler=search.sampler(spec), pruner=optuna.pruners.NopPruner(),
                                    load_if_exists=True)
        _same_direction(study, spec)
        return cls(study, storage, url)

    @classmethod
    def load(cls, url: str, name: str) -> StoredStudy:
        """An existing study; a missing one is one line that lists what is stored."""
        store = cls.find(url, name)
        if store is None:
            names = study_names(url)
            listed = short(", ".join(names), 200) if names else "none"
            raise SweepError(f"no study {short(name)} (stored: {listed}); see loraplus-sweep studies list")
        return store

    @classmethod
    def find(cls, url: str, name: str) -> StoredStudy | None:
        storage = _open(url, create=False)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            return None
        return cls(study, storage, url)

    def delete(self) -> None:
        """Delete this study; one deleted meanwhile, by another command, is one line."""
        try:
            self._db.delete_study(self.id)
        except KeyError:
            raise SweepError(f"study {short(self.name)} was deleted meanwhile, by another command; nothing "
                             "left to delete") from None

    def exists(self) -> bool:
        """Whether this study is still stored (not deleted, nor deleted and created again)."""
        try:
            return self._db.get_study_id_from_name(self.name) == self.id
        except KeyError:
            return False

    # Study attributes

    @property
    def attrs(self) -> dict[str, Any]:
        return self._study.user_attrs

    def set_attrs(self, **attrs: Any) -> None:
        for k, v in attrs.items():
            self._study.set_user_attr(k, v)

    @property
    def is_ours(self) -> bool:
        return is_ours(self.attrs, len(self._study.directions))

    def require_ours(self, command: str) -> None:
        """One line for a command that reads what only loraplus-sweep stores, asked for another's study."""
        if not self.is_ours:
            raise SweepError(f"study {short(self.name)} was not written by loraplus-sweep "
                             f"({foreign_kind(self)}); {command} reads only the studies that loraplus-sweep "
                             "run makes (loraplus-sweep studies list marks the others as foreign)")

    @property
    def directions(self) -> list[str]:
        """"minimize" or "maximize" per objective (one for every loraplus-sweep study)."""
        return [d.name.lower() for d in self._study.directions]

    def ranked_trials(self) -> list[FrozenTrial]:
        """Every trial, best first in the study's own direction (a loss study lists its lowest value
        first), then the trials without a value by number; a multi-objective study, which has no
        single order, by number."""
        trials = self.trials()
        if len(self.directions) != 1:
            return trials
        s = -1.0 if self.directions[0] == "maximize" else 1.0
        valued = [t for t in trials if t.values is not None and all(v == v for v in t.values)]
        rest = [t for t in trials if t not in valued]
        return sorted(valued, key=lambda t: (s * t.values[0], t.number)) + rest

    def joined_spec(self, run: dict[str, Any], trust_remote_code: bool = False) -> StudySpec:
        """The study's definition as its creator stored it, run here with `run` settings; whether a
        model's own code may run is this machine's command line, whatever the database says."""
        from sweep.data.spec import joined

        if len(self._study.directions) != 1:  # (joined names any study without our definition)
            raise SweepError(f"study {short(self.name)} was not created by loraplus-sweep run "
                             f"({foreign_kind(self)})")
        return joined(self.attrs.get("spec"), self.url, self.name, run, trust_remote_code)

    # Reading trials

    def trials(self, states: Iterable[str] | None = None) -> list[FrozenTrial]:
        wanted = None if states is None else tuple(TrialState[s] for s in states)
        return self._study.get_trials(deepcopy=False, states=wanted)

    def counts(self) -> dict[str, int]:
        counts = {s.name: 0 for s in TrialState}
        for t in self.trials():
            counts[t.state.name] += 1
        return counts

    def finished_count(self) -> int:
        counts = self.counts()
        return sum(counts[s] for s in FINISHED)

    def stop_reason(self, t: FrozenTrial) -> str:
        return stop_reason(t, self.attrs)

    def stop_reason_of(self, number: int) -> str:
        return next((self.stop_reason(t) for t in self.trials() if t.number == number), "")

    def missing_grid_points(self, spec: StudySpec) -> list[str]:
        """For a grid study: the last failure reason of each grid point without a finished trial."""
        trials = self.trials()
        finished = [t.params for t in trials if t.state.name in FINISHED]
        failed = [(t.params, self.stop_reason(t)) for t in trials
                  if t.state.name == "FAIL" and "rank" in t.params]
        return search.missing_grid_points(spec, finished, failed)

    def frame(self) -> pd.DataFrame:
        return _frame([self])

    # Running trials

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The study's trial-budget lock, across every process and machine that shares it: held while
        a worker counts trials and takes one, or while trials are queued."""
        with storage_lock(self.url, self.name):
            yield

    def enqueue(self, params: dict[str, Any], attrs: dict[str, Any] | None = None) -> None:
        """Queue a point (with QUEUED_ATTRS such as its seed) to run before anything is drawn."""
        self._study.enqueue_trial(params, user_attrs=attrs)

    def enqueue_missing(self, points: list[dict[str, Any]], new: int | None = None,
                        failed: bool = True) -> int:
        """Queue the points that no finished, running or queued trial holds, in their order; how many.
        A point whose trials failed is queued again with `failed` (a re-run retries it); of the points
        never tried, at most `new` (None: all). Queueing costs a database write per point, so a large
        grid is queued a batch at a time as its trials are taken (sweep.study.workers)."""
        existing = {search.key(p) for p in self._held_params()}
        tried = {search.key(p) for p in self._held_params(("FAIL",))}
        queued = fresh = 0
        for p in points:
            k = search.key(p)
            if k in existing:
                continue
            if k in tried:
                if not failed:
                    continue
            elif new is not None:
                if fresh >= new:
                    continue
                fresh += 1
            self.enqueue(p)
            existing.add(k)
            queued += 1
        return queued

    def _held_params(self, states: tuple[str, ...] = (*FINISHED, "RUNNING", "WAITING")
                     ) -> list[dict[str, Any]]:
        held = []
        for t in self.trials(states):
            params = t.params if "rank" in t.params else t.system_attrs.get("fixed_params", {})
            if search.point(params) is not None:
                held.append(params)
        return held

    def queued_attrs(self) -> list[dict[str, Any]]:
        """The QUEUED_ATTRS of every finished, running or queued trial."""
        return [{k: t.user_attrs.get(k) for k in QUEUED_ATTRS}
                for t in self.trials((*FINISHED, "RUNNING", "WAITING"))]

    def ask(self, spec: StudySpec, draw: int) -> RunningTrial:
        """Start a trial: the next queued one, or a point the spec's sampler draws."""
        self._study.sampler = search.sampler(spec, draw=draw)
        trial = self._study.ask()
        running = RunningTrial(trial)
        running.note("worker", liveness.identity())
        return running

    def tell(self, trial: RunningTrial, state: str, value: float | None) -> Finished:
        frozen = self._study.tell(trial._trial, value if state == "COMPLETE" else None,
                                  state=None if state == "COMPLETE" else TrialState[state])
        return Finished(frozen.number, frozen.state.name, frozen.value,
                        search.point(frozen.params) or dict(frozen.params),
                        dict(frozen.user_attrs))

    @contextlib.contextmanager
    def heartbeat(self, trial: RunningTrial, interval: int) -> Iterator[None]:
        """Record on the trial that it is alive, every `interval` seconds while the block runs, with the
        interval itself: whoever reclaims judges each trial by the interval its worker keeps."""
        done = threading.Event()

        def beat() -> None:
            while True:
                try:
                    trial.note("heartbeat", [time.time(), interval])
                except Exception:  # a missed beat is retried next interval; three are allowed
                    pass
                if done.wait(interval):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def reclaim(self) -> int:
        """Fail the running trials whose worker is gone, say why, and queue them again: at once for a
        process of this machine that no longer exists, after three missed heartbeats for a worker
        elsewhere (the clocks of machines that share a study are taken to agree within a heartbeat).
        How many. Call it under lock(), so that one worker reclaims a trial, once."""
        n = 0
        now = time.time()
        for t in self.trials(("RUNNING",)):
            reason = _lost(t, now)
            if reason is None:
                continue
            self._study.set_user_attr(f"lost:{t.number}", reason)  # a finished trial takes none
            failed = self._study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            _requeue(self._study, failed)
            n += 1
        return n


def _lost(t: FrozenTrial, now: float) -> str | None:
    """Why a running trial's worker counts as gone, or None while it may be alive."""
    worker = t.user_attrs.get("worker")
    if liveness.is_gone(worker):
        return f"orphaned: its worker (pid {worker.get('pid')} on {worker.get('host')}) was killed"
    beat = t.user_attrs.get("heartbeat")
    if isinstance(beat, list) and len(beat) == 2 and all(isinstance(v, int | float) for v in beat):
        last, interval = beat
        if now - last > 3 * interval:
            return LOST
    return None


def _requeue(study: optuna.Study, failed: FrozenTrial) -> None:
    """Queue a failed trial's point again, marked as its retry (the system attributes of Optuna's
    RetryFailedTrialCallback, which this is, less the experimental API)."""
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    if len(history) > MAX_RETRIES or "rank" not in failed.params:
        return
    system_attrs = {**failed.system_attrs, "failed_trial": failed.number, "retry_history": history}
    user_attrs = {k: failed.user_attrs[k] for k in QUEUED_ATTRS if k in failed.user_attrs}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
        system_attrs=system_attrs, user_attrs=user_attrs,
    ))


def _open(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """The storage of a URL (sweep.study.storage.open_storage): with create=False a missing SQLite file or
    journal is an error instead of a new empty one."""
    return open_storage(url, create)


def stop_reason(t: FrozenTrial, study_attrs: dict[str, Any]) -> str:
    """Why a trial ended as it did, in words ("" for a trial still running or without one)."""
    return t.user_attrs.get("stop_reason") or study_attrs.get(f"lost:{t.number}", "")


def is_ours(study_attrs: dict[str, Any], objectives: int = 1) -> bool:
    """Whether a study is one that loraplus-sweep writes: one objective, and the attributes of a search
    study (model, task, its definition) or of a confirm study (model, task, kind "confirm", its arms).
    Any other study of the database (a plain Optuna study, another tool's) is foreign: listed, never
    read."""
    return (objectives == 1 and isinstance(study_attrs.get("model"), str)
            and isinstance(study_attrs.get("task"), str)
            and (isinstance(study_attrs.get("spec"), dict)
                 or (study_attrs.get("kind") == "confirm" and isinstance(study_attrs.get("arms"), dict))))


def foreign_kind(store: StoredStudy) -> str:
    """What a foreign study is, in a few words."""
    if len(store.directions) != 1:
        return f"a study of {len(store.directions)} objectives"
    return "another tool's attributes" if store.attrs else "a plain Optuna study"


def study_names(url: str) -> list[str]:
    return _names(_open(url, create=False))


def studies_attrs(url: str) -> dict[str, dict[str, Any] | None]:
    """Every stored study's attributes by name, in the storage's order; None for a foreign one."""
    return {s.study_name: s.user_attrs if is_ours(s.user_attrs, len(s.directions)) else None
            for s in optuna.get_all_study_summaries(_open(url, create=False), include_best_trial=False)}


def _names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def copy_studies(source: str, dest: str, names: list[str] | None = None) -> list[tuple[str, int, int]]:
    """Copy studies, every trial and attribute, from one storage into another (a sweep run on a GPU
    box into the results kept at home): the named ones, or all. A name already in `dest` stops the
    copy before anything is written, so no stored study is ever merged into or replaced. Per study:
    its name, its trials, and those running in `source`, copied as failed (see _copy)."""
    origin = _open(source, create=False)  # once: opening a storage costs more than reading a study
    stored = _names(origin)
    names = stored if names is None else names
    missing = [n for n in names if n not in stored]
    if missing:
        raise SweepError(f"no study {_listed(missing)} in {mask_url(source)} (stored: {_listed(stored)})")
    target = _open(dest)
    clash = [n for n in names if n in _names(target)]
    if clash:
        raise SweepError(f"{mask_url(dest)} already holds {_listed(clash)}; "
                         "delete it there first (loraplus-sweep studies delete) or copy the others by name")
    return [(name, *_copy(name, origin, target, source)) for name in names]


def _copy(name: str, origin: optuna.storages.BaseStorage, target: optuna.storages.BaseStorage,
          source: str) -> tuple[int, int]:
    """optuna.copy_study, except that a trial RUNNING in the source (a live sweep) is copied as failed,
    with the reason: the copy would count it as running forever, since no worker of the copy runs
    it, and its result, when it comes, is written to the source only. (trials, those failed)."""
    from_id = origin.get_study_id_from_name(name)
    trials = origin.get_all_trials(from_id, deepcopy=True)  # read once: a live sweep goes on meanwhile
    optuna.create_study(study_name=name, storage=target, directions=origin.get_study_directions(from_id))
    to_id = target.get_study_id_from_name(name)
    for key, value in origin.get_study_system_attrs(from_id).items():
        target.set_study_system_attr(to_id, key, value)
    for key, value in origin.get_study_user_attrs(from_id).items():
        target.set_study_user_attr(to_id, key, value)
    running = 0
    for t in trials:
        if t.state == TrialState.RUNNING:
            t.state, t.datetime_complete = TrialState.FAIL, datetime.datetime.now()
            t.set_user_attr("stop_reason", f"running in {mask_url(source)} when it was copied; its result is "
                                           "stored there only")
            running += 1
        target.create_new_trial(to_id, template_trial=t)
    return len(trials), running


def _listed(names: list[str], most: int = 10) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(short(n) for n in names[:most]) + more if names else "none"


def list_studies(url: str) -> list[dict[str, Any]]:
    """One row per stored study: name, model, task, trial count, best value (None without one), and
    whether it is foreign (not loraplus-sweep's: its model and task are None)."""
    rows = []
    for s in optuna.get_all_study_summaries(_open(url, create=False), include_best_trial=True):
        best = s.best_trial.value if s.best_trial is not None and len(s.directions) == 1 else None
        ours = is_ours(s.user_attrs, len(s.directions))
        rows.append({"study": s.study_name, "model": s.user_attrs["model"] if ours else None,
                     "task": s.user_attrs["task"] if ours else None, "trials": s.n_trials, "best": best,
                     "foreign": not ours})
    return rows


def study_direction(spec: StudySpec) -> str:
    """Which way the study's metric is better; a spec not preflighted (no objective) maximizes, as
    every study did before metrics that are better when lower."""
    return direction(spec.objective) if spec.objective else "maximize"


def _not_foreign(store: StoredStudy) -> None:
    """Refuse to run trials into a study of that name that `run` did not create (another tool's, or a
    confirm study): it would take our attributes and trials. A study without attributes or trials is
    one just created (or left so by a run stopped as it began)."""
    attrs = store.attrs
    if attrs.get("kind") == "confirm":
        raise SweepError(f"study {short(store.name)} is a confirm study (loraplus-sweep confirm runs it); "
                         "pick another --study-name")
    ours = "definition_hash" in attrs or is_ours(attrs) or not (attrs or store.trials())
    if len(store.directions) != 1 or not ours:
        raise SweepError(f"study {short(store.name)} in {mask_url(store.url)} was not created by "
                         f"loraplus-sweep run ({foreign_kind(store)}); pick another --study-name")


def _same_direction(study: optuna.Study, spec: StudySpec) -> None:
    wanted = study_direction(spec)
    if study.direction.name.lower() != wanted:
        raise SweepError(f"study {short(study.study_name)} was created to {study.direction.name.lower()} its "
                         f"metric, and this one is to {wanted} {spec.objective}; pick another --study-name")


def trials_frame(url: str, names: list[str] | None = None) -> pd.DataFrame:
    """One row per trial of every (or the named) loraplus-sweep studies: what sweep.analysis.report works on.
    Another tool's study in the same database is left out: nothing here describes it."""
    storage = _open(url, create=False)  # once: opening a storage costs more than reading a study
    if names is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    stores = []
    for name in names:
        with contextlib.suppress(KeyError):  # deleted meanwhile
            stores.append(StoredStudy(optuna.load_study(study_name=name, storage=storage), storage, url))
    return _frame([s for s in stores if s.is_ours])


def settings_hash(spec: Any) -> str | None:
    """What a study's trials share whatever its search space or sampler: its stored definition's
    fixed trial settings and data (a grid and a TPE sweep of the same trials share it; their
    definitions differ by their spaces)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("base"), dict):
        return None
    # read as a study's identity reads them, so that a study stored before some settings existed
    # pools with one stored after
    fixed = {k: v for k, v in identity_of(spec["base"]).items() if k not in ("eta_a", "lambda", "rank")}
    text = json.dumps([fixed, spec.get("data_fingerprint")], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _frame(stores: list[StoredStudy]) -> pd.DataFrame:
    rows = []
    for store in stores:
        attrs = store.attrs
        direction_of = store.directions[0]
        for t in store.trials():
            user = t.user_attrs
            drawn = search.point(t.params) or t.params  # eta_a, whether drawn or eta_b / lambda
            row = {
                "study": store.name,
                "number": t.number,
                "state": t.state.name,
                "value": t.value if t.value is not None else user.get("metric", float("nan")),
                "eta_a": drawn.get("eta_a"),
                "lambda": drawn.get("lambda"),
                "rank": drawn.get("rank"),
                **{k: user.get(k) for k in ROW_ATTRS},
            }
            row["stop_reason"] = stop_reason(t, attrs)
            for k in ("model", "task", "metric_name"):
                row[k] = row[k] or attrs.get(k)
            row["kind"] = attrs.get("kind", "search")  # "confirm": re-runs over seeds
            row["direction"] = direction_of  # what "best" means where a trial names no metric
            spec = attrs.get("spec")
            row["sampler"] = spec.get("sampler") if isinstance(spec, dict) else None
            row["settings"] = settings_hash(spec)
            row["definition"] = attrs.get("definition_hash")  # what the trials measure: report groups by it
            row.update({k: user.get(k) for k in RUN_ATTRS})
            rows.append(row)
    columns = ["study", "number", "state", "value", "eta_a", "lambda", "rank", *ROW_ATTRS, "kind",
               "direction", "sampler", "settings", "definition", *RUN_ATTRS]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("value", "metric_se", "steps"):
        _numbers(df, col)  # checked, kept as stored
    for col in ("tokens", "wall_time_s"):
        df[col] = _numbers(df, col).fillna(0)
    return df


def _numbers(df: pd.DataFrame, col: str) -> pd.Series:
    """A column that must hold numbers; a stored value that is none (a damaged or edited database)
    is one line naming its study, trial and value."""
    values = pd.to_numeric(df[col], errors="coerce")
    bad = df[values.isna() & df[col].notna()]
    if len(bad):
        row = bad.iloc[0]
        stored = "metric" if col == "value" else col  # a trial without a value: its stored metric
        raise SweepError(f"study {short(row['study'])} trial #{row['number']} stores {stored} = "
                         f"{short(row[col])}, which is not a number (a damaged or edited database); restore "
                         "it from a copy, or delete that study (loraplus-sweep studies delete)")
    return values
