"""A study's fixed head learning rate and its eta_B search space, on a tiny model: trials differ only in
(eta_A, lambda, rank), and a study that draws eta_B stores, reports and exports the eta_A it trained at."""

import pytest

from sweep.analysis import report
from sweep.analysis.export import best_trial
from sweep.data.config import TrialConfig
from sweep.data.spec import load_spec
from sweep.engine.models import load_model
from sweep.engine.optim import loraplus_param_groups
from sweep.study.workers import run_study

LABELS = ("neg", "pos")


def study(tiny_model, toy_csv, tmp_path, **more):
    """A random search of 3 two-step trials, run in this process."""
    return load_spec(None, {
        "model": tiny_model, "task": toy_csv, "sampler": "random", "pruner": "none", "n_trials": 3,
        "max_steps": 2, "batch_size": 16, "max_length": 32, "device": "cpu", "in_process": True,
        "storage": f"sqlite:///{tmp_path}/s.db", **more,
    })


def lrs(cfg: TrialConfig) -> dict[str, float]:
    """The learning rate of each LoRA+ group of the model `cfg` trains."""
    return {g["name"]: g["lr"] for g in loraplus_param_groups(load_model(cfg, 2, LABELS), cfg)}


def test_every_trial_of_a_study_trains_its_head_at_the_one_head_lr(tiny_model, toy_csv, tmp_path):
    spec = study(tiny_model, toy_csv, tmp_path, eta_a=(1e-4, 1e-2))
    assert spec.base.head_lr == spec.head_lr == 1e-3  # the geometric middle of the eta_A range
    configs = [TrialConfig.from_dict(t.user_attrs["config"]) for t in run_study(spec).trials(("COMPLETE",))]
    assert len({c.eta_a for c in configs}) == 3
    groups = [lrs(c) for c in configs]
    assert [g["lora_A"] for g in groups] == [c.eta_a for c in configs]  # the arms of a comparison differ...
    assert {g["head"] for g in groups} == {g["head_no_decay"] for g in groups} == {1e-3}  # ...their head not
    # An explicit head_lr wins; a single trial (no study) keeps the head at its eta_A.
    assert study(tiny_model, toy_csv, tmp_path, head_lr=3e-4).base.head_lr == 3e-4
    assert lrs(configs[0].replace(head_lr=None))["head"] == configs[0].eta_a


def test_a_study_in_eta_b_draws_eta_b_and_lambda_and_trains_at_their_ratio(tiny_model, toy_csv, tmp_path):
    spec = study(tiny_model, toy_csv, tmp_path, space="eta_b", eta_b=(1e-4, 1e-1), eta_a=(1e-4, 1e-2),
                 n_trials=4, **{"lambda": (1.0, 16.0)})
    store = run_study(spec)
    trials = store.trials(("COMPLETE",))
    assert len(trials) == 4
    for t in trials:
        cfg = TrialConfig.from_dict(t.user_attrs["config"])
        assert set(t.params) == {"eta_b", "lambda", "rank"} and 1e-4 <= t.params["eta_b"] <= 1e-1
        assert cfg.eta_a * cfg.lam == pytest.approx(t.params["eta_b"]) and cfg.lam == t.params["lambda"]
        assert lrs(cfg)["lora_B"] == pytest.approx(t.params["eta_b"]) and lrs(cfg)["head"] == 1e-3
    # The plain-LoRA baseline, queued first: lambda 1 at the middle of the eta_A range, so eta_B = eta_A.
    assert trials[0].params["lambda"] == 1.0 and trials[0].params["eta_b"] == pytest.approx(1e-3)
    # The frame, the report and the export read the eta_A each trial trained at.
    frame = store.frame()
    stored = {t.number: t.user_attrs["config"]["eta_a"] for t in trials}
    assert frame.set_index("number")["eta_a"].to_dict() == pytest.approx(stored)
    best = report.best_configs(frame).iloc[0]
    assert best["eta_a"] == pytest.approx(stored[int(best["number"])])
    assert best_trial(frame, store.name, pick="best").config.eta_a == pytest.approx(best["eta_a"])
    plain = max((t for t in trials if t.params["lambda"] == 1.0), key=lambda t: (t.value, -t.number))
    assert report.plain_lora_gain(frame).iloc[0]["plain_eta_a"] == pytest.approx(stored[plain.number])
