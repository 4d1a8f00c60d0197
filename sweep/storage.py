"""The one place that turns a URL into an Optuna storage, and stored trials into report rows."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from sweep.errors import SweepError

# Trial user attributes a report reads (set by sweep.study); the rest is kept for provenance.
ROW_ATTRS = ("model", "task", "metric_name", "init", "tokens", "wall_time_s", "stop_reason", "steps")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for every message and log."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


def open_storage(url: str, create: bool = True, heartbeat: int | None = None) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for a SQLAlchemy URL (SQLite by default; PostgreSQL across machines).

    With create=False a missing SQLite file is an error instead of a new empty database. With a
    heartbeat (seconds), running trials record that they are alive, and a trial that has not beaten
    for three intervals counts as stale (sweep.coordinator fails it and queues its parameters again).
    """
    path = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        if not create and not path.is_file():
            raise SweepError(f"no results database at {path}; run a sweep first (loraplus-sweep run)")
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SweepError(f"cannot create the directory for {path}: {e.strerror}") from e
        # Wait for a busy writer instead of failing; our own BEGIN (below) instead of pysqlite's.
        engine_kwargs["connect_args"] = {"timeout": 60, "isolation_level": None}
    elif "://" not in url:
        raise SweepError(f"storage {mask_url(url)!r} is not a database URL (e.g. sqlite:///results/x.db)")
    try:
        # Workers started together on a new database would all create its tables at once.
        lock = storage_lock(url, "create tables") if create else contextlib.nullcontext()
        with lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                _with_driver(url), engine_kwargs=engine_kwargs or None, heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat if heartbeat else None,
            )
    except SweepError:
        raise
    except Exception as e:  # SQLAlchemy raises many types for a URL it cannot open; all mean the same
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SweepError(f"cannot open storage {mask_url(url)}: {mask_url(first)}") from e
    if path is not None:
        _immediate_transactions(storage.engine)
    return storage


def _with_driver(url: str) -> str:
    """postgresql:// means psycopg2 to SQLAlchemy; use psycopg 3 (our `postgres` extra) when that is
    what is installed."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return url
    if importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    raise SweepError("PostgreSQL storage needs a driver: pip install 'loraplus-sweep[postgres]'")


def _immediate_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Every SQLite transaction takes the write lock when it begins. A transaction that reads first
    and writes later cannot wait for another writer (SQLite would deadlock), so it fails at once
    with "database is locked" whatever the timeout; taking the lock up front makes it wait instead.
    """

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(conn: sqlalchemy.engine.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made while the tables were created predate the hook


@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """An exclusive lock called `name` across every process and machine that uses the storage: a
    file lock beside a SQLite database, an advisory lock on PostgreSQL, this process only for other
    databases. sweep.coordinator holds it (named after the study) while a worker checks the trial
    budget and takes a trial, so that no number of workers starts more trials than the budget."""
    with _THREADS:
        path = sqlite_path(url)
        if path is not None:
            with open(path.with_name(path.name + ".lock"), "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        elif url.startswith(("postgresql", "postgres:")):
            key = int(hashlib.sha1(name.encode()).hexdigest()[:15], 16)
            with _lock_engine(url).connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        else:
            yield


_THREADS = threading.Lock()


@functools.cache
def _lock_engine(url: str) -> sqlalchemy.engine.Engine:
    return sqlalchemy.create_engine(_with_driver(url), poolclass=sqlalchemy.pool.NullPool)


def trial_row(study_name: str, t: FrozenTrial) -> dict[str, Any]:
    attrs = t.user_attrs
    return {
        "study": study_name,
        "number": t.number,
        "state": t.state.name,
        "value": t.value if t.value is not None else attrs.get("metric", float("nan")),
        "eta_a": t.params.get("eta_a"),
        "lambda": t.params.get("lambda"),
        "rank": t.params.get("rank"),
        **{k: attrs.get(k) for k in ROW_ATTRS},
    }


def trials_frame(storage: optuna.storages.BaseStorage, study_names: list[str] | None = None) -> pd.DataFrame:
    """One row per trial of every (or the named) studies: the frame that sweep.report works on."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if study_names is not None and summary.study_name not in study_names:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        model, task = summary.user_attrs.get("model"), summary.user_attrs.get("task")
        for t in study.get_trials(deepcopy=False):
            row = trial_row(summary.study_name, t)
            row["model"] = row["model"] or model
            row["task"] = row["task"] or task
            row["metric_name"] = row["metric_name"] or summary.user_attrs.get("metric_name")
            row["kind"] = summary.user_attrs.get("kind", "search")  # "confirm": re-runs over seeds
            rows.append(row)
    columns = ["study", "number", "state", "value", "eta_a", "lambda", "rank", *ROW_ATTRS, "kind"]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("tokens", "wall_time_s"):
        df[col] = pd.to_numeric(df[col]).fillna(0)
    return df


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
