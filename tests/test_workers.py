"""Workers of one process: an exact trial budget, heartbeats, and trials whose worker is gone."""

import subprocess
import sys
import types

import pytest

from sweep.core.liveness import identity as worker_identity
from sweep.data.spec import load_spec
from sweep.study import stored
from sweep.study.workers import open_study, run_study

STORAGES = {"sqlite": "sqlite:///{}/sweep.db", "journal": "journal://{}/sweep.log"}


@pytest.fixture(params=list(STORAGES))  # a journal file locks, beats and reclaims as SQLite does
def spec(tiny_model, toy_csv, tmp_path, request):
    return load_spec(None, {
        "model": tiny_model, "task": toy_csv, "n_trials": 4, "sampler": "random", "pruner": "none",
        "eta_a": (1e-3, 1e-2), "lambda": (1.0, 64.0), "rank": (2, 4), "epochs": 1.0, "batch_size": 32,
        "max_length": 32, "eval_every": 4, "device": "cpu",
        "storage": STORAGES[request.param].format(tmp_path),
    })


def states(study):
    return sorted(t.state.name for t in study.trials())


@pytest.mark.processes  # two trial processes at a time, each starting torch afresh
def test_two_cpu_workers_share_the_cores_and_stop_at_the_budget(spec):
    study = run_study(spec.replace(jobs=2))
    assert states(study) == ["COMPLETE"] * 4
    assert {t.user_attrs["slot"] for t in study.trials()} == {"cpu#0", "cpu#1"}
    assert {t.user_attrs["worker"]["pid"] for t in study.trials()} == {worker_identity()["pid"]}


def dead_pid() -> int:
    """The pid of a process of this machine that has ended."""
    code = "import os; print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return int(done.stdout)


def running_trial(study, spec, worker):
    trial = study.ask(spec, draw=0)
    trial.config(spec)
    trial.note("worker", worker)
    return trial


def test_trials_of_a_dead_local_process_are_failed_and_requeued_at_once(spec):
    study = open_study(spec)
    gone = {**worker_identity(), "pid": dead_pid()}
    orphan = running_trial(study, spec, gone)
    mine = running_trial(study, spec, worker_identity())
    assert study.reclaim() == 1
    trials = study.trials()
    assert trials[orphan.number].state.name == "FAIL"
    reason = study.stop_reason(trials[orphan.number])
    assert reason.startswith(f"orphaned: its worker (pid {gone['pid']} on ")
    assert trials[mine.number].state.name == "RUNNING"  # this process is alive
    retry = trials[-1]
    assert retry.state.name == "WAITING" and retry.params == trials[orphan.number].params
    assert retry.system_attrs["failed_trial"] == orphan.number


def test_a_trial_whose_machine_stopped_beating_is_failed_and_requeued(spec, monkeypatch):
    clock = [1_000_000.0]  # the clock that beats and reclaim read, moved by hand instead of waited for
    monkeypatch.setattr(stored, "time", types.SimpleNamespace(time=lambda: clock[0]))
    study = open_study(spec.replace(heartbeat=1))  # stale after 3 s without a beat
    elsewhere = {"host": "another-machine", "pid": 1, "started": None}
    lost = running_trial(study, spec, elsewhere)
    alive = running_trial(study, spec, elsewhere)
    with study.heartbeat(lost, 1):  # one beat, then silence
        pass
    clock[0] += 2.5
    with study.heartbeat(alive, 1):
        pass
    assert study.reclaim() == 0  # another machine's pid means nothing here
    clock[0] += 2.5
    assert study.reclaim() == 1
    trials = study.trials()
    assert trials[lost.number].state.name == "FAIL"
    assert "stopped sending heartbeats" in study.stop_reason(trials[lost.number])
    assert trials[alive.number].state.name == "RUNNING"
    assert trials[-1].state.name == "WAITING" and trials[-1].params == trials[lost.number].params


def test_a_requeued_trial_runs_again_and_the_budget_still_holds(spec):
    study = open_study(spec)
    orphan = running_trial(study, spec, {**worker_identity(), "pid": dead_pid()})
    run_study(spec.replace(n_trials=3, in_process=True), store=study)
    trials = study.trials()
    assert states(study) == ["COMPLETE"] * 3 + ["FAIL"]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == trials[orphan.number].params


def test_trials_that_keep_failing_stop_the_sweep_with_the_reason(spec, monkeypatch):
    from sweep.study import workers

    def broken(*args, **kwargs):
        raise RuntimeError("no such device")

    monkeypatch.setattr(workers, "run_trial", broken)
    with pytest.raises(workers.SweepStopped, match="5 trials failed in a row.*no such device"):
        run_study(spec.replace(n_trials=20, in_process=True))


def test_the_stored_definition_holds_no_storage_url_and_a_worker_can_join_from_it(spec):
    study = open_study(spec)
    assert "storage" not in study.attrs["spec"]  # a PostgreSQL URL may hold a password
    joined = study.joined_spec({"jobs": 2})
    assert joined.definition_hash() == spec.definition_hash() and joined.study_name == spec.study_name
    assert joined.jobs == 2 and joined.n_trials == spec.n_trials
