"""Trials in child processes: a raise, an OOM, a hang, a kill and a divergence each end the trial
with the right state and reason, and the study goes on to finish its other trials."""

import time

import optuna
import pytest

from sweep.data.spec import load_spec
from sweep.engine import trial_process
from sweep.engine.trial_process import TrialFailed, make_slots, run_isolated
from sweep.study.workers import run_study

# A runner for the child that fails in the way the trial's lambda asks for, else trains for real.
FAULTS = '''
import os, signal, time
import torch
from sweep.engine.train import run_trial

def by_lambda(cfg, on_eval=None, on_step=None):
    if cfg.lam == 2.0:
        raise ValueError("boom")
    if cfg.lam == 3.0:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    if cfg.lam == 4.0:
        time.sleep(600)
    if cfg.lam == 5.0:
        os.kill(os.getpid(), signal.SIGKILL)
    if cfg.lam == 6.0:
        cfg = cfg.replace(eta_a=50.0, lam=64.0, head_lr=50.0, max_grad_norm=None, warmup_ratio=0.0)
    return run_trial(cfg, on_eval, on_step)
'''


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    (tmp_path / "faults.py").write_text(FAULTS)
    monkeypatch.syspath_prepend(str(tmp_path))  # a spawned child starts with the parent's sys.path
    monkeypatch.setattr(trial_process, "RUNNER", "faults:by_lambda")


def test_an_isolated_trial_returns_the_same_result_as_in_process(tiny_cfg):
    from sweep.engine.train import run_trial

    cfg = tiny_cfg.replace(max_steps=6, eval_every=3)
    steps, evals = [], []
    isolated = run_isolated(cfg, on_eval=lambda p: evals.append(p.step) or False,
                            on_step=lambda s, t, loss: steps.append(s))
    here = run_trial(cfg)
    assert isolated.metric == here.metric and isolated.history == here.history
    assert steps == [1, 2, 3, 4, 5, 6] and evals == [3, 6]


def test_the_parent_decides_to_stop(tiny_cfg):
    r = run_isolated(tiny_cfg.replace(eval_every=2), on_eval=lambda p: True)
    assert r.steps == 2 and r.stop_reason == "stopped: by callback at step 2"


def test_a_child_whose_code_differs_from_its_parents_refuses_the_trial(tiny_cfg, monkeypatch):
    """A sweep's children import the package afresh: after an upgrade or an edit mid-sweep they
    could hand back a result the parent cannot read. The child says so instead of training."""
    monkeypatch.setattr(trial_process, "CODE", "code before the edit")
    with pytest.raises(TrialFailed, match="changed on disk since this sweep started"):
        run_isolated(tiny_cfg)


@pytest.mark.processes  # waits out the timeout, which has to outlast the child starting torch
def test_timeout_kills_a_hanging_trial(tiny_cfg, faulty):
    with pytest.raises(TrialFailed, match="timed out after 8 s"):
        run_isolated(tiny_cfg.replace(lam=4.0), timeout=8)


# Every trial of the study below runs under this limit, a new process's start included (each fault
# costs its slot's process): it has to hold on a CI machine running several times more work than it
# has cores, where 15 s timed out a trial that completes in 10 s on a quiet one.
HANG_TIMEOUT_S = 60


@pytest.mark.processes
def test_every_fault_ends_its_trial_and_the_study_finishes(tiny_model, toy_csv, tmp_path, faulty):
    grid = tmp_path / "faults.toml"
    grid.write_text("""
[study]
sampler = "grid"
[grid]
eta_a = [1e-3]
lambda = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]
rank = [2]
""")
    spec = load_spec(grid, {
        "model": tiny_model, "task": toy_csv, "epochs": 1.0, "max_length": 32, "batch_size": 64,
        "device": "cpu", "storage": f"sqlite:///{tmp_path}/faults.db", "trial_timeout": HANG_TIMEOUT_S,
        "name": "faults",
    })
    run_study(spec)
    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage)
    by_lam = {t.params["lambda"]: t for t in study.trials}
    assert len(study.trials) == 7
    outcome = {lam: (t.state.name, t.user_attrs.get("stop_reason", "")) for lam, t in by_lam.items()}
    assert outcome[1.0] == ("COMPLETE", "completed") and outcome[8.0] == ("COMPLETE", "completed")
    assert outcome[2.0] == ("FAIL", "ValueError: boom")
    assert "Traceback" in by_lam[2.0].user_attrs["traceback"]
    assert outcome[3.0] == ("FAIL", "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB")
    assert outcome[4.0] == ("FAIL", f"timed out after {HANG_TIMEOUT_S} s")
    assert outcome[5.0] == ("FAIL", "trial process killed by SIGKILL (out of host memory?)")
    assert outcome[6.0][0] == "PRUNED" and outcome[6.0][1].startswith("diverged: ")


# Children that die mid-conversation, as a SIGTERM to the process group kills them: before the parent
# answers their evaluation (its answer meets a closed pipe), or with that answer sent and unread (on
# Linux the parent's next read is then a connection reset, not an end of file).
DYING = """
import os, signal, time
from multiprocessing.connection import Connection

def dies_mid_eval(cfg, on_eval=None, on_step=None):
    # on_eval's send without its wait for the answer
    conn = next(c.cell_contents for c in on_eval.__closure__ if isinstance(c.cell_contents, Connection))
    conn.send(("eval", {"step": 1, "examples": 1, "metric": 0.5, "metrics": {}, "train_loss": 0.7}))
    # lambda 2: the parent answers at once and this process never reads it; lambda 1: it dies while
    # the parent takes a second to answer
    time.sleep(1.0 if cfg.lam == 2.0 else 0.2)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_child_that_dies_mid_conversation_fails_its_trial_with_the_reason(tiny_cfg, tmp_path, monkeypatch):
    (tmp_path / "dying.py").write_text(DYING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(trial_process, "RUNNER", "dying:dies_mid_eval")
    with trial_process.SlotProcess() as slot:
        with pytest.raises(TrialFailed, match="^trial process killed by SIGKILL"):
            slot.run(tiny_cfg.replace(lam=2.0), on_eval=lambda p: False)
    with trial_process.SlotProcess() as slot:
        with pytest.raises(TrialFailed, match="^trial process killed by SIGKILL"):
            slot.run(tiny_cfg.replace(lam=1.0), on_eval=lambda p: time.sleep(1.0) or False)


def test_slots_split_the_cpu_or_take_one_gpu_each(monkeypatch):
    monkeypatch.setattr(trial_process.os, "cpu_count", lambda: 8)
    assert [s.threads for s in make_slots("cpu", 4)] == [2, 2, 2, 2]
    gpus = make_slots("0,3", 1)
    assert [dict(s.env)["CUDA_VISIBLE_DEVICES"] for s in gpus] == ["0", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert make_slots("auto", 2)[0].label == "cpu#0"  # no GPU: the CPU
