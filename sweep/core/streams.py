"""Standard output and error as the command line finds them: closed, full, or in an encoding that
lacks the report's own characters (lambda, eta, the ellipsis). Each is one line and an exit code at
the error edge, never an "unexpected" error or a traceback at exit."""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import sys
import unicodedata

from sweep.core.errors import SweepError

# What the report writes beyond ASCII, in words a terminal of any encoding shows; anything else falls
# back to its ASCII decomposition (é -> e), or "?".
SPELLED = {
    "λ": "lambda", "η": "eta", "Δ": "delta", "σ": "sigma", "μ": "mu", "…": "...", "±": "+/-", "×": "x",
    "≥": ">=", "≤": "<=", "≈": "~", "→": "->", "—": "-", "–": "-", "−": "-", "·": ".", "²": "^2",
    "✓": "ok", "✗": "x", "•": "*", "“": '"', "”": '"', "‘": "'", "’": "'",
}
ERRORS = "loraplus-spelled"


def _spell(e: UnicodeError) -> tuple[str, int]:
    if not isinstance(e, UnicodeEncodeError):
        raise e
    out = []
    for c in e.object[e.start : e.end]:
        ascii_form = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode()
        out.append(SPELLED.get(c) or ascii_form or "?")
    return "".join(out), e.end


codecs.register_error(ERRORS, _spell)


class OutputFailed(SweepError):
    """Standard output cannot be written (a full disk, a lost terminal): what the command printed is lost."""

    exit_code = 1

    def __init__(self, e: OSError) -> None:
        super().__init__(f"cannot write to standard output: {e.strerror or e} (what it printed is lost; "
                         "stored results are unchanged)")


class _Guarded(io.FileIO):
    """The file descriptor of standard output, whose write errors are OutputFailed: distinct from
    every other OSError a command may meet (reading a task, writing a database)."""

    def write(self, b) -> int:  # type: ignore[override]
        try:
            return super().write(b)
        except BrokenPipeError:
            raise  # the reader went away (| head): rich and the edge end quietly
        except OSError as e:
            raise OutputFailed(e) from e


def prepare() -> SweepError | None:
    """Make standard output's write errors OutputFailed and spell out what its encoding lacks (both
    streams); the error to end with where standard output is closed. Streams that are not the
    interpreter's own (a test's capture) are left as they are."""
    closed = SweepError("standard output is closed; redirect it (> /dev/null to discard what the command "
                        "prints)")
    if sys.stdout is None:  # closed before the interpreter started
        return closed
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not getattr(sys, f"__{name}__"):  # replaced (a test's capture): not ours to change
            continue
        try:
            fd = stream.fileno()
            encoding = codecs.lookup(stream.encoding).name
        except (AttributeError, OSError, LookupError, ValueError):  # captured, or not a real stream
            continue
        errors = stream.errors if encoding.startswith("utf") else ERRORS
        if name == "stderr":
            stream.reconfigure(errors=errors)
            continue
        try:
            stream.flush()
            raw = _Guarded(fd, "w", closefd=False)
        except OSError:  # closed since (EBADF)
            return closed
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding, errors=errors,
                                      line_buffering=stream.line_buffering)
    return None


def discard() -> None:
    """After a failed write: standard output goes to /dev/null, so that what is left in its buffer
    does not fail again when the interpreter flushes it at exit."""
    with open(os.devnull, "wb") as null:
        try:
            os.dup2(null.fileno(), 1)
        except OSError:
            return
    with contextlib.suppress(OSError, SweepError):
        sys.stdout.flush()
