"""Sweeps as separate `loraplus-sweep` processes sharing one study: a `kill -9` and a re-run, four
workers on one SQLite file, three workers on PostgreSQL with one killed mid-trial."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

CLI = [sys.executable, "-c", "import cli; cli.main()"]


@pytest.fixture
def sweep_args(tiny_model, toy_csv):
    # Trials of a few seconds each (most of it the child process starting), so a kill lands mid-trial.
    return ["--model", tiny_model, "--task", toy_csv, "--eta-a", "1e-3:1e-2", "--lambda", "1:64",
            "--rank", "2,4", "--max-steps", "60", "--max-length", "32", "--batch-size", "16",
            "--eval-every", "20", "--sampler", "random", "--pruner", "none", "--device", "cpu",
            "--heartbeat", "1"]


def start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    out = log.open("w")
    return subprocess.Popen([*CLI, *args], stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
                            env={**os.environ, **(env or {})})


def children(pid: int) -> list[int]:
    kids = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        kids += [int(k) for k in Path(path).read_text().split()]
    return kids


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def running_trial_of(proc: subprocess.Popen, storage: str, name: str):
    """A trial that `proc` is running and has reported an evaluation of (mid-trial)."""
    return next((t for t in trials(storage, name) if t.state.name == "RUNNING" and t.intermediate_values
                 and t.user_attrs.get("worker", {}).get("pid") == proc.pid), None)


def assert_exact_budget(ts, budget: int, killed: optuna.trial.FrozenTrial) -> None:
    by_state = {s: [t for t in ts if t.state.name == s] for s in ("COMPLETE", "FAIL", "RUNNING", "WAITING")}
    assert len(by_state["COMPLETE"]) == budget and not by_state["RUNNING"] and not by_state["WAITING"]
    assert [t.number for t in by_state["FAIL"]] == [killed.number]
    assert by_state["FAIL"][0].user_attrs["stop_reason"].startswith("orphaned: its worker (pid ")
    params = [tuple(sorted(t.params.items())) for t in by_state["COMPLETE"]]
    assert len(set(params)) == budget  # none run twice
    retried = [t for t in by_state["COMPLETE"] if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params


def test_kill_dash_9_mid_trial_then_the_same_command_finishes_the_budget(sweep_args, tmp_path):
    db = f"sqlite:///{tmp_path}/sweep.db"
    args = ["run", *sweep_args, "--storage", db, "--study-name", "k9", "--n-trials", "3"]
    proc = start(args, tmp_path / "first.log")
    try:
        victim = wait_for(lambda: running_trial_of(proc, db, "k9"), 120, "a trial to be mid-way")
        kids = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    # The trial's own process dies with its parent: nothing trains on after a kill.
    wait_for(lambda: not any(Path(f"/proc/{k}").exists() for k in kids), 10, "the trial process to end")
    assert [t.state.name for t in trials(db, "k9")][victim.number] == "RUNNING"

    again = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_exact_budget(trials(db, "k9"), 3, victim)


def test_four_workers_on_one_sqlite_file_never_show_a_lock_error(sweep_args, tmp_path):
    db = f"sqlite:///{tmp_path}/sweep.db"
    args = ["run", *sweep_args, "--storage", db, "--study-name", "four", "--n-trials", "8",
            "--max-steps", "20", "--eval-every", "2"]  # short trials: many writes per second
    procs = [start(args, tmp_path / f"w{i}.log") for i in range(4)]
    codes = [p.wait(timeout=600) for p in procs]
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(4)]
    assert codes == [0] * 4, logs
    assert not any("locked" in log or "Traceback" in log for log in logs), logs
    ts = trials(db, "four")
    assert [t.state.name for t in ts].count("COMPLETE") == 8 and len(ts) == 8
    assert len({t.user_attrs["worker"]["pid"] for t in ts}) >= 2  # the work was shared


# --- PostgreSQL ---------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on loopback with a password-protected user; yields (url, password).

    Skipped where PostgreSQL is not installed, unless LORAPLUS_SWEEP_REQUIRE_POSTGRES is set (CI).
    """
    required = bool(os.environ.get("LORAPLUS_SWEEP_REQUIRE_POSTGRES"))
    bin_dir = _pg_bin()
    if bin_dir is None or (os.geteuid() == 0 and not shutil.which("runuser")):
        if required:
            pytest.fail("PostgreSQL is required here (LORAPLUS_SWEEP_REQUIRE_POSTGRES) but not installed")
        pytest.skip("PostgreSQL server binaries not found (apt install postgresql)")
    pytest.importorskip("psycopg", reason="pip install 'loraplus-sweep[postgres]'")
    # The server refuses to run as root: run it as the postgres user there.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    password, port = "s3cret-pw-for-tests", _free_port()
    (root / "pw").write_text(password)
    if as_user:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "sweep", "--auth=scram-sha-256",
        f"--pwfile={root / 'pw'}")
    run(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w", "start",
        "-o", f"-h 127.0.0.1 -p {port} -k {root}")
    try:
        yield f"postgresql://sweep@127.0.0.1:{port}/postgres", password
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_three_workers_on_postgresql_share_one_budget_and_retry_a_killed_workers_trial(
    sweep_args, tmp_path, postgres
):
    url, password = postgres
    env = {"PGPASSWORD": password}  # the password from the environment, as users are told to
    optuna_url = url.replace("postgresql://", "postgresql+psycopg://")
    os.environ["PGPASSWORD"] = password  # for this test's own reads of the study
    try:
        # One worker names the password in the URL: it must still appear nowhere.
        with_pw = url.replace("sweep@", f"sweep:{password}@")
        first = start(["run", *sweep_args, "--storage", with_pw, "--study-name", "pg", "--n-trials", "6"],
                      tmp_path / "run.log")
        wait_for(lambda: trials(optuna_url, "pg"), 120, "the study to be created")
        others = [start(["worker", "pg", "--storage", url, "--heartbeat", "1"], tmp_path / f"w{i}.log", env)
                  for i in (1, 2)]
        victim_proc = others[0]
        victim = wait_for(lambda: running_trial_of(victim_proc, optuna_url, "pg"), 180, "worker 1 mid-trial")
        victim_proc.send_signal(signal.SIGKILL)
        victim_proc.wait()
        assert first.wait(timeout=600) == 0 and others[1].wait(timeout=600) == 0
        logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
        assert_exact_budget(trials(optuna_url, "pg"), 6, victim)
        assert "***@127.0.0.1" in logs["run.log"]  # the URL is shown, masked
        study = optuna.load_study(study_name="pg", storage=optuna_url)
        attrs = [(t.user_attrs, t.system_attrs) for t in study.trials]
        stored = repr((study.user_attrs, attrs))
        assert not any(password in text for text in [*logs.values(), stored])
    finally:
        os.environ.pop("PGPASSWORD", None)
