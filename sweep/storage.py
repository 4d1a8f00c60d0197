"""Database URLs: drivers, masked passwords, write checks, failures in one line, and the locks that
work across processes and machines (a file beside SQLite, an advisory lock on PostgreSQL)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from sweep.errors import SweepError

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


# PostgreSQL drivers SQLAlchemy knows: module, and what to install for it.
PG_DRIVERS = {
    "psycopg": ("psycopg", "pip install 'loraplus-sweep[postgres]' (psycopg 3)"),
    "psycopg2": ("psycopg2", "pip install psycopg2-binary"),
    "pg8000": ("pg8000", "pip install pg8000"),
    "asyncpg": ("asyncpg", "pip install asyncpg"),
}


def with_driver(url: str) -> str:
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


def immediate_transactions(engine: sqlalchemy.engine.Engine) -> None:
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
    return sqlalchemy.create_engine(with_driver(url), poolclass=sqlalchemy.pool.NullPool)
