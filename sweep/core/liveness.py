"""Who runs a trial, and whether that process is known to be gone (a `kill -9`, a crash)."""

from __future__ import annotations

import os
import socket


def identity() -> dict[str, object]:
    """This process: host, pid and start time, stored with each trial it runs."""
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


def is_gone(worker: object) -> bool:
    """True only for a process known to be dead: one of this machine that no longer runs. Processes
    elsewhere are judged by their heartbeats."""
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False
    try:
        pid = int(worker.get("pid", -1))
    except (TypeError, ValueError):
        return False
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = worker.get("started")
    return started is not None and _process_start(pid) not in (None, started)
