"""Helpers for tests that run `loraplus-sweep` as separate processes and watch their study."""

from __future__ import annotations

import functools
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from sweep.study.storage import journal_path, open_storage
from sweep.study.stored import stop_reason

CLI = [sys.executable, "-c", "import cli; cli.main()"]


def sweep_args(model: str, task: str) -> list[str]:
    """Trials of a few seconds each (most of it the child process starting), so a kill lands mid-trial."""
    return ["--model", model, "--task", task, "--eta-a", "1e-3:1e-2", "--lambda", "1:64",
            "--rank", "2,4", "--max-steps", "60", "--max-length", "32", "--batch-size", "16",
            "--eval-every", "20", "--sampler", "random", "--pruner", "none", "--device", "cpu",
            "--heartbeat", "1"]


def _ctrl_c_at_its_default() -> None:
    # A shell starts a background job with SIGINT ignored, and an ignored signal stays ignored in
    # the programs it starts: a suite run in the background would pass that on to the CLI, where
    # Python then installs no KeyboardInterrupt. A command typed at a terminal gets the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """The CLI with `args`, output to `log`, in a process group of its own and with Ctrl-C at its
    default, as a terminal starts a command: os.killpg reaches it and its trials' processes, as
    Ctrl-C does."""
    out = log.open("w")
    return subprocess.Popen([*CLI, *args], stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
                            env={**os.environ, **(env or {})}, start_new_session=True,
                            preexec_fn=_ctrl_c_at_its_default)


def children(pid: int) -> list[int]:
    kids = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        kids += [int(k) for k in Path(path).read_text().split()]
    return kids


def trial_processes(pid: int) -> list[int]:
    """The children of `pid` that run trials (multiprocessing's spawned ones, not its resource tracker)."""
    found = []
    for kid in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{kid}/cmdline").read_bytes():
                found.append(kid)
        except OSError:
            pass  # ended meanwhile
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@functools.cache
def _storage(url: str) -> optuna.storages.BaseStorage:
    # once: opening one costs more CPU than the trials polled
    if journal_path(url) is not None:
        return open_storage(url, create=False)
    return optuna.storages.RDBStorage(url)


def trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, each with its stop reason as the reports read it (a reclaimed trial's is
    stored on the study)."""
    try:
        study = optuna.load_study(study_name=name, storage=_storage(storage))
    except KeyError:  # not created yet
        return []
    ts = study.get_trials(deepcopy=True)
    for t in ts:
        reason = stop_reason(t, study.user_attrs)
        if reason:
            t.set_user_attr("stop_reason", reason)
    return ts


def running_trials_of(proc: subprocess.Popen, storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials(storage, name) if t.state.name == "RUNNING"
            and t.user_attrs.get("worker", {}).get("pid") == proc.pid]


def running_trial_of(proc: subprocess.Popen, storage: str, name: str):
    """A trial that `proc` is running and has reported an evaluation of (mid-trial)."""
    return next((t for t in running_trials_of(proc, storage, name) if t.intermediate_values), None)


def assert_exact_budget(ts, budget: int, orphans) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """`budget` complete trials, none running or waiting, no point run twice, and each orphan (a trial
    whose worker was killed) failed as such and retried once with its parameters. Returns the trials
    by state, for further checks."""
    by_state = {s: [t for t in ts if t.state.name == s] for s in ("COMPLETE", "FAIL", "RUNNING", "WAITING")}
    states = [(t.number, t.state.name, t.user_attrs.get("stop_reason")) for t in ts]
    assert len(by_state["COMPLETE"]) == budget and not by_state["RUNNING"] and not by_state["WAITING"], states
    params = [tuple(sorted(t.params.items())) for t in by_state["COMPLETE"]]
    assert len(set(params)) == budget  # none run twice
    for orphan in orphans:
        assert ts[orphan.number].user_attrs["stop_reason"].startswith("orphaned: its worker (pid ")
        retried = [t for t in by_state["COMPLETE"] if t.system_attrs.get("failed_trial") == orphan.number]
        assert len(retried) == 1 and retried[0].params == orphan.params
    return by_state
