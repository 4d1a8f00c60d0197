"""run takes every trial setting a study can set as an option, declared once from TrialConfig; the
options given override a study file; trial's and run's --help show each option's default; and a
study that names no pruner prunes only when it has the trials to rank."""

import csv
import dataclasses
import re

import optuna
import pytest
from conftest import toy_rows
from typer.testing import CliRunner

from cli import app
from sweep.data.config import TrialConfig, flag
from sweep.data.spec import ASHA_MIN_TRIALS, StudySpec, default_pruner, load_spec
from sweep.engine.models import EMBEDDED_GGUF, EMBEDDED_MODELS

runner = CliRunner()
# What a study cannot set: it selects on the validation split (confirm scores the test split).
NOT_A_STUDY_SETTING = {"eval_split"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


def command(name: str):
    import typer.main

    return typer.main.get_command(app).commands[name]


def options(name: str) -> dict[str, object]:
    """Every option of a command by its flags (--x and --no-x)."""
    return {o: p for p in command(name).params for o in [*p.opts, *p.secondary_opts]}


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """A task file whose columns no default name finds: text in 'body', label in 'verdict'."""
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "body", "verdict"])
        writer.writerows((i, text, label) for i, (text, label) in enumerate(toy_rows(80)))
    return path


def tiny_run(tiny_model, task, db):
    return ["--model", tiny_model, "--task", task, "--n-trials", 1, "--max-steps", 2, "--batch-size", 16,
            "--max-length", 16, "--eval-limit", 16, "--sampler", "random", "--device", "cpu", "--storage", db,
            "--study-name", "reviews", "--in-process"]


def test_run_takes_the_label_and_text_columns_of_a_task_file(reviews, tiny_model, tmp_path):
    db = f"sqlite:///{tmp_path}/loraplus.db"
    bare = invoke("run", *tiny_run(tiny_model, reviews, db))
    assert bare.exit_code == 2 and "no text column found in reviews.csv" in bare.stderr, bare.output
    columns = ["--text-column", "body", "--label-column", "verdict"]
    r = invoke("run", *tiny_run(tiny_model, reviews, db), *columns)
    assert r.exit_code == 0, r.output
    [t] = optuna.load_study(study_name="reviews", storage=db).trials
    assert t.state.name == "COMPLETE"
    config = t.user_attrs["config"]
    assert (config["label_column"], config["text_column"]) == ("verdict", "body")


def test_a_missing_label_column_is_one_line(reviews, tiny_model, tmp_path):
    r = invoke("run", *tiny_run(tiny_model, reviews, f"sqlite:///{tmp_path}/db"), "--text-column", "body",
               "--label-column", "stars")
    assert r.exit_code == 2 and "label column 'stars' not in reviews.csv" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_every_setting_a_study_can_set_is_an_option_of_run():
    run, trial = options("run"), options("trial")
    for f in dataclasses.fields(TrialConfig):
        assert flag(f.name) in trial, f.name
        if f.name not in NOT_A_STUDY_SETTING:
            assert flag(f.name) in run, f.name
    assert {f for f in trial if f not in run} <= {"--config", "--json", "--eval-split"}
    # the study's own options come from StudySpec's fields
    for name in ("n_trials", "timeout", "sampler", "pruner", "storage", "trial_timeout", "jobs", "devices",
                 "in_process", "heartbeat", "track", "track_dir", "space", "eta_b"):
        assert flag(name) in run, name
    assert "--study-name" in run


def test_options_given_override_the_study_file_and_the_others_leave_it(tmp_path, monkeypatch):
    study = tmp_path / "s.toml"
    study.write_text('[study]\nn_trials = 6\nsampler = "random"\n[search]\nrank = [4, 8]\n'
                     '[trial]\nbatch_size = 8\nlabel_column = "verdict"\nuse_dora = true\n')
    seen = {}

    def spy(spec):
        seen["spec"] = spec
        raise SystemExit(0)

    monkeypatch.setattr("sweep.study.workers.prepare", spy)
    r = invoke("run", study, "--batch-size", 4, "--no-use-dora", "--text-column", "body", "--lambda", "1:8")
    assert r.exit_code == 0, r.output
    spec = seen["spec"]
    assert (spec.n_trials, spec.sampler, spec.ranks, spec.lam) == (6, "random", (4, 8), (1.0, 8.0))
    base = spec.base
    assert (base.batch_size, base.use_dora) == (4, False)
    assert (base.label_column, base.text_column) == ("verdict", "body")
    assert base.epochs == TrialConfig.epochs and spec.pruner == "none"  # defaults not given: the file's


def test_a_bad_option_value_is_one_line_with_exit_code_2():
    for args, message in ((["--rank", "4,x"], "--rank must be a comma-separated list of integers"),
                          (["--lambda", "2:8"], "must include 1"),
                          (["--batch-size", "0"], "batch_size must be an integer >= 1"),
                          (["--pruner", "hyperband"], "pruner must be one of asha, median, none")):
        r = invoke("run", *args, "--storage", "sqlite:////nonexistent/x.db")
        assert r.exit_code == 2 and message in r.stderr, (args, r.output)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def help_rows(name: str) -> str:
    r = invoke(name, "--help")
    assert r.exit_code == 0, r.output
    return re.sub(r"[\s│]+", " ", r.stdout)


@pytest.mark.parametrize("name", ["run", "trial"])
def test_help_shows_every_options_default(name):
    shown = help_rows(name)
    for param in command(name).params:
        if param.param_type_name == "option" and param.name not in ("help", "as_json"):  # --json: a switch
            assert param.show_default, f"{name} {param.opts[0]} shows no default"
    assert "--batch-size <int> Examples per step. [default: 32]" in shown
    assert "--use-dora --no-use-dora DoRA" in shown and "[default: no-use-dora]" in shown
    assert "--label-column <str> Label column of a local task file. [default: (unset)]" in shown
    for flags in re.findall(r"(--[a-z-]+ --no-[a-z-]+) (\S+)", shown):
        assert flags[1] != "<bool>", f"{name} {flags[0]} shows <bool>"
    assert "<bool>" not in shown.replace("--help <bool>", "")


def test_run_help_shows_the_study_defaults_and_says_options_override_the_file():
    shown = help_rows("run")
    fields = StudySpec.__dataclass_fields__
    eta_a, lam = (":".join(f"{v:g}" for v in fields[k].default) for k in ("eta_a", "lam"))
    assert f"[default: {eta_a}]" in shown and f"[default: {lam}]" in shown
    assert "--n-trials <int>" in shown and "[default: 20]" in shown
    assert f"[default: (asha for {ASHA_MIN_TRIALS} trials or more, else none)]" in shown
    assert "options given override its settings" in shown


def test_model_help_names_every_embedded_model():
    for name in ("run", "trial"):
        shown = help_rows(name)
        for model in (*EMBEDDED_MODELS, *EMBEDDED_GGUF):
            assert f"'{model}'" in shown.split("--model", 1)[1].split("[default", 1)[0], (name, model)


def test_the_default_pruner_follows_the_number_of_trials():
    assert default_pruner(ASHA_MIN_TRIALS - 1) == "none" and default_pruner(ASHA_MIN_TRIALS) == "asha"
    assert load_spec(None, {"n_trials": 4}).pruner == "none"
    assert load_spec(None, {"n_trials": 40}).pruner == "asha"
    assert load_spec(None, {}).pruner == "asha"  # 20 trials by default
    # one chosen is kept, whatever the budget
    assert load_spec(None, {"n_trials": 4, "pruner": "asha"}).pruner == "asha"
    assert load_spec(None, {"n_trials": 40, "pruner": "median"}).pruner == "median"
    base = TrialConfig()
    assert StudySpec(base=base, n_trials=4).pruner == "none"
    assert StudySpec(base=base, n_trials=4, pruner="median").pruner == "median"
    assert StudySpec.from_dict(StudySpec(base=base, n_trials=4).to_dict(), "s").pruner == "none"


def test_a_grid_study_gets_its_pruner_from_its_points(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("[grid]\neta_a = [1e-4, 1e-3]\nlambda = [1, 4, 16]\n")  # 6 points
    assert load_spec(grid).pruner == "none"
    grid.write_text("[grid]\neta_a = [1e-4, 1e-3, 1e-2]\nlambda = [1, 4, 16, 64]\n")  # 12 points
    assert load_spec(grid).pruner == "asha"
