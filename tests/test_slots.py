"""A slot's process serves one trial after another: a trial's result is the same bit for bit whether it
ran first or fifth in its slot, and a trial that fails leaves the next one a fresh process."""

import subprocess
import sys
import time

import pytest

from sweep.engine import trial_process
from sweep.engine.train import run_trial
from sweep.engine.trial_process import SlotProcess, TrialFailed

FAILING = '''
from sweep.engine.train import run_trial

def fail_at_lambda_two(cfg, on_eval=None, on_step=None):
    if cfg.lam == 2.0:
        raise ValueError("boom")
    return run_trial(cfg, on_eval, on_step)
'''


def _same(a, b) -> None:
    """Everything a trial measured, but its timings and the process's memory."""
    for f in ("metric", "metrics", "history", "steps", "examples", "tokens", "update_norms", "stop_reason"):
        assert getattr(a, f) == getattr(b, f), f


@pytest.fixture(scope="module")
def lm_rows(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    path.write_text("".join(f'{{"prompt": "w{i % 5}:", "completion": "{"abcde"[i % 5] * 3}"}}\n'
                            for i in range(40)))
    return str(path)


def test_a_trial_is_the_same_first_or_fifth_in_its_slot(tiny_cfg, llama, lm_rows):
    target = tiny_cfg.replace(max_steps=8, eval_every=4, seed=5, dropout=0.1)
    lm = target.replace(model=llama, task=lm_rows, max_steps=4, eval_every=2)
    others = [target.replace(seed=1, rank=8), target.replace(lam=1.0, eta_a=3e-3), lm,
              target.replace(seed=2, init="reversed")]
    with SlotProcess() as fresh:
        first = fresh.run(target)
        first_lm = fresh.run(lm)  # a causal LM after a classifier: another base model
    with SlotProcess() as slot:
        later = [slot.run(cfg) for cfg in others]
        fifth = slot.run(target)
        assert slot.started == 1  # one process served all five
    _same(first, fifth)
    _same(first_lm, later[2])
    _same(first, run_trial(target))  # and the same as in this process
    assert later[0].metric != first.metric or later[0].update_norms != first.update_norms


def test_a_failed_trial_leaves_the_next_one_a_fresh_process(tiny_cfg, tmp_path, monkeypatch):
    (tmp_path / "failing.py").write_text(FAILING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(trial_process, "RUNNER", "failing:fail_at_lambda_two")
    cfg = tiny_cfg.replace(max_steps=4, eval_every=4)
    with SlotProcess() as slot:
        ok = slot.run(cfg)
        with pytest.raises(TrialFailed, match="ValueError: boom"):
            slot.run(cfg.replace(lam=2.0))
        again = slot.run(cfg)
        assert slot.started == 2
    assert ok.history == again.history


def test_a_sweep_starts_its_slot_processes_before_its_checks_and_its_trials_run_in_them(
        tiny_model, toy_csv, tmp_path, monkeypatch):
    from sweep.data.spec import load_spec
    from sweep.engine import checks
    from sweep.study import workers

    spawned, alive_at_checks = [], []
    spawn = SlotProcess.spawn
    monkeypatch.setattr(SlotProcess, "spawn", lambda self: spawned.append(self) or spawn(self))
    preflight = checks.preflight
    monkeypatch.setattr(checks, "preflight", lambda spec, *a: alive_at_checks.append(
        [p._proc.is_alive() for p in trial_process._early.values()]) or preflight(spec, *a))
    spec = load_spec(None, {
        "model": tiny_model, "task": toy_csv, "n_trials": 2, "sampler": "random", "pruner": "none",
        "eta_a": (1e-3, 1e-2), "lambda": (1.0, 64.0), "rank": (2, 4), "max_steps": 2, "batch_size": 16,
        "max_length": 32, "eval_every": 2, "device": "cpu", "storage": f"sqlite:///{tmp_path}/s.db",
    })
    checked, store = workers.prepare(spec)
    study = workers.run_study(checked, store=store)
    assert alive_at_checks == [[True]]  # started before the checks, and running during them
    assert len(spawned) == 1 and not trial_process._early  # both trials ran in that one process
    assert sorted(t.state.name for t in study.trials()) == ["COMPLETE"] * 2


def test_a_sweeps_slot_process_starts_before_the_parent_imports_torch(tiny_model, toy_csv, tmp_path):
    # In a fresh interpreter: this one imported torch long ago. Both processes import torch and
    # transformers (seconds each); the child's start must not wait for the parent's.
    code = f"""
import sys
from sweep.engine import trial_process
from sweep.study import workers
from sweep.data.spec import load_spec
trial_process.SlotProcess.spawn = lambda self: print("torch loaded at spawn:", "torch" in sys.modules)
spec = load_spec(None, {{"model": {tiny_model!r}, "task": {toy_csv!r}, "n_trials": 1, "device": "cpu",
                        "storage": "sqlite:///{tmp_path}/s.db"}})
workers.prepare(spec)
print("torch loaded after the checks:", "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["torch loaded at spawn: False", "torch loaded after the checks: True"]


def test_processes_no_worker_takes_are_ended_at_once_even_while_they_start():
    trial_process.prestart([trial_process.Slot((), 1, "cpu#9")])
    (process,) = trial_process._early.values()
    start = time.monotonic()
    trial_process.close_early()  # still importing: it would read an "exit" only once ready
    assert time.monotonic() - start < 5 and process._proc is None and not trial_process._early


def test_no_process_starts_for_slots_the_checks_refuse(tiny_model, toy_csv, tmp_path, monkeypatch):
    from sweep.core.errors import SweepError
    from sweep.data.spec import load_spec
    from sweep.study import workers

    spawned = []
    monkeypatch.setattr(SlotProcess, "spawn", lambda self: spawned.append(self))
    base = {"model": tiny_model, "task": toy_csv, "n_trials": 1, "storage": f"sqlite:///{tmp_path}/s.db"}
    with pytest.raises(SweepError, match="more than the"):
        workers.prepare(load_spec(None, {**base, "jobs": 100_000}))
    with pytest.raises(SweepError, match="no GPU 7"):
        workers.prepare(load_spec(None, {**base, "devices": "7"}))
    assert spawned == [] and not trial_process._early
