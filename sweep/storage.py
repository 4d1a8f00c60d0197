"""The one place that turns a URL into an Optuna storage, and stored trials into report rows."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import os
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
from sqlalchemy.engine import make_url

from sweep.errors import SweepError

# Trial user attributes a report reads (set by sweep.study); the rest is kept for provenance.
ROW_ATTRS = ("model", "task", "metric_name", "init", "tokens", "wall_time_s", "stop_reason", "steps")


# Query parameters and key=value pairs (libpq connection strings) that hold secrets.
SECRET_KEYS = ("password", "passwd", "pwd", "sslpassword", "secret", "token", "api_key", "apikey")
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:" + "|".join(SECRET_KEYS) + r")\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s&;,'\"]+)"
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for every message and log.

    SQLAlchemy's parser masks what it parses as the password; the userinfo rule then masks up to
    the last '@', since a password with an unescaped '@' (user:Top@Secret@host) parses as a
    shorter password and a host that holds the rest; query keys such as password= are masked too.
    """
    if url.startswith("sqlite"):  # a path, never credentials: shown as it was written
        return url
    try:
        text = make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        text = url
    return _SECRET_PAIR.sub(r"\1***", _mask_userinfo(text))


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """(the URL up to its password, the password as a person meant it: up to the last '@', the rest
    from that '@'); None for a URL without a password."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0 or ":" not in rest[:at]:
        return None
    user, password = rest[:at].split(":", 1)
    return f"{scheme}{sep}{user}:", password, rest[at:]


def _mask_userinfo(url: str) -> str:
    parts = None if url.startswith("sqlite") else _userinfo(url)
    return url if parts is None else f"{parts[0]}***{parts[2]}"


def _passwords(url: str) -> list[str]:
    """The password of a URL as SQLAlchemy reads it and as a person meant it (up to the last '@')."""
    found = []
    with contextlib.suppress(sqlalchemy.exc.ArgumentError, ValueError):
        found.append(make_url(url).password or "")
    parts = _userinfo(url)
    if parts is not None:
        meant = parts[1]
        found += [meant, *meant.split("@")]  # the pieces an unescaped '@' spreads over a message
    found += [m.group(2).strip("'\"") for m in _SECRET_PAIR.finditer(url)]
    return [p for p in found if len(p) >= 3]


def mask_secrets(text: str, urls: tuple[str, ...] | list[str] = ()) -> str:
    """Any text (an error message, a library's exception) with the passwords of the URLs in it, and
    of `urls` wherever they appear, replaced by ***."""
    for url in urls:
        for password in sorted(_passwords(url), key=len, reverse=True):
            text = text.replace(password, "***")
    text = _URL_IN_TEXT.sub(lambda m: _mask_userinfo(m.group(0)), text)
    return _SECRET_PAIR.sub(r"\1***", text)


def database_failure(e: BaseException) -> SweepError | None:
    """A database error in the middle of a command (a damaged or read-only file, a lost server) as
    one line that says so; None for any other exception."""
    cause = e.__cause__ if isinstance(e, optuna.exceptions.StorageInternalError) else e
    if not isinstance(cause, sqlalchemy.exc.DatabaseError):
        return None
    first = str(getattr(cause, "orig", None) or cause).splitlines()[0]
    return SweepError(f"the results database failed: {first} (a damaged file? restore it from a copy)")


def require_writable(url: str) -> None:
    """A SQLite database that this process cannot write is one line, before anything tries to."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise SweepError(f"the results database {path} is read-only here; nothing was changed "
                         "(copy it somewhere writable, or ask its owner)")


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


def open_storage(url: str, create: bool = True, heartbeat: int | None = None) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for a SQLAlchemy URL (SQLite by default; PostgreSQL across machines).

    With create=False a missing SQLite file is an error instead of a new empty database. With a
    heartbeat (seconds), running trials record that they are alive, and a trial that has not beaten
    for three intervals counts as stale (sweep.workers fails it and queues its parameters again).
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
    elif url.partition("://")[2].count("@") > 1:
        # SQLAlchemy would read the part after the first '@' as the host, and look it up.
        raise SweepError(f"storage {mask_url(url)}: the password holds '@'; write it as %40, or leave the "
                         "password out of the URL and use PGPASSWORD or ~/.pgpass")
    if create:
        require_writable(url)
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
        raise SweepError(f"cannot open storage {mask_url(url)}: {mask_secrets(first, [url])}") from e
    if path is not None:
        _immediate_transactions(storage.engine)
    return storage


# PostgreSQL drivers SQLAlchemy knows: module, and what to install for it.
PG_DRIVERS = {
    "psycopg": ("psycopg", "pip install 'loraplus-sweep[postgres]' (psycopg 3)"),
    "psycopg2": ("psycopg2", "pip install psycopg2-binary"),
    "pg8000": ("pg8000", "pip install pg8000"),
    "asyncpg": ("asyncpg", "pip install asyncpg"),
}


def _with_driver(url: str) -> str:
    """A bare postgresql:// (or postgres://) URL gets the driver that is installed, psycopg 3 (our
    `postgres` extra) first, then psycopg2; no driver, or a named one that is missing, is one line
    saying what to install."""
    scheme, sep, rest = url.partition("://")
    dialect, _, driver = scheme.partition("+")
    if not sep or dialect not in ("postgresql", "postgres"):
        return url
    if driver:
        module, install = PG_DRIVERS.get(driver, (driver, f"pip install {driver}"))
        if importlib.util.find_spec(module) is None:
            raise SweepError(f"the storage URL names the PostgreSQL driver {driver!r}, which is not "
                             f"installed: {install}")
        return f"postgresql+{driver}://{rest}"
    for name in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(PG_DRIVERS[name][0]) is not None:
            return f"postgresql+{name}://{rest}"
    raise SweepError("PostgreSQL storage needs a driver and neither psycopg nor psycopg2 is installed: "
                     "pip install 'loraplus-sweep[postgres]' (or psycopg2-binary)")


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
    databases. sweep.workers holds it (named after the study) while a worker checks the trial
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
        if not is_ours(summary.user_attrs):
            continue  # another tool's study in the same database: nothing here describes it
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


def is_ours(study_attrs: dict[str, Any]) -> bool:
    """Whether a study's attributes are those loraplus-sweep writes (a search or a confirm study)."""
    return isinstance(study_attrs.get("model"), str) and isinstance(study_attrs.get("task"), str)
