"""confirm on a tiny model: the two arms over seeds, paired, stored as their own study, resumable,
and shown by report apart from the search trials."""

import shutil
import socket
import subprocess

import pytest
from typer.testing import CliRunner

from cli import app
from sweep import confirm
from sweep.spec import load_spec
from sweep.workers import open_study, run_study


@pytest.fixture(scope="module")
def searched_once(tiny_model, toy_csv, tmp_path_factory):
    """A search study of four trials, trained once for the module: its spec and database file."""
    db = tmp_path_factory.mktemp("searched") / "sweep.db"
    spec = load_spec(None, {
        "model": tiny_model, "task": toy_csv, "n_trials": 4, "sampler": "random", "pruner": "none",
        "eta_a": (1e-3, 1e-2), "lambda": (1.0, 64.0), "rank": (2, 4), "epochs": 1.0, "batch_size": 32,
        "max_length": 32, "eval_every": 3, "device": "cpu", "storage": f"sqlite:///{db}",
        "in_process": True, "name": "toy",
    })
    run_study(spec)
    return spec, db


@pytest.fixture
def searched(searched_once, tmp_path):
    """A copy of that study of its own for each test, which may add to it."""
    spec, db = searched_once
    shutil.copy(db, tmp_path / "sweep.db")
    spec = spec.replace(storage=f"sqlite:///{tmp_path}/sweep.db")
    study = run_study(spec)  # all four trials stored: opens the study and trains nothing
    assert len(study.trials(("COMPLETE",))) == 4
    return spec, study


def test_the_arms_are_the_best_lora_plus_and_the_best_plain_trial(searched):
    spec, study = searched
    plus, plain = confirm.choose_arms(study.frame(), spec)
    done = study.trials(("COMPLETE",))
    best_plus = max((t for t in done if t.params["lambda"] > 1), key=lambda t: t.value)
    assert (plus.eta_a, plus.lam, plus.rank) == (best_plus.params["eta_a"], best_plus.params["lambda"],
                                                 best_plus.params["rank"])
    assert plus.source == f"trial {best_plus.number}"
    base = study.trials()[0]  # the baseline, the only lambda = 1 trial
    assert (plain.eta_a, plain.lam, plain.rank) == (base.params["eta_a"], 1.0, base.params["rank"])


def test_confirm_pairs_seeds_resumes_and_report_shows_it_apart(searched, tmp_path):
    spec, study = searched
    assert confirm.runs_stored(study, spec, seeds=2) == 0  # no confirm study yet
    result = confirm.run_confirm(study, spec, seeds=2)
    trials = result.trials()
    assert result.name == "toy.confirm" and len(trials) == 4
    assert sorted((t.user_attrs["arm"], t.user_attrs["seed"]) for t in trials) == [
        ("lora", 0), ("lora", 1), ("lora+", 0), ("lora+", 1)]
    assert all(t.state.name == "COMPLETE" and t.params["lambda"] == (1.0 if t.user_attrs["arm"] == "lora"
               else confirm.choose_arms(study.frame(), spec)[0].lam) for t in trials)
    assert all(t.user_attrs["config"]["seed"] == t.user_attrs["seed"] for t in trials)  # trained with it
    by = {(t.user_attrs["arm"], t.user_attrs["seed"]): t.value for t in trials}

    again = confirm.run_confirm(study, spec, seeds=2)  # everything stored: nothing runs
    assert len(again.trials()) == 4
    # the progress of a continued confirm starts at what is stored, of the seeds asked for
    assert [confirm.runs_stored(study, spec, seeds=n) for n in (1, 2, 3)] == [2, 4, 4]

    s = confirm.summarise(result)
    assert s.seeds == 2 and s.comparison is not None
    assert s.trials == 4 and s.tokens == sum(t.user_attrs["tokens"] for t in trials) > 0  # its cost
    assert s.wall_time_s == pytest.approx(sum(t.user_attrs["wall_time_s"] for t in trials))
    assert s.comparison.diff_mean == pytest.approx(
        (by[("lora+", 0)] - by[("lora", 0)] + by[("lora+", 1)] - by[("lora", 1)]) / 2)
    assert [step for step, _ in s.curves["lora"]] == [p[0] for p in trials[0].user_attrs["history"]]
    final = s.curves["lora"][-1][1]
    assert s.steps_plain == next(step for step, m in s.curves["lora"] if m >= final)

    out = tmp_path / "rep"
    rep = CliRunner().invoke(app, ["report", "--storage", spec.storage, "--out", str(out)])
    assert rep.exit_code == 0, rep.output
    assert "confirm: LoRA+ vs plain LoRA" in rep.stdout
    assert ("excludes 0" if s.comparison.significant else "every 95% interval contains 0") in rep.stdout
    assert (out / "confirm.csv").exists() and (out / "convergence-toy.png").stat().st_size > 0
    summary = (out / "summary.csv").read_text()
    assert "toy.confirm" not in summary and summary.count("\n") == 2  # header + the one search study


def test_a_study_without_lora_plus_trials_cannot_be_confirmed(tiny_model, toy_csv, tmp_path):
    spec = load_spec(None, {"model": tiny_model, "task": toy_csv, "storage": f"sqlite:///{tmp_path}/s.db"})
    with pytest.raises(confirm.SweepError, match="no completed trial with lambda > 1"):
        confirm.choose_arms(open_study(spec).frame(), spec)


def test_confirm_command_refuses_a_confirm_study(searched):
    spec, study = searched
    confirmed = confirm.run_confirm(study, spec, seeds=2)
    res = CliRunner().invoke(app, ["confirm", "toy.confirm", "--storage", spec.storage])
    assert res.exit_code == 2 and "is itself a confirm study" in res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert len(confirmed.trials()) == 4 and len(study.trials()) == 4  # nothing trained, nothing lost


def test_arms_with_different_ranks_share_one_confirm_study(searched, monkeypatch):
    spec, study = searched
    arms = (confirm.Arm("lora+", 2e-3, 8.0, 2, "trial 1"), confirm.Arm("lora", 5e-3, 1.0, 4, "trial 0"))
    monkeypatch.setattr(confirm, "choose_arms", lambda trials, spec: arms)
    result = confirm.run_confirm(study, spec, seeds=2)
    trials = result.trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert {(t.user_attrs["arm"], t.params["rank"], t.params["eta_a"]) for t in trials} == {
        ("lora+", 2, 2e-3), ("lora", 4, 5e-3)}


def test_a_confirm_run_killed_mid_trial_leaves_no_running_trial(searched):
    """The trial a killed `confirm` left RUNNING is failed with its reason on the next run, which
    trains every (arm, seed) still missing and nothing else."""
    spec, study = searched
    arms = confirm.choose_arms(study.frame(), spec)
    runs = confirm.runs_spec(spec, arms, seeds=2)
    store = confirm.open_confirm_study(study, spec, arms, seeds=2)
    store.enqueue(arms[0].params, {"arm": "lora+", "seed": 0})
    stale = store.ask(runs, draw=0)
    stale.config(runs)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale.note("worker", {"host": socket.gethostname(), "pid": dead.pid, "started": None})

    result = confirm.run_confirm(study, spec, seeds=2)
    trials = result.trials()
    assert [t.state.name for t in trials] == ["FAIL"] + ["COMPLETE"] * 4
    assert result.stop_reason(trials[0]).startswith("orphaned")
    assert sorted((t.user_attrs["arm"], t.user_attrs["seed"]) for t in trials[1:]) == [
        ("lora", 0), ("lora", 1), ("lora+", 0), ("lora+", 1)]
