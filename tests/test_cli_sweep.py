"""run / report / studies / export through the CLI, on a tiny model, and their one-line errors."""

import json
import shutil

import optuna
import pytest
from commands import invoke


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path}/results/loraplus.db"


def toy_run(model: str, task: str, db: str) -> list:
    # Trials in this process: these tests are about the commands (trial processes are tested on their own).
    return ["--model", model, "--task", task, "--eta-a", "1e-3:1e-2", "--lambda", "1:64",
            "--rank", "2,4", "--epochs", 1, "--max-length", 32, "--batch-size", 32, "--eval-every", 4,
            "--sampler", "random", "--device", "cpu", "--storage", db, "--study-name", "toy", "--in-process"]


@pytest.fixture
def run_args(tiny_model, toy_csv, db):
    return toy_run(tiny_model, toy_csv, db)


@pytest.fixture(scope="module")
def one_trial_db(tmp_path_factory, tiny_model, toy_csv):
    """A results database whose study 'toy' holds one trial, run once for the module."""
    path = tmp_path_factory.mktemp("stored") / "loraplus.db"
    r = invoke("run", *toy_run(tiny_model, toy_csv, f"sqlite:///{path}"), "--n-trials", 1)
    assert r.exit_code == 0, r.output
    return path


def test_run_then_rerun_merges_into_one_study_and_report_shows_it(run_args, db, tmp_path):
    first = invoke("run", *run_args, "--n-trials", 2)
    assert first.exit_code == 0, first.output
    assert "toy: 2 finished trials" in first.stdout
    second = invoke("run", *run_args, "--n-trials", 3)
    assert second.exit_code == 0, second.output
    assert "2 of 3 trials finished" in second.stderr and "toy: 3 finished trials" in second.stdout
    study = optuna.load_study(study_name="toy", storage=db)
    assert len(study.trials) == 3
    # stderr is no terminal here, so no bars: a line per evaluation and per finished trial instead
    first_two = [line for line in first.stderr.splitlines() if line.startswith("#")]
    for t in study.trials[:2]:
        mine = [line for line in first_two if line.startswith(f"#{t.number} eta_A {t.params['eta_a']:.2e} ")]
        evals = [any(f"step {step}/" in line and f"eval {value:.4f}," in line for line in mine)
                 for step, value in sorted(t.intermediate_values.items())]
        assert len(mine) == len(evals) + 1 and all(evals) and t.intermediate_values
        assert f": {t.value:.4f}, complete; {t.number + 1}/2 trials, {t.number + 1} complete" in mine[-1]

    rep = invoke("report", "--storage", db, "--format", "json", "--out", tmp_path / "rep")
    assert rep.exit_code == 0, rep.output
    out = json.loads(rep.stdout)
    summary = out["summary"][0]
    assert summary["trials"] == 3 and summary["best"] == max(t.value for t in study.trials)
    assert summary["best_plain"] == study.trials[0].value  # the lambda = 1 baseline
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {
        "summary.csv", "summary.md", "lambda_curve.csv", "default_lambda.json", "heatmap-toy.png",
        "lambda_curves.png"}
    table = invoke("report", "--storage", db)
    assert table.exit_code == 0 and "best configuration vs plain LoRA" in table.stdout


def test_studies_list_show_export_delete(run_args, db, tmp_path):
    assert invoke("run", *run_args, "--n-trials", 1).exit_code == 0
    listed = invoke("studies", "list", "--storage", db)
    assert listed.exit_code == 0 and "toy" in listed.stdout
    shown = invoke("studies", "show", "toy", "--storage", db)
    assert shown.exit_code == 0 and "COMPLETE" in shown.stdout
    exported = invoke("export", "toy", "--storage", db, "--out", tmp_path / "best.json")
    assert exported.exit_code == 0, exported.output
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["config"]["lambda"] == 1.0 and "create_loraplus_optimizer" in exported.stdout
    assert "loraplus_lr_ratio=1" in exported.stdout
    kept = invoke("studies", "delete", "toy", "--storage", db, input="n\n")
    assert kept.exit_code == 1 and len(optuna.load_study(study_name="toy", storage=db).trials) == 1
    gone = invoke("studies", "delete", "toy", "--storage", db, "--yes")
    assert gone.exit_code == 0
    assert "toy" not in invoke("studies", "list", "--storage", db).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--storage", "sqlite:///{tmp}/missing.db"], "no results database at"),
        (["report", "--storage", "sqlite:///{tmp}/results/loraplus.db", "--model", "nope"],
         "no trials to report for that model/task"),
        (["report", "--format", "xml"], "--format must be one of rich, csv, json, markdown"),
        (["run", "{tmp}/bad.toml"], "bad.toml is not valid TOML"),
        (["run", "nosuchpreset"], "no study file 'nosuchpreset'"),
        (["run", "--task", "nosuchtask", "--storage", "sqlite:///{tmp}/x.db"], "unknown task 'nosuchtask'"),
        (["run", "--lambda", "2:64"], "lambda range [2, 64] must include 1"),
        (["run", "--eta-a", "1e-3:1e-5"], "eta_a range is empty"),
        (["run", "--storage", "postgresql://u:secret@127.0.0.1:1/db"], "cannot open storage postgresql://u:***@"),
        (["run", "--storage", "sqlite:////proc/nope/x.db"], "cannot create the directory"),
        (["studies", "show", "nope", "--storage", "sqlite:///{tmp}/results/loraplus.db"], "no study 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, one_trial_db, args, message):
    (tmp_path / "bad.toml").write_text("[study\n")
    (tmp_path / "results").mkdir()
    shutil.copy(one_trial_db, tmp_path / "results" / "loraplus.db")  # a stored study that must survive
    r = invoke(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and r.stderr.strip().count("\n") == 0
    assert "secret" not in r.output
    stored = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path}/results/loraplus.db")
    assert len(stored.trials) == 1


def test_the_sweeps_progress_shows_the_best_trial_in_the_metrics_direction(capsys):
    from sweep.console.ui import SweepProgress
    from sweep.data.hooks import Finished

    params = {"eta_a": 1e-3, "lambda": 4.0, "rank": 8}
    for sign, best in ((1.0, "best 2.5000"), (-1.0, "best 1.5000")):  # accuracy, then a loss
        with SweepProgress("s", 0, 3, sign) as progress:
            for n, value in enumerate((2.0, 1.5, 2.5)):
                progress.trial_end(Finished(n, "COMPLETE", value, params))
        assert progress.best.startswith(best)
        lines = [line for line in capsys.readouterr().err.splitlines() if line]  # no terminal: a line a trial
        last = lines[-1]
        assert last.endswith(f"3/3 trials, 3 complete, 0 pruned, 0 failed, {progress.best}")


def test_a_logged_sweep_says_how_each_trial_ended(capsys):
    from sweep.console.ui import SweepProgress
    from sweep.data.config import TrialConfig
    from sweep.data.hooks import Finished

    params = {"eta_a": 1e-3, "lambda": 4.0, "rank": 8}
    ends = [("PRUNED", 0.61, "pruned at step 160"), ("PRUNED", None, "diverged: loss exploded"),
            ("FAIL", None, "timed out after 8 s")]
    with SweepProgress("s", 0, 3) as progress:
        for state, value, reason in ends:
            progress.trial_start(0, TrialConfig(eta_a=1e-3, lam=4.0, rank=8))
            progress.trial_end(Finished(0, state, value, params, {"stop_reason": reason}))
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert [line.removeprefix("#0 eta_A 1.00e-03 lambda 4 r 8: ") for line in lines] == [
        "0.6100, pruned at step 160; 1/3 trials, 0 complete, 1 pruned, 0 failed",
        "pruned (diverged: loss exploded); 2/3 trials, 0 complete, 2 pruned, 0 failed",
        "failed (timed out after 8 s); 2/3 trials, 0 complete, 2 pruned, 1 failed",
    ]
