"""`loraplus-sweep dashboard`: optuna-dashboard served on a stored study, and its one-line refusals."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from sweep.data.spec import load_spec
from sweep.study.stored import StoredStudy

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 120  # the server starts in seconds; a loaded CI machine can take many times that


@pytest.fixture
def stored(tmp_path) -> str:
    """A SQLite database holding one study, named 'dash-toy'."""
    url = f"sqlite:///{tmp_path}/loraplus.db"
    StoredStudy.create_or_load(load_spec(None, {"model": "bert", "task": "sst2", "storage": url,
                                                "name": "dash-toy"}))
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_dashboard_serves_the_stored_studies_until_it_is_stopped(stored):
    port = free_port()
    command = ["dashboard", "--storage", stored, "--port", str(port)]
    proc = subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", *command], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, answer = time.monotonic() + DEADLINE_S, None
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as r:
                    answer = json.loads(r.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        assert answer is not None, f"no answer in {DEADLINE_S} s; exit code {proc.poll()}"
        assert [s["study_name"] for s in answer["study_summaries"]] == ["dash-toy"]
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert out.splitlines()[0] == f"http://127.0.0.1:{port}/", err


def test_a_storage_that_does_not_exist_is_one_line_and_is_not_created(tmp_path):
    missing = tmp_path / "none.db"
    url = f"sqlite:///{missing}"
    res = CliRunner().invoke(app, ["dashboard", "--storage", url, "--port", str(free_port())])
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0
    assert f"no results database at {missing}" in res.stderr
    assert not missing.exists()


def test_without_optuna_dashboard_it_says_what_to_install(stored, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # how Python marks a package it cannot import
    res = CliRunner().invoke(app, ["dashboard", "--storage", stored, "--port", str(free_port())])
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0
    assert "pip install 'loraplus-sweep[dashboard]'" in res.stderr


def test_a_port_in_use_is_one_line(stored):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(app, ["dashboard", "--storage", stored, "--port", str(port)])
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0
    assert f"cannot serve the dashboard on 127.0.0.1:{port}" in res.stderr
