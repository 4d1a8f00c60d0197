"""The environment a command runs in, as a careless user leaves it: standard output full, closed, cut
short by a reader or in an encoding without the report's characters; a cache that is a file. Each is
one line on stderr and an exit code, never an "unexpected" error or a traceback, and the database is
left as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import cli; cli.main()"]
EVIDENCE = ROOT / "results" / "evidence-v2.db"


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("streams") / "results.db"
    shutil.copy(EVIDENCE, path)
    return path


def cli(args: list[str], stdout, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(stderr: str, *words: str) -> None:
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    for w in words:
        assert w in stderr, stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("command", [["report"], ["studies", "list"]])
def test_a_full_disk_on_stdout_is_one_line_with_exit_1(db, command):
    before = digest(db)
    with open("/dev/full", "w") as full:
        r = cli([*command, "--storage", f"sqlite:///{db}"], full)
    assert r.returncode == 1, r.stderr
    one_line(r.stderr, "cannot write to standard output", "No space left on device")
    assert digest(db) == before


def test_a_closed_stdout_is_refused_before_anything_runs(db):
    code = "import os, cli; os.close(1); cli.main()"  # what `> &-` leaves a process
    r = subprocess.run([sys.executable, "-c", code, "report", "--storage", f"sqlite:///{db}"], cwd=ROOT,
                       stderr=subprocess.PIPE, text=True, timeout=600, pass_fds=())
    r2 = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *CLI, "report", "--storage", f"sqlite:///{db}"],
                        cwd=ROOT, stderr=subprocess.PIPE, text=True, timeout=600)
    assert r2.returncode == 2, r2.stderr
    one_line(r2.stderr, "standard output is closed")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_report_on_a_stdout_without_its_characters_spells_them_out(db, tmp_path, encoding):
    out = tmp_path / "report.txt"
    with out.open("w") as f:
        r = cli(["report", "--storage", f"sqlite:///{db}"], f, env={"PYTHONIOENCODING": encoding})
    assert r.returncode == 0, r.stderr
    text = out.read_bytes().decode(encoding)
    assert "best configuration vs plain LoRA (lambda = 1)" in text
    assert "λ" not in text and "…" not in text
    assert "smollm2-135m" in text and "rotten-tomatoes" in text


def test_a_reader_that_stops_early_ends_the_command_quietly(db):
    proc = subprocess.Popen([*CLI, "report", "--storage", f"sqlite:///{db}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    stderr = proc.stderr.read()
    assert proc.wait(timeout=600) != 0
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


@pytest.mark.parametrize("where", ["file", "below-a-file"])
def test_a_cache_that_is_not_a_directory_is_one_line_before_any_trial(tmp_path, monkeypatch, tiny_model,
                                                                      toy_csv, where):
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LORAPLUS_SWEEP_CACHE", str(blocker if where == "file" else blocker / "sub"))
    storage = tmp_path / "r.db"
    for args in (["trial", "--model", tiny_model, "--task", toy_csv],
                 ["run", "--model", tiny_model, "--task", toy_csv, "--n-trials", "1", "--storage",
                  f"sqlite:///{storage}"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, r.output
        one_line(r.stderr, "the cache directory", "LORAPLUS_SWEEP_CACHE")
    assert not storage.exists()  # refused before the study was made
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("columns", ["80", "60"])
def test_studies_list_shows_every_name_whole_at_a_narrow_terminal(db, columns):
    """The names are what show, export and delete take: cut to 'minilm-l6-rotten-tomatoe…' at 80
    columns, none of them could be copied from the list."""
    names = cli(["studies", "list", "--names", "--storage", f"sqlite:///{db}"], subprocess.PIPE)
    assert names.returncode == 0 and len(names.stdout.split()) > 4, names.stderr
    table = cli(["studies", "list", "--storage", f"sqlite:///{db}"], subprocess.PIPE,
                env={"COLUMNS": columns})
    assert table.returncode == 0, table.stderr
    shown = {cell.strip() for line in table.stdout.splitlines() for cell in line.split("│")}
    assert set(names.stdout.split()) <= shown
