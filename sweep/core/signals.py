"""Ctrl-C, SIGTERM and SIGHUP as a request to stop, so that a sweep fails its running trials with the reason
before it exits instead of leaving them RUNNING.

Left to Python, a signal raises KeyboardInterrupt wherever the main thread is: in the middle of a
storage write, or in Thread.join, which (Python 3.11) then takes the live thread for stopped; the
process exits, multiprocessing kills the trial's child, and nobody tells the study. A handler that
only sets an event lets every worker see it, end its trial and return; the caller then raises
Interrupted.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# SIGHUP (the terminal or ssh session closed) is a request to stop like SIGTERM: left to its default,
# it killed the sweep at once and left its trials RUNNING.
REASONS = {signal.SIGINT: "interrupted by SIGINT (Ctrl-C)", signal.SIGTERM: "interrupted by SIGTERM",
           signal.SIGHUP: "interrupted by SIGHUP (hangup: the terminal closed)"}


def was_interrupted(reason: object) -> bool:
    """Whether a failed trial's stored stop reason is a stop that was asked for (REASONS, or the
    workers' "interrupted by the user"): no failure of its configuration."""
    return isinstance(reason, str) and reason.startswith("interrupted")


class Interrupted(KeyboardInterrupt):
    """Work stopped on request; its message is the reason stored with the trials it ended."""

    def __init__(self, reason: str, signum: int | None = None) -> None:
        super().__init__(reason)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention, 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
        return 128 + (self.signum or signal.SIGINT)


class Stop(threading.Event):
    """An event that says why it was set, and by which signal if one set it; the first reason wins."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""
        self.signum: int | None = None

    def request(self, reason: str, signum: int | None = None) -> None:
        if not self.is_set():
            self.reason, self.signum = reason, signum
            self.set()

    def check(self) -> None:
        """Raise Interrupted if stop was requested (the way a worker thread passes on a Ctrl-C)."""
        if self.is_set():
            raise Interrupted(self.reason, self.signum)


@contextmanager
def stop_on_signals(stop: Stop) -> Iterator[None]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP request `stop` instead of raising where they land; a
    second signal changes nothing (the first is being handled, which takes about a second). Outside
    the main thread, where no handler can be installed, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        stop.request(REASONS[signal.Signals(signum)], signum)

    previous = {s: signal.signal(s, handle) for s in REASONS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
