"""Making a file or directory read-only for a test, also where the tests run as root (for whom the
mode bits do not bind), and writable again."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def read_only(path: Path) -> None:
    """chmod where it binds (not as root), else the immutable flag; skip where neither can."""
    os.chmod(path, 0o444 if path.is_file() else 0o555)
    if os.access(path, os.W_OK) and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if os.access(path, os.W_OK):
        writable(path)
        kind = "a file" if path.is_file() else "a directory"
        pytest.skip(f"no way to make {kind} read-only on this machine")


def writable(path: Path) -> None:
    subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, 0o755)
