"""Ctrl-C (once and twice), SIGTERM, kill -9 of the sweep and of a trial's process, with one and two
trials at a time: no trial stays RUNNING, each ends with its reason, and the same command then
finishes the exact budget. Also a study deleted under a running sweep, and `confirm` under Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from processes import (
    CLI,
    alive,
    assert_exact_budget,
    running_trials_of,
    start,
    sweep_args,
    trial_processes,
    trials,
    wait_for,
)

from sweep.core.signals import Interrupted, Stop, stop_on_signals
from sweep.data.hooks import Hooks
from sweep.data.spec import load_spec
from sweep.study.workers import run_study

# Ten seconds and more of training after the first evaluation (two trials sharing two cores take
# longer): a signal sent once the test sees the trials running lands mid-trial, however slowly the
# test's own polling runs. With 300 steps a trial could finish first.
LONG = ["--max-steps", "1500", "--eval-every", "20"]
KILLED = "trial process killed by SIGKILL (out of host memory?)"


def busy(proc: subprocess.Popen, db: str, name: str, jobs: int, training: bool):
    """`proc`'s trials once it runs `jobs` of them, each in its process with its whole point drawn (a
    loaded machine can be seen between a trial's start and its draw, or between two of its draws: rank
    comes last, and a trial killed before it has no point to retry) and, with `training`, each past its
    first evaluation."""
    running = running_trials_of(proc, db, name)
    if (len(running) < jobs or len(trial_processes(proc.pid)) < jobs
            or not all("rank" in t.params for t in running)):
        return None
    return running if not training or all(t.intermediate_values for t in running) else None


def signalled(args, log, db, jobs, training, signals, kill_a_trial) -> tuple[list, int]:
    """Run the sweep and, once it runs `jobs` trials, send `signals` to its process group (as a
    terminal sends Ctrl-C); with `kill_a_trial`, kill -9 one trial's process first and wait for the
    trial that takes its place. The trials it ran when signalled, and its exit code."""
    proc = start(args, log)
    try:
        victims = wait_for(lambda: busy(proc, db, "s", jobs, training), 180, f"{jobs} running trials")
        if kill_a_trial:
            before = len(trials(db, "s"))
            os.kill(trial_processes(proc.pid)[0], signal.SIGKILL)
            victims = wait_for(lambda: len(trials(db, "s")) > before and busy(proc, db, "s", jobs, False),
                               120, "a trial in place of the killed one")
        for sig in signals:
            os.killpg(proc.pid, sig)
        return victims, proc.wait(timeout=60)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_signal_requests_a_stop_once_and_the_handlers_are_restored_after():
    stop, before = Stop(), signal.getsignal(signal.SIGINT)
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # the first reason stands
    assert (stop.reason, stop.signum) == ("interrupted by SIGTERM", signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(Interrupted, match="interrupted by SIGTERM") as stopped:
        stop.check()
    assert stopped.value.exit_code == 143


def test_a_signal_stops_a_trial_running_in_this_process_and_fails_it_with_the_reason(
    tiny_model, toy_csv, tmp_path
):
    spec = load_spec(None, {
        "model": tiny_model, "task": toy_csv, "n_trials": 3, "sampler": "random", "pruner": "none",
        "max_steps": 200, "eval_every": 10, "max_length": 32, "device": "cpu", "in_process": True,
        "storage": f"sqlite:///{tmp_path}/sweep.db", "name": "s",
    })
    evals = []

    def ctrl_c_at_first_eval(n, point):
        evals.append(point.step)
        if len(evals) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as stopped:
        run_study(spec, Hooks(eval=ctrl_c_at_first_eval))
    assert stopped.value.exit_code == 130
    assert evals == [10]  # stopped at the next step, before another evaluation
    ts = trials(spec.storage, spec.study_name)
    assert [(t.state.name, t.user_attrs["stop_reason"]) for t in ts] == [
        ("FAIL", "interrupted by SIGINT (Ctrl-C)")]


@pytest.mark.processes
@pytest.mark.parametrize("jobs", [1, 2])
def test_no_interruption_leaves_a_trial_running_and_the_same_command_finishes_the_budget(
    jobs, tiny_model, toy_csv, tmp_path
):
    db = f"sqlite:///{tmp_path}/sweep.db"
    args = ["run", *sweep_args(tiny_model, toy_csv), *LONG, "--storage", db, "--study-name", "s",
            "--n-trials", str(jobs), "--jobs", str(jobs)]

    # Ctrl-C mid-training; Ctrl-C twice while the trials' processes start; kill -9 of one trial's
    # process (the sweep goes on with another), then SIGTERM. Each run fails its trials with the
    # reason and exits; none is left RUNNING.
    for signals, training, kill_a_trial, code, reason in (
        ([signal.SIGINT], True, False, 130, "interrupted by SIGINT (Ctrl-C)"),
        ([signal.SIGINT, signal.SIGINT], False, False, 130, "interrupted by SIGINT (Ctrl-C)"),
        ([signal.SIGTERM], False, True, 143, "interrupted by SIGTERM"),
    ):
        log = tmp_path / f"{len(signals)}-{signals[0].name}.log"
        victims, exit_code = signalled(args, log, db, jobs, training, signals, kill_a_trial)
        assert exit_code == code
        output = log.read_text()
        assert f"{reason}: the running trials are stored as failed" in output and "Traceback" not in output
        ts = trials(db, "s")
        assert [t.state.name for t in ts].count("RUNNING") == 0
        assert [ts[v.number].user_attrs["stop_reason"] for v in victims] == [reason] * jobs
    assert [t.user_attrs.get("stop_reason") for t in trials(db, "s")].count(KILLED) == 1

    # kill -9 of the sweep: its trials' processes die with it, and its trials (the plain-LoRA
    # baseline among them) stay RUNNING until the next run on this machine fails and queues them.
    proc = start(args, tmp_path / "kill.log")
    try:
        orphans = wait_for(lambda: busy(proc, db, "s", jobs, False), 180, f"{jobs} running trials")
        kids = trial_processes(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        stop(proc)
    wait_for(lambda: not any(alive(k) for k in kids), 60, "the trials' processes to end with the sweep")

    again = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    by_state = assert_exact_budget(trials(db, "s"), jobs, orphans)
    reasons = sorted(t.user_attrs["stop_reason"].split(" (pid")[0] for t in by_state["FAIL"])
    assert reasons == sorted(["interrupted by SIGINT (Ctrl-C)"] * 2 * jobs + ["interrupted by SIGTERM"] * jobs
                             + [KILLED] + ["orphaned: its worker"] * jobs)


@pytest.mark.processes
def test_deleting_the_study_under_a_running_sweep_ends_it_with_one_line(tiny_model, toy_csv, tmp_path):
    db = f"sqlite:///{tmp_path}/sweep.db"
    log = tmp_path / "run.log"
    proc = start(["run", *sweep_args(tiny_model, toy_csv), *LONG, "--storage", db, "--study-name", "doomed",
                  "--n-trials", "2", "--jobs", "2"], log)
    try:
        wait_for(lambda: busy(proc, db, "doomed", 2, False), 180, "two running trials")
        gone = subprocess.run([*CLI, "studies", "delete", "doomed", "--yes", "--storage", db],
                              capture_output=True, text=True, cwd=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert proc.wait(timeout=120) == 1
    finally:
        stop(proc)
    lines = log.read_text().splitlines()
    assert "error: study doomed was deleted while this sweep ran; nothing more to do" in lines
    assert not any("Traceback" in line or "KeyError" in line for line in lines)
    assert trials(db, "doomed") == []  # not created again


@pytest.mark.processes
def test_ctrl_c_during_confirm_fails_its_running_trial(tiny_model, toy_csv, tmp_path):
    db = f"sqlite:///{tmp_path}/sweep.db"
    run_study(load_spec(None, {  # a LoRA+ trial and the plain-LoRA baseline to confirm, trained here
        "model": tiny_model, "task": toy_csv, "n_trials": 2, "sampler": "random", "pruner": "none",
        "lambda": (1.0, 64.0), "rank": (2,), "max_steps": 20, "eval_every": 10, "max_length": 32,
        "device": "cpu", "storage": db, "in_process": True, "name": "toy",
    }))
    log = tmp_path / "confirm.log"
    # The toy file has no test split: its runs score the validation split.
    proc = start(["confirm", "toy", "--seeds", "2", "--split", "validation", "--storage", db], log)
    try:
        victims = wait_for(lambda: busy(proc, db, "toy.confirm-validation", 1, False), 180, "a confirm run")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        stop(proc)
    output = log.read_text()
    assert "interrupted by SIGINT (Ctrl-C): the running trials are stored as failed" in output
    assert "Traceback" not in output
    ts = trials(db, "toy.confirm-validation")
    # One run failed with the reason; the others stay queued for the next confirm.
    assert [t.state.name for t in ts].count("FAIL") == 1 and "RUNNING" not in [t.state.name for t in ts]
    assert ts[victims[0].number].state.name == "FAIL"
    assert ts[victims[0].number].user_attrs["stop_reason"] == "interrupted by SIGINT (Ctrl-C)"


@pytest.mark.processes
def test_ctrl_c_during_a_single_trial_is_one_line_and_exit_130(tiny_model, toy_csv, tmp_path):
    cache = tmp_path / "cache"
    log = tmp_path / "trial.log"
    args = ["trial", "--model", tiny_model, "--task", toy_csv, "--max-length", "32", "--max-steps", "100000"]
    proc = start(args, log, env={"LORAPLUS_SWEEP_CACHE": str(cache), "PYTHONFAULTHANDLER": "1"})
    try:
        # The tokenized data is cached just before training starts.
        wait_for(lambda: list(cache.glob("tokens/*.npz")), 120, "the trial's tokenized data")
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
            proc.wait(timeout=10)
            pytest.fail("no exit within 60 s of SIGINT; where its threads were:\n" + log.read_text()[-6000:])
        assert code == 130
    finally:
        stop(proc)
    out = log.read_text()
    assert "Traceback" not in out
    last = out.strip().splitlines()[-1]
    assert last == "error: interrupted: the trial stopped before its end; nothing was stored"
