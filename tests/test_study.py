"""Studies on a tiny model: stored trials, baseline first, resume, interruption, grid, pruning."""

import optuna
import pytest

from sweep.data.hooks import Hooks
from sweep.data.spec import load_spec
from sweep.engine.checks import preflight
from sweep.study import search, workers
from sweep.study.stored import trials_frame
from sweep.study.workers import run_study


@pytest.fixture
def spec(tiny_model, toy_csv, tmp_path):
    # Checked as `run` checks it: the data's fingerprint is part of the study's name.
    return preflight(load_spec(None, {
        "model": tiny_model, "task": toy_csv, "n_trials": 4, "sampler": "random",
        "eta_a": (1e-4, 1e-2), "lambda": (1.0, 64.0), "rank": (2, 4),
        "epochs": 1.0, "batch_size": 32, "max_length": 32, "eval_every": 4, "device": "cpu",
        "storage": f"sqlite:///{tmp_path}/sweep.db", "in_process": True,
    }))


def test_a_study_opens_with_optuna_and_holds_every_trial(spec):
    run_study(spec)
    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert all(set(t.params) == {"eta_a", "lambda", "rank"} for t in trials)
    assert trials[0].params["lambda"] == 1.0  # the plain-LoRA baseline runs first
    attrs = trials[1].user_attrs
    for key in ("config", "metric_name", "metric", "best_metric", "history_len", "tokens_per_s",
                "wall_time_s", "device", "peak_memory_mb", "stop_reason", "seed", "init", "versions"):
        assert key in attrs, key
    assert attrs["config"]["lambda"] == trials[1].params["lambda"] and attrs["metric"] == trials[1].value
    assert study.user_attrs["model"] == spec.base.model and "spec" in study.user_attrs


def test_rerunning_continues_to_the_target_count(spec):
    run_study(spec.replace(n_trials=2))
    run_study(spec.replace(n_trials=2))  # nothing to do
    assert len(optuna.load_study(study_name=spec.study_name, storage=spec.storage).trials) == 2
    run_study(spec.replace(n_trials=5))
    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    assert sum(t.params["lambda"] == 1.0 for t in study.trials) == 1  # the baseline only once


def test_interrupted_trial_is_failed_with_a_reason_and_nothing_else_is_lost(spec):
    run_study(spec.replace(n_trials=2))
    calls = []

    def interrupt(n, point):
        calls.append(point)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(spec.replace(n_trials=4), Hooks(eval=interrupt))
    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]
    assert study.trials[2].user_attrs["stop_reason"] == "interrupted by the user"
    run_study(spec.replace(n_trials=4))
    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage)
    assert [t.state.name for t in study.trials].count("COMPLETE") == 4


def test_grid_runs_every_point_exactly_once_even_when_resumed(spec, tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("""
[study]
sampler = "grid"
[grid]
eta_a = [1e-3, 3e-3]
eta_b = [3e-3, 1e-2, 3e-2]
rank = [2]
""")
    overrides = {"model": spec.base.model, "task": spec.base.task, "epochs": 1.0, "max_length": 32,
                 "batch_size": 64, "device": "cpu", "storage": spec.storage, "in_process": True}
    grid = preflight(load_spec(path, overrides))
    assert grid.n_trials == 6
    run_study(grid.replace(n_trials=4))
    run_study(grid)
    run_study(grid)
    study = optuna.load_study(study_name=grid.study_name, storage=grid.storage)
    got = sorted((t.params["eta_a"], round(t.params["eta_a"] * t.params["lambda"], 12)) for t in study.trials)
    want = sorted((e, b) for e in (1e-3, 3e-3) for b in (3e-3, 1e-2, 3e-2))
    assert got == want


def test_pruned_trials_keep_their_last_value_and_reason(spec, monkeypatch):
    class PruneAfterFirstReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number > 0 and len(trial.intermediate_values) >= 1

    monkeypatch.setattr(search, "pruner", lambda spec: PruneAfterFirstReport())
    run_study(spec.replace(n_trials=3))
    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert len(pruned) == 2
    for t in pruned:
        assert t.value == t.intermediate_values[4] == t.user_attrs["metric"]
        assert t.user_attrs["stop_reason"] == "pruned at step 4"
    df = trials_frame(spec.storage)
    assert df[df.state == "PRUNED"]["value"].notna().all()  # the report keeps their last value


def test_plain_lora_trials_run_to_the_end_whatever_the_pruner_says(spec, monkeypatch):
    class PruneAtOnce(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    monkeypatch.setattr(search, "pruner", lambda spec: PruneAtOnce())
    run_study(spec.replace(n_trials=4, baselines=3))
    trials = optuna.load_study(study_name=spec.study_name, storage=spec.storage).trials
    plain = [t for t in trials if t.params["lambda"] == 1.0]
    assert len(plain) == 3 and all(t.state.name == "COMPLETE" for t in plain)
    assert all(len(t.intermediate_values) > 1 for t in plain)  # the pruner heard every evaluation
    (other,) = [t for t in trials if t.params["lambda"] != 1.0]
    assert other.state.name == "PRUNED" and other.user_attrs["stop_reason"] == "pruned at step 4"


def test_a_diverged_trial_is_pruned_with_its_reason(spec):
    # (the head learns at the study's fixed head_lr, not at eta_A: it blows up too)
    blowup = spec.replace(eta_a=(50.0, 50.0), lam=(1.0, 1.0), n_trials=1,
                          base=spec.base.replace(max_grad_norm=None, warmup_ratio=0.0, head_lr=50.0))
    run_study(blowup)
    t = optuna.load_study(study_name=blowup.study_name, storage=blowup.storage).trials[0]
    assert t.state.name == "PRUNED" and t.user_attrs["stop_reason"].startswith("diverged")


def test_a_failed_grid_point_is_reported_missing_and_a_rerun_fills_it(spec, tmp_path, monkeypatch):
    path = tmp_path / "grid.toml"
    path.write_text('[study]\nsampler = "grid"\n[grid]\neta_a = [1e-3]\nlambda = [1, 4, 16]\nrank = [2]\n')
    grid = load_spec(path, {"model": spec.base.model, "task": spec.base.task, "epochs": 1.0, "max_length": 32,
                            "batch_size": 64, "device": "cpu", "storage": spec.storage, "in_process": True})
    real = workers.run_trial

    def lambda_4_fails(cfg, **kw):
        if cfg.lam == 4.0:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(cfg, **kw)

    monkeypatch.setattr(workers, "run_trial", lambda_4_fails)
    study = run_study(grid)
    assert sorted(t.state.name for t in study.trials()) == ["COMPLETE", "COMPLETE", "FAIL"]
    (failed,) = study.trials(("FAIL",))
    (reason,) = study.missing_grid_points(grid)  # no other point drawn in its place
    assert failed.params["lambda"] == 4.0 and "illegal memory access" in reason

    monkeypatch.setattr(workers, "run_trial", real)
    study = run_study(grid)
    assert study.missing_grid_points(grid) == []
    assert sorted(t.params["lambda"] for t in study.trials(("COMPLETE",))) == [1.0, 4.0, 16.0]
