"""confirm on a tiny model: plain LoRA and LoRA+ at one rank over seeds no search trial used, paired,
diverged runs kept in their arm's result and failed ones counted, stored as their own study,
resumable, and shown by report apart from the search trials."""

import csv
import shutil
import socket
import statistics
import subprocess

import pandas as pd
import pytest
from conftest import toy_rows
from typer.testing import CliRunner

from cli import app
from sweep.data.config import TrialConfig
from sweep.data.spec import load_spec
from sweep.study import confirm, workers
from sweep.study.confirm import Arm
from sweep.study.stored import StoredStudy
from sweep.study.workers import open_study, run_study

# Every point at eta_A 2e-3: plain LoRA, lambda 2 (bin 1) and lambda 8 (bin 3), at ranks 2 and 4.
GRID = '[study]\nsampler = "grid"\n[grid]\neta_a = [2e-3]\nlambda = [1, 2, 8]\nrank = [2, 4]\n'


@pytest.fixture(scope="module")
def held_out_csv(tmp_path_factory) -> str:
    """The toy task with a `split` column: 240 train rows, 48 validation rows (40 pos, 8 neg: a model
    that has not learned yet scores 5/6 or 1/6, not 1/2), and a test split of the validation texts with
    every label flipped, so that a model's test accuracy is 1 - its validation accuracy: a number from
    the test split cannot pass for a validation one."""
    rows = toy_rows(320)
    held = [r for r in rows[240:] if r[1] == "pos"] + [r for r in rows[240:] if r[1] == "neg"][:8]
    flip = {"pos": "neg", "neg": "pos"}
    path = tmp_path_factory.mktemp("held_out") / "held_out.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "split"])
        writer.writerows((t, label, "train") for t, label in rows[:240])
        writer.writerows((t, label, "validation") for t, label in held)
        writer.writerows((t, flip[label], "test") for t, label in held)
    return str(path)


@pytest.fixture(scope="module")
def searched_once(tiny_model, held_out_csv, tmp_path_factory):
    """A search study of six grid trials, trained once for the module: its spec and database file."""
    tmp = tmp_path_factory.mktemp("searched")
    (tmp / "grid.toml").write_text(GRID)
    spec = load_spec(tmp / "grid.toml", {
        "model": tiny_model, "task": held_out_csv, "pruner": "none", "epochs": 1.0, "batch_size": 32,
        "max_length": 32, "eval_every": 3, "device": "cpu", "storage": f"sqlite:///{tmp}/sweep.db",
        "in_process": True, "name": "toy",
    })
    run_study(spec)
    return spec, tmp / "sweep.db"


@pytest.fixture
def searched(searched_once, tmp_path):
    """A copy of that study of its own for each test, which may add to it."""
    spec, db = searched_once
    shutil.copy(db, tmp_path / "sweep.db")
    spec = spec.replace(storage=f"sqlite:///{tmp_path}/sweep.db")
    study = run_study(spec)  # all six trials stored: opens the study and trains nothing
    assert len(study.trials(("COMPLETE",))) == 6
    return spec, study


def trials_frame(rows):
    """A hand-built trials frame of one study: (number, eta_a, lambda, rank, value) per completed trial."""
    return pd.DataFrame([{"study": "toy", "model": "m", "task": "t", "metric_name": "accuracy",
                          "state": "COMPLETE", "number": n, "eta_a": e, "lambda": lam, "rank": r, "value": v,
                          "init": "standard"}
                         for n, e, lam, r, v in rows])


def test_lora_plus_is_lambda_from_sqrt_2_at_the_plain_arms_rank(tiny_model, toy_csv):
    spec = load_spec(None, {"model": tiny_model, "task": toy_csv})
    frame = trials_frame([
        (0, 1e-3, 1.0, 8, 0.70),   # the best plain LoRA: its rank, 8, is the comparison's
        (1, 1e-3, 1.0, 4, 0.60),
        (2, 1e-3, 1.3, 8, 0.95),   # best overall, but lambda 1.3 is plain LoRA's bin
        (3, 1e-3, 16.0, 4, 0.90),  # the best LoRA+ trial, at another rank
        (4, 2e-3, 4.0, 8, 0.80),
        (5, 3e-3, 1.5, 8, 0.75),   # lambda 1.5 >= sqrt(2): bin 1
    ])
    plus, plain = default = confirm.choose_arms(frame, spec)
    assert (plain.eta_a, plain.lam, plain.rank, plain.source) == (1e-3, 1.0, 8, "trial 0")
    assert (plus.name, plus.eta_a, plus.lam, plus.rank, plus.source) == (
        "lora+ bin 2", 2e-3, 4.0, 8, "trial 4")

    plus, plain = confirm.choose_arms(frame, spec, rank=4)  # both arms at the rank asked for
    assert (plus.lam, plus.rank, plus.source, plain.rank, plain.source) == (16.0, 4, "trial 3", 4, "trial 1")

    per_bin = confirm.plan(frame, spec, seeds=3, per_bin=True)
    assert [(a.name, a.source) for a in per_bin.challengers] == [("lora+ bin 1", "trial 5"),
                                                                  ("lora+ bin 2", "trial 4")]
    assert per_bin.best == "lora+ bin 2" and per_bin.name == "toy.confirm" and per_bin.plain == default[1]
    assert confirm.plan(frame, spec, seeds=2, rank=4).name == "toy.confirm-r4"
    assert confirm.plan(frame, spec, seeds=2, rank=4, split="validation").name == "toy.confirm-validation-r4"
    assert per_bin.split == "test"  # confirm's numbers come from the held-out split unless asked

    with pytest.raises(confirm.SweepError, match="no completed LoRA[+] trial .* at rank 2 to confirm"):
        confirm.choose_arms(frame, spec, rank=2)
    with pytest.raises(confirm.SweepError, match="at rank 8, the rank of its best plain-LoRA trial"):
        confirm.choose_arms(frame[frame["number"].isin([0, 2, 3])], spec)


def test_confirm_uses_fresh_seeds_pairs_them_resumes_and_report_shows_it_apart(searched, tmp_path):
    spec, study = searched
    plan = confirm.plan(study.frame(), spec, seeds=3)
    plus, plain = plan.challengers[0], plan.plain
    assert plus.rank == plain.rank and plus.lam >= 2**0.5  # the arms differ only in eta_A and lambda
    assert confirm.runs_stored(spec.storage, plan) == 0  # no confirm study yet
    result = confirm.run_confirm(study, spec, plan)
    trials = result.trials()
    assert result.name == "toy.confirm" and len(trials) == 6
    assert sorted((t.user_attrs["arm"], t.user_attrs["seed"]) for t in trials) == [
        ("lora", 1), ("lora", 2), ("lora", 3), (plus.name, 1), (plus.name, 2), (plus.name, 3)]
    search_seeds = {t.user_attrs["config"]["seed"] for t in study.trials()}
    assert search_seeds == {spec.base.seed}
    # trained with their own seed, none the search's
    assert all(t.user_attrs["config"]["seed"] == t.user_attrs["seed"] not in search_seeds for t in trials)
    assert all(t.state.name == "COMPLETE" and t.params["lambda"] == (1.0 if t.user_attrs["arm"] == "lora"
               else plus.lam) and t.params["rank"] == plain.rank for t in trials)
    by = {(t.user_attrs["arm"], t.user_attrs["seed"]): t.value for t in trials}

    again = confirm.run_confirm(study, spec, confirm.plan(study.frame(), spec, seeds=3))  # all stored
    assert len(again.trials()) == 6
    # the progress of a continued confirm starts at what is stored, of the seeds asked for
    assert [confirm.runs_stored(spec.storage, confirm.plan(study.frame(), spec, seeds=n))
            for n in (1, 3, 4)] == [2, 6, 6]

    s = confirm.summarise(result)
    assert s.seeds == 3 and s.comparison is not None and s.best and s.arm == plus.name
    assert s.diverged == {"lora+": 0, "lora": 0} and s.failed == {"lora+": 0, "lora": 0}
    assert s.trials == 6 and s.tokens == sum(t.user_attrs["tokens"] for t in trials) > 0  # its cost
    assert s.wall_time_s == pytest.approx(sum(t.user_attrs["wall_time_s"] for t in trials))
    assert s.comparison.diff_mean == pytest.approx(
        statistics.mean(by[(plus.name, k)] - by[("lora", k)] for k in (1, 2, 3)))
    assert [step for step, _ in s.curves["lora"]] == [p[0] for p in trials[0].user_attrs["history"]]
    final = s.curves["lora"][-1][1]
    assert s.steps_plain == next(step for step, m in s.curves["lora"] if m >= final)
    row = confirm.table([s]).iloc[0]
    assert row["mde80"] == pytest.approx(confirm.stats.min_detectable_effect(s.comparison.diff_std, 3))
    assert row["verdict"] != "too few pairs (< 3)" and row["lora+ rank"] == row["lora rank"]

    out = tmp_path / "rep"
    rep = CliRunner().invoke(app, ["report", "--storage", spec.storage, "--out", str(out)])
    assert rep.exit_code == 0, rep.output
    assert "confirm: LoRA+ vs plain LoRA" in rep.stdout and "MDE (80%)" in rep.stdout
    assert ("excludes 0" if s.comparison.significant else "every 95% interval contains 0") in rep.stdout
    assert (out / "confirm.csv").exists() and (out / "convergence-toy.png").stat().st_size > 0
    summary = (out / "summary.csv").read_text()
    assert "toy.confirm" not in summary and summary.count("\n") == 2  # header + the one search study


def test_a_diverged_run_stays_in_its_pair_and_a_failed_one_is_missing_until_rerun(searched, monkeypatch):
    spec, study = searched
    # No clipping, no warmup: an eta_A whose second step overflows float32 makes the LoRA+ arm diverge
    # at every seed (its head learns at the study's head_lr, as the plain arm's does).
    spec = spec.replace(base=spec.base.replace(max_grad_norm=None, warmup_ratio=0.0))
    plain, wild = Arm("lora", 2e-3, 1.0, 2, "trial 0"), Arm("lora+ bin 6", 1e30, 64.0, 2, "by hand")
    plan = confirm.Plan("toy.confirm", plain, (wild,), wild.name, (1, 2, 3), None,
                        {a.name: a for a in (plain, wild)})
    real = workers.run_trial

    def plain_seed_2_crashes(cfg, **kw):
        if cfg.lam == 1.0 and cfg.seed == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(cfg, **kw)

    monkeypatch.setattr(workers, "run_trial", plain_seed_2_crashes)
    result = confirm.run_confirm(study, spec, plan)
    states = {(t.user_attrs["arm"], t.user_attrs["seed"]): t.state.name for t in result.trials()}
    assert states == {("lora", 1): "COMPLETE", ("lora", 2): "FAIL", ("lora", 3): "COMPLETE",
                      (wild.name, 1): "PRUNED", (wild.name, 2): "PRUNED", (wild.name, 3): "PRUNED"}
    s = confirm.summarise(result)
    assert s.seeds == 2 and s.diverged == {"lora+": 3, "lora": 0} and s.failed == {"lora+": 0, "lora": 1}
    row = confirm.table([s]).iloc[0]
    assert row["verdict"] == "too few pairs (< 3)" and not row["significant"]
    counts = ("lora+ diverged", "lora diverged", "lora+ failed", "lora failed")
    assert [row[c] for c in counts] == [3, 0, 0, 1]

    monkeypatch.setattr(workers, "run_trial", real)
    result = confirm.run_confirm(study, spec, plan)  # retries the failed seed only
    assert len(result.trials()) == 7
    s = confirm.summarise(result)
    plain_values = [t.value for t in result.trials(("COMPLETE",))]
    assert s.seeds == 3 and s.failed == {"lora+": 0, "lora": 0} and s.diverged["lora+"] == 3
    # each diverged run counts at its recorded worst accuracy, 0: the gain is minus plain LoRA's mean
    assert s.comparison.mean_plus == 0.0
    assert s.comparison.diff_mean == pytest.approx(-statistics.mean(plain_values))
    # its curve goes on at that value to the end, rather than cutting the mean curves short
    assert [step for step, _ in s.curves["lora+"]] == [step for step, _ in s.curves["lora"]]
    assert s.curves["lora+"][-1][1] == 0.0


def test_per_bin_confirms_each_bins_best_in_one_table_and_shares_stored_runs(searched):
    spec, study = searched
    other = 4 if confirm.choose_arms(study.frame(), spec)[1].rank == 2 else 2
    plan = confirm.plan(study.frame(), spec, seeds=2, rank=other, per_bin=True)
    assert plan.name == f"toy.confirm-r{other}"
    assert [(a.name, a.lam, a.rank) for a in plan.arms] == [
        ("lora", 1.0, other), ("lora+ bin 1", 2.0, other), ("lora+ bin 3", 8.0, other)]
    result = confirm.run_confirm(study, spec, plan)
    assert len(result.trials()) == 6 and {t.params["rank"] for t in result.trials()} == {other}
    rows = confirm.table(confirm.summaries(result))
    assert rows["lambda bin"].tolist() == [1, 3] and rows["seeds"].tolist() == [2, 2]
    assert rows["best"].sum() == 1 and (rows["verdict"] == "too few pairs (< 3)").all()
    assert rows.loc[rows["best"], "arm"].item() == plan.best
    # the plain arm's runs are shared by both rows; the default comparison at this rank is stored already
    assert rows["lora mean"].nunique() == 1
    again = confirm.run_confirm(study, spec, confirm.plan(study.frame(), spec, seeds=2, rank=other))
    assert len(again.trials()) == 6


def test_a_confirm_study_of_other_arms_or_of_the_search_seed_is_refused(searched):
    spec, study = searched
    plan = confirm.plan(study.frame(), spec, seeds=2)
    confirm.open_confirm_study(study, spec, plan)
    moved = Arm("lora", plan.plain.eta_a * 2, 1.0, plan.plain.rank, "trial 9")
    improved = confirm.Plan(plan.name, moved, plan.challengers, plan.best, plan.seeds, None,
                            {**plan.candidates, "lora": moved})
    with pytest.raises(confirm.SweepError, match="other configurations .* studies delete toy.confirm"):
        confirm.open_confirm_study(study, spec, improved)

    old = StoredStudy.find(spec.storage, "toy.confirm")
    old.delete()
    old = StoredStudy.create_or_load_named(spec.storage, "toy.confirm", confirm.runs_spec(spec, plan.arms, 1))
    old.set_attrs(kind="confirm", arms={a.name: a.described() for a in plan.arms})  # no search_seed
    with pytest.raises(confirm.SweepError, match="first seed at the search's own seed"):
        confirm.open_confirm_study(study, spec, plan)
    old.set_attrs(search_seed=spec.base.seed)  # no eval_split: its runs were scored on validation
    with pytest.raises(confirm.SweepError, match="scored its runs on the validation split .* delete"):
        confirm.open_confirm_study(study, spec, plan)


def test_a_study_without_lora_plus_trials_cannot_be_confirmed(tiny_model, toy_csv, tmp_path):
    spec = load_spec(None, {"model": tiny_model, "task": toy_csv, "storage": f"sqlite:///{tmp_path}/s.db"})
    with pytest.raises(confirm.SweepError, match="no completed LoRA[+] trial"):
        confirm.choose_arms(open_study(spec).frame(), spec)


def test_confirm_command_refuses_a_confirm_study_and_a_rank_without_lora_plus(searched):
    spec, study = searched
    confirmed = confirm.run_confirm(study, spec, confirm.plan(study.frame(), spec, seeds=2))
    res = CliRunner().invoke(app, ["confirm", "toy.confirm", "--storage", spec.storage])
    assert res.exit_code == 2 and "is itself a confirm study" in res.stderr
    assert res.stderr.strip().count("\n") == 0
    res = CliRunner().invoke(app, ["confirm", "toy", "--rank", "8", "--storage", spec.storage])
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0
    assert "no completed LoRA+ trial (lambda >= 1.41) at rank 8 to confirm" in res.stderr
    assert len(confirmed.trials()) == 4 and len(study.trials()) == 6  # nothing trained, nothing lost


def test_a_confirm_run_killed_mid_trial_leaves_no_running_trial(searched):
    """The trial a killed `confirm` left RUNNING is failed with its reason on the next run, which
    trains every (arm, seed) still missing and nothing else."""
    spec, study = searched
    plan = confirm.plan(study.frame(), spec, seeds=2)
    plus = plan.challengers[0]
    store = confirm.open_confirm_study(study, spec, plan)
    store.enqueue(plus.params, {"arm": plus.name, "seed": 1})
    stale = store.ask(confirm.runs_spec(spec, plan.arms, 1), draw=0)
    stale.config(confirm.runs_spec(spec, plan.arms, 1))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale.note("worker", {"host": socket.gethostname(), "pid": dead.pid, "started": None})

    result = confirm.run_confirm(study, spec, plan)
    trials = result.trials()
    assert [t.state.name for t in trials] == ["FAIL"] + ["COMPLETE"] * 4
    assert result.stop_reason(trials[0]).startswith("orphaned")
    assert sorted((t.user_attrs["arm"], t.user_attrs["seed"]) for t in trials[1:]) == [
        ("lora", 1), ("lora", 2), (plus.name, 1), (plus.name, 2)]


def test_the_search_never_sees_the_test_split_and_confirm_scores_it_by_default(searched):
    """The test labels are the validation ones flipped: a value from the test split is 1 - the
    validation value of the same run."""
    spec, study = searched
    best = max(study.trials(("COMPLETE",)), key=lambda t: t.value)
    assert best.value != 0.5  # else the flip could not tell the splits apart
    for t in study.trials():  # what the sampler and the pruner saw: validation numbers only
        assert t.user_attrs["config"]["eval_split"] == "validation"
        assert list(t.intermediate_values.values()) == [m for _, m in t.user_attrs["history"]]
        assert t.value == t.user_attrs["metrics"]["accuracy"] == t.user_attrs["history"][-1][1]
    cfg = TrialConfig.from_dict(best.user_attrs["config"]).replace(model=spec.base.model)
    assert workers.run_trial(cfg).metric == pytest.approx(best.value)  # the same run again
    assert workers.run_trial(cfg.replace(eval_split="test")).metric == pytest.approx(1 - best.value)

    tested = confirm.run_confirm(study, spec, confirm.plan(study.frame(), spec, seeds=2))
    on_validation = confirm.plan(study.frame(), spec, seeds=2, split="validation")
    validated = confirm.run_confirm(study, spec, on_validation)
    assert (tested.name, validated.name) == ("toy.confirm", "toy.confirm-validation")
    on = {}
    for store, split in ((tested, "test"), (validated, "validation")):
        for t in store.trials():
            assert t.state.name == "COMPLETE" and t.user_attrs["config"]["eval_split"] == split
            # both arms train the head at the study's one learning rate
            assert t.user_attrs["config"]["head_lr"] == spec.base.head_lr == spec.head_lr
            on[split, t.user_attrs["arm"], t.user_attrs["seed"]] = t.value
    for (split, arm, seed), value in on.items():
        if split == "test":
            assert value == pytest.approx(1 - on["validation", arm, seed])
    rows = confirm.table(confirm.summaries(tested) + confirm.summaries(validated))
    assert rows["split"].tolist() == ["test", "validation"] and (rows["head_lr"] == spec.head_lr).all()


def test_confirm_fixes_the_head_lr_of_a_study_stored_without_one(searched):
    """A study created before head_lr was fixed trained the head at each trial's eta_A; its confirm
    arms share one head lr: the geometric middle of the search's eta_A range."""
    spec, _ = searched
    older = spec.replace(base=spec.base.replace(head_lr=None), eta_a=(1e-4, 1e-2), sampler="tpe", grid=())
    assert older.fixed_head().base.head_lr == 1e-3 == older.head_lr
    arms = (Arm("lora", 5e-3, 1.0, 2, "trial 0"), Arm("lora+ bin 3", 2e-4, 8.0, 2, "trial 1"))
    ran = confirm.runs_spec(older, arms, 4)
    assert ran.base.head_lr == 1e-3 and ran.eta_a == (1e-4, 1e-2)
    assert confirm.runs_spec(spec, arms, 4).base.head_lr == spec.base.head_lr  # a fixed one is kept


def test_a_run_stopped_by_ctrl_c_is_not_a_failure_of_its_arm():
    """Ctrl-C (or SIGTERM) stores its running trials as failed with the reason: no result about the
    arm, and queued again by the next confirm, so the table does not count it as the arm failing."""
    rows = pd.DataFrame({
        "arm": ["lora"] * 4, "seed": [1, 2, 3, 4], "state": ["COMPLETE", "FAIL", "FAIL", "FAIL"],
        "value": [0.8, None, None, None], "history": [[], None, None, None],
        "stop_reason": ["completed", "interrupted by SIGINT (Ctrl-C)", "interrupted by SIGTERM",
                        "RuntimeError: CUDA error"],
        "tokens": [100, 10, 10, 10], "wall_time_s": [1.0, 0.1, 0.1, 0.1]})
    runs = confirm.arm_runs(rows, "lora")
    assert runs.failed == {4} and runs.values == {1: 0.8} and runs.trials == 4
