"""Sweeps as separate `loraplus-sweep` processes sharing one study: four workers on one SQLite file or
one journal file, three workers on PostgreSQL with one killed mid-trial. (Interrupts and kills:
test_interrupts.py.)"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from processes import assert_exact_budget, running_trial_of, start, trials, wait_for
from processes import sweep_args as make_sweep_args

pytestmark = pytest.mark.processes  # real sweep processes, signals and databases: minutes


@pytest.fixture
def sweep_args(tiny_model, toy_csv):
    return make_sweep_args(tiny_model, toy_csv)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_four_workers_on_one_file_never_show_a_lock_error(sweep_args, tmp_path, kind):
    db = f"sqlite:///{tmp_path}/sweep.db" if kind == "sqlite" else f"journal://{tmp_path}/sweep.log"
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
        by_state = assert_exact_budget(trials(optuna_url, "pg"), 6, [victim])
        assert [t.number for t in by_state["FAIL"]] == [victim.number]
        assert "***@127.0.0.1" in logs["run.log"]  # the URL is shown, masked
        study = optuna.load_study(study_name="pg", storage=optuna_url)
        attrs = [(t.user_attrs, t.system_attrs) for t in study.trials]
        stored = repr((study.user_attrs, attrs))
        assert not any(password in text for text in [*logs.values(), stored])
    finally:
        os.environ.pop("PGPASSWORD", None)
