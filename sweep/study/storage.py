"""Storage URLs turned into Optuna storages (SQLite, PostgreSQL, or a journal file on a shared file
system): drivers, masked passwords, write checks, failures in one line, and the locks that work across
processes and machines (a file beside SQLite or the journal, an advisory lock on PostgreSQL)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import math
import os
import re
import sqlite3
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from sqlalchemy.engine import make_url

from sweep.core.errors import SweepError

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
    if url.startswith("sqlite") or journal_path(url) is not None:  # a path: shown as it was written
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
    parts = None if url.startswith(("sqlite", JOURNAL)) else _userinfo(url)
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
    """A SQLite database or a journal that this process cannot write is one line, before anything
    tries to. A journal's directory must exist: on a cluster a missing one is a shared file system
    not mounted here, and a journal created on the local disk would be a study of its own."""
    path = sqlite_path(url)
    journal = journal_path(url)
    if journal is not None:
        path = journal
        if not path.parent.is_dir():
            raise SweepError(f"no directory {path.parent} for the journal {path.name}; create it first "
                             "(on a cluster: is the shared file system mounted here?)")
        if not os.access(path.parent, os.W_OK):  # the locks are files created beside the journal
            raise SweepError(f"the directory of the journal {path} is read-only here; nothing was changed "
                             "(put the journal somewhere writable, or ask its owner)")
    if path is None or not path.exists():
        return
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise SweepError(f"the results database {path} is read-only here; nothing was changed "
                         "(copy it somewhere writable, or ask its owner)")


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


JOURNAL = "journal://"


def journal_path(url: str) -> Path | None:
    """The file of a journal storage: journal:///abs/path/study.log (journal://rel/path.log is
    relative), or a plain path ending in .log; None for any other storage."""
    if url.startswith(JOURNAL):
        return Path(url[len(JOURNAL) :]).expanduser()
    if "://" not in url and url.endswith(".log"):
        return Path(url).expanduser()
    return None


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """The Optuna storage of a URL: an RDB storage for a SQLAlchemy URL (SQLite by default; PostgreSQL
    across machines), a journal storage for a journal file (a cluster whose machines share only a file
    system). With create=False a missing SQLite file or journal is an error instead of a new one."""
    journal = journal_path(url)
    if journal is not None:
        return _open_journal(journal, url, create)
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
        raise SweepError(f"storage {mask_url(url)!r} is not a database URL (e.g. sqlite:///results/x.db, "
                         "or a journal file results/x.log)")
    elif url.partition("://")[2].count("@") > 1:
        # SQLAlchemy would read the part after the first '@' as the host, and look it up.
        raise SweepError(f"storage {mask_url(url)}: the password holds '@'; write it as %40, or leave the "
                         "password out of the URL and use PGPASSWORD or ~/.pgpass")
    else:
        engine_kwargs["connect_args"] = server_connect_args(with_driver(url))
    if create:
        require_writable(url)
    try:
        if not create:  # Optuna would create its tables in any database it opens
            _require_optuna_tables(url, path, engine_kwargs)
        # Workers started together on a new database would all create its tables at once.
        lock = storage_lock(url, "create tables") if create else contextlib.nullcontext()
        with lock:
            storage = optuna.storages.RDBStorage(with_driver(url), engine_kwargs=engine_kwargs or None,
                                                 skip_table_creation=not create)
    except SweepError:
        raise
    except Exception as e:  # SQLAlchemy raises many types for a URL it cannot open; all mean the same
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        waited = (f" (no answer within {connect_timeout():g} s; {TIMEOUT_ENV} sets how long to wait)"
                  if path is None and "timeout" in first.lower() else "")
        raise SweepError(f"cannot open storage {mask_url(url)}: {mask_secrets(first, [url])}{waited}") from e
    if path is not None:
        immediate_transactions(storage.engine)
    return storage


def _require_optuna_tables(url: str, path: Path | None, engine_kwargs: dict[str, Any]) -> None:
    """A database that a command only reads must already be an Optuna one: else one line, and the
    file is left as it was (a SQLite file is looked into read-only)."""
    if path is not None:
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        engine = sqlalchemy.create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True),
                                          poolclass=sqlalchemy.pool.NullPool)
    else:
        engine = sqlalchemy.create_engine(with_driver(url), poolclass=sqlalchemy.pool.NullPool,
                                          **engine_kwargs)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if not {"studies", "version_info"} <= tables:
        raise SweepError(f"{path if path is not None else mask_url(url)} holds no loraplus-sweep studies "
                         "(it is not an Optuna database); nothing was changed")


def _open_journal(path: Path, url: str, create: bool) -> optuna.storages.BaseStorage:
    """A journal storage: JSON lines appended under Optuna's file lock (a symlink, atomic on every NFS
    version), replayed on open. Read with json.loads only: this backend keeps no pickled snapshot, so
    nothing read from the file can run code."""
    if path.is_dir():
        raise SweepError(f"the journal {path} is a directory; name a file such as {path / 'study.log'}")
    if create:
        require_writable(url)
    elif not path.is_file():
        raise SweepError(f"no journal at {path}; run a sweep first (loraplus-sweep run --storage {url})")
    first = _first_line(path) if path.exists() else None
    if first is not None and first.endswith(b"\n") and not _is_record(first):
        raise SweepError(f"{path} holds no loraplus-sweep studies (it is not an Optuna journal: its first "
                         "line is no journal record); nothing was changed" + ("" if not create else
                         "; name a new file for the journal"))
    if not create and (first is None or not first.endswith(b"\n")):
        raise SweepError(f"{path} holds no loraplus-sweep studies (the journal is empty); nothing was "
                         "changed")
    try:
        backend = MendingJournalFile(str(path), lock_obj=JournalFileSymlinkLock(str(path)))
        if hasattr(backend, "load_snapshot"):  # a snapshot is a pickle: refused, whatever the file holds
            raise SweepError("this Optuna's journal file backend keeps pickled snapshots; refused")
        return JournalStorage(backend)
    except SweepError:
        raise
    except (OSError, ValueError) as e:  # unreadable, or a damaged line (json's error is a ValueError)
        first = (getattr(e, "strerror", None) or str(e)).splitlines()[0]
        raise SweepError(f"cannot open the journal {path}: {first} (a damaged file? restore it from a "
                         "copy)") from e


class MendingJournalFile(JournalFileBackend):
    """Optuna's journal file backend, whose writes first mend the journal's end (mend_journal_end)
    under the same lock: a writer killed mid-line leaves a line without its newline, and the next
    record appended to it would make one line of two that no reader can parse, every study lost."""

    def __init__(self, file_path: str, lock_obj: JournalFileSymlinkLock) -> None:
        super().__init__(file_path, lock_obj=lock_obj)
        self.path, self.write_lock = Path(file_path), lock_obj

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        self.write_lock.acquire()
        try:
            mend_journal_end(self.path)
            with open(self.path, "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        finally:
            self.write_lock.release()


def mend_journal_end(path: Path, warn: Callable[[str], None] | None = None) -> None:
    """Make the journal end with a whole record and its newline, before anything is appended (call it
    under the journal's write lock). A last record without its newline gets it; blank lines at the end
    go; an unfinished line at the end (a writer killed mid-write), or one that no reader can parse,
    which no reader has ever applied, is moved to <journal>.partial and said in one warning line. A
    journal that cannot be mended is one line, and nothing is written."""
    with open(path, "r+b") as f:
        end = size = f.seek(0, os.SEEK_END)
        newline = False
        while end > 0:
            start = _line_start(f, end)
            f.seek(start)
            line = f.read(end - start)
            if _is_record(line):
                newline = not line.endswith(b"\n")
                break
            end = start
        f.seek(end)
        unfinished = f.read(size - end).strip()
        aside = path.with_name(path.name + ".partial")
        if unfinished:
            try:
                with open(aside, "ab") as out:
                    out.write(unfinished + b"\n")
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as e:
                raise SweepError(f"the journal {path} ends with an unfinished line (a writer killed "
                                 f"mid-write) that cannot be moved to {aside}: {e.strerror}; nothing was "
                                 "written (free space or make its directory writable, then run again)") from e
        if end < size:
            f.truncate(end)
        if newline:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        if end < size or newline:
            f.flush()
            os.fsync(f.fileno())
    if unfinished:
        (warn or _stderr)(f"warning: the journal {path} ended with an unfinished line ({len(unfinished)} "
                          f"bytes of a writer killed mid-write); moved it to {aside}, every stored study is "
                          "intact")


def _first_line(path: Path) -> bytes | None:
    """The first line of a file that is not blank (with its newline, if it has one); None for none."""
    try:
        with open(path, "rb") as f:
            while line := f.readline(1 << 24):  # far longer than a record; a file without lines: not all
                if line.strip():
                    return line
    except OSError as e:
        raise SweepError(f"cannot read the journal {path}: {e.strerror}") from e
    return None


def _line_start(f: Any, end: int) -> int:
    """Where the last line before `end` starts (its own newline, if it has one, is not its start)."""
    pos = end - 1
    while pos > 0:
        lo = max(0, pos - 65536)
        f.seek(lo)
        found = f.read(pos - lo).rfind(b"\n")
        if found >= 0:
            return lo + found + 1
        pos = lo
    return 0


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


# PostgreSQL drivers SQLAlchemy knows: module, and what to install for it.
PG_DRIVERS = {
    "psycopg": ("psycopg", "pip install 'loraplus-sweep[postgres]' (psycopg 3)"),
    "psycopg2": ("psycopg2", "pip install psycopg2-binary"),
    "pg8000": ("pg8000", "pip install pg8000"),
    "asyncpg": ("asyncpg", "pip install asyncpg"),
}


TIMEOUT_ENV = "LORAPLUS_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT_S = 10.0


def connect_timeout() -> float:
    """Seconds a connection to a server (a PostgreSQL storage, a tracking server) may take before it
    counts as failed: LORAPLUS_CONNECT_TIMEOUT, else 10."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SweepError(f"{TIMEOUT_ENV} must be a number of seconds above 0, e.g. 10; got {text[:40]!r}")
    return value


def server_connect_args(url: str) -> dict[str, Any]:
    """The connect arguments that bound a PostgreSQL connection by connect_timeout() (libpq counts
    whole seconds, at least 2), unless the URL sets its own; none for other databases."""
    parsed = make_url(url)
    limit = connect_timeout()
    if parsed.drivername in ("postgresql+psycopg", "postgresql+psycopg2"):
        key, value = "connect_timeout", max(2, math.ceil(limit))
    elif parsed.drivername in ("postgresql+pg8000", "postgresql+asyncpg"):
        key, value = "timeout", limit
    else:
        return {}
    return {} if key in parsed.query else {key: value}


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
    file lock beside a SQLite database or a journal, an advisory lock on PostgreSQL, this process
    only for other databases. sweep.study.workers holds it (named after the study) while a worker checks
    the trial budget and takes a trial, so that no number of workers starts more trials than the budget."""
    with _THREADS:
        path = sqlite_path(url)
        journal = journal_path(url)
        if journal is not None:
            with _journal_lock(journal):
                yield
        elif path is not None:
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
# A lock held longer than this (its holder killed mid-claim) is broken by the next worker that waits;
# a claim (reclaim, count, ask) takes well under a second.
JOURNAL_LOCK_GRACE_S = 60


@contextlib.contextmanager
def _journal_lock(journal: Path) -> Iterator[None]:
    """A lock file created atomically (O_EXCL) beside the journal, study.log.sweep.lock: Optuna's own
    kind of journal lock, since the shared file systems a journal is for may not honour flock. Not
    Optuna's lock file (study.log.lock), which each write of a claim takes and releases."""
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(f"{journal}.sweep", grace_period=JOURNAL_LOCK_GRACE_S)
    lock.acquire()
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):  # broken meanwhile by a worker that waited too long
            lock.release()


@functools.cache
def _lock_engine(url: str) -> sqlalchemy.engine.Engine:
    return sqlalchemy.create_engine(with_driver(url), poolclass=sqlalchemy.pool.NullPool,
                                    connect_args=server_connect_args(with_driver(url)))
