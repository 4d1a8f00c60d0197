"""Where results are written: output paths checked before any work, and file names made from
stored (untrusted) study names."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from sweep.core.errors import SweepError
from sweep.core.schema import short

# The formats a report's tables are written in (sweep.analysis.report.render): known here, where a command
# checks its flags before importing what renders them.
FORMATS = ("csv", "json", "markdown")


def safe_name(name: str, limit: int = 80) -> str:
    """A study name as a file name: no path separators or traversal, at most `limit` characters. A
    name that had to change gets a hash of the original, so two names never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:limit] or "study"
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return safe


def prepare_dir(path: Path) -> Path:
    """Create the output directory (and its parents), or say in one line why it cannot be. A symlink
    is followed: a dangling one gets the directory it points at (mkdir would say "File exists")."""
    path = Path(path)
    if path.is_symlink():
        try:
            path = path.resolve()
        except (OSError, RuntimeError) as e:  # a loop (RuntimeError before Python 3.13)
            raise SweepError(f"the output directory {short(str(path))} is a symlink that cannot be resolved "
                             f"({getattr(e, 'strerror', None) or 'a symlink loop'})") from e
    if path.exists() and not path.is_dir():
        raise SweepError(f"{short(str(path))} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot create the output directory {short(str(path))}: {e.strerror}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise SweepError(f"the output directory {short(str(path))} is not writable")
    return path


def prepare_file(path: Path) -> Path:
    """Check that a file can be written at `path` (its directory is created, or that of the file a
    symlink points at), before any work."""
    path = Path(path)
    if path.is_dir():
        raise SweepError(f"--out {short(str(path))} is a directory; name a file")
    try:
        target = path.resolve() if path.is_symlink() else path
    except (OSError, RuntimeError) as e:  # a loop (RuntimeError before Python 3.13)
        raise SweepError(f"--out {short(str(path))} is a symlink that cannot be resolved "
                         f"({getattr(e, 'strerror', None) or 'a symlink loop'})") from e
    prepare_dir(target.parent)
    if path.exists() and not os.access(path, os.W_OK):
        raise SweepError(f"--out {short(str(path))} is not writable")
    return path


def write_text(path: Path, text: str) -> Path:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise SweepError(f"cannot write {short(str(path))}: {e.strerror or e}") from e
    return Path(path)
