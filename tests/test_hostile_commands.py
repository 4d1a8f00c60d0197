"""Hostile input to the commands that read stored studies (report, studies, export, confirm,
dashboard) and to a sweep's signals: studies another tool made in the same database, directions,
output paths that are symlinks, confirm studies, live databases. Each case: the exit code, one line
on stderr, no traceback, and the stored studies as they were.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import optuna
import pytest
from commands import invoke, one_line
from optuna.trial import create_trial
from processes import running_trials_of, start, sweep_args, trial_processes, trials, wait_for
from test_hostile import DISTRIBUTIONS, add_trial, open_study, snapshot

from sweep.core.signals import Interrupted, Stop, stop_on_signals
from sweep.data.spec import load_spec
from sweep.study.stored import trials_frame


def add_loss_trial(study: optuna.Study, value: float, eta_a: float) -> None:
    attrs = {"model": "m", "task": "t", "metric_name": "loss", "metric": value, "tokens": 100,
             "wall_time_s": 1.0, "steps": 5, "init": "standard", "stop_reason": "completed"}
    study.add_trial(create_trial(params={"eta_a": eta_a, "lambda": 2.0, "rank": 4},
                                 distributions=DISTRIBUTIONS, value=value, user_attrs=attrs))


@pytest.fixture(scope="module")
def stored(tmp_path_factory, tiny_model, toy_csv) -> Path:
    """A database with a study of ours (toy, maximising accuracy), its confirm study, a study of ours
    that minimises a loss, one whose best trial ran in bf16 (ran-bf16), and four foreign ones: a
    plain Optuna study that minimises, one with another tool's attributes (a model that is no string,
    its trials' config another tool's), one with a confirm study's names but not its attributes
    (lookalike), and a two-objective study that carries our attributes."""
    root = tmp_path_factory.mktemp("stored")
    url = f"sqlite:///{root}/loraplus.db"
    spec = load_spec(None, {"task": toy_csv, "storage": url, "model": tiny_model, "name": "toy",
                            "rank": (2, 4), "eta_a": (1e-4, 1e-2), "max_length": 32, "batch_size": 16,
                            "device": "cpu", "n_trials": 3})
    toy = open_study(spec)
    add_trial(toy, spec.base, 1e-3, 1.0, 4, 0.6)
    add_trial(toy, spec.base, 2e-3, 4.0, 2, 0.7)
    add_trial(toy, spec.base, 3e-3, 8.0, 2, 0.65)

    bf16 = optuna.create_study(study_name="ran-bf16", storage=url, direction="maximize")
    for key, value in toy.user_attrs.items():
        bf16.set_user_attr(key, value)
    t = toy.trials[1]  # its config says precision fp32; it ran in bf16 (an "auto" trial would store that)
    bf16.add_trial(create_trial(params=t.params, distributions=t.distributions, value=t.value,
                                user_attrs={**t.user_attrs, "precision": "bf16"}))

    confirm = optuna.create_study(study_name="toy.confirm", storage=url, direction="maximize")
    arms = {"lora": {"eta_a": 1e-3, "lambda": 1.0, "rank": 2, "source": "baseline point"},
            "lora+ bin 2": {"eta_a": 2e-3, "lambda": 4.0, "rank": 2, "source": "trial 1"}}
    for key, value in (("kind", "confirm"), ("confirm_of", "toy"), ("model", tiny_model), ("task", toy_csv),
                       ("arms", arms)):
        confirm.set_user_attr(key, value)
    add_trial(confirm, spec.base, 2e-3, 4.0, 2, 0.9)  # a lucky seed

    loss = optuna.create_study(study_name="loss", storage=url, direction="minimize")
    for key, value in (("model", "m"), ("task", "t"), ("spec", toy.user_attrs["spec"])):
        loss.set_user_attr(key, value)
    for value, eta in ((2.5, 1e-3), (1.5, 2e-3), (3.5, 3e-3)):
        add_loss_trial(loss, value, eta)

    plain = optuna.create_study(study_name="plain", storage=url, direction="minimize")
    for x in (0.9, 0.2, 0.5):
        plain.enqueue_trial({"x": x})
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)

    other = optuna.create_study(study_name="other", storage=url, direction="maximize")
    other.set_user_attr("model", {"name": "m"})
    other.set_user_attr("task", 5)
    other.optimize(lambda t: (t.set_user_attr("config", {"x": 1}), t.suggest_float("lambda", 0.5, 2))[1],
                   n_trials=2)

    lookalike = optuna.create_study(study_name="lookalike", storage=url, direction="maximize")
    for key, value in (("kind", "confirm"), ("model", "m"), ("task", "t"), ("arms", 5)):
        lookalike.set_user_attr(key, value)  # a confirm study's names, not its attributes
    lookalike.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)

    multi = optuna.create_study(study_name="multi", storage=url, directions=["minimize", "maximize"])
    for key, value in (("model", "m"), ("task", "t"), ("spec", toy.user_attrs["spec"])):
        multi.set_user_attr(key, value)
    multi.optimize(lambda t: (t.suggest_float("eta_a", 1e-4, 1e-2), 0.5), n_trials=2)
    return root


@pytest.fixture
def box(tmp_path, stored, monkeypatch) -> Path:
    """A working directory with a copy of the database as results/loraplus.db (the default storage)."""
    (tmp_path / "results").mkdir()
    shutil.copy(stored / "loraplus.db", tmp_path / "results" / "loraplus.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORAPLUS_SWEEP_DEBUG", raising=False)
    return tmp_path


def db(box: Path) -> Path:
    return box / "results" / "loraplus.db"


# Item 4: studies the tool did not make


def test_report_reads_our_studies_and_skips_foreign_ones(box):
    before = snapshot(db(box))
    r = invoke("report", "--format", "csv")
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert ",loss,1.5," in r.stdout and ",accuracy,0.7," in r.stdout
    read = set(trials_frame("sqlite:///results/loraplus.db")["study"])
    assert read == {"toy", "toy.confirm", "loss", "ran-bf16"}
    assert snapshot(db(box)) == before


def test_studies_list_marks_foreign_studies(box):
    r = invoke("studies", "list")
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") > 4}
    assert {"toy", "toy.confirm", "loss", "plain", "other", "multi"} <= set(rows)
    for name in ("plain", "other", "multi", "lookalike"):
        assert "(foreign)" in rows[name], rows[name]
    for name in ("toy", "toy.confirm", "loss"):
        assert "(foreign)" not in rows[name], rows[name]
    assert "not a loraplus-sweep study" in r.stdout


@pytest.mark.parametrize(("name", "what"), [("plain", "a plain Optuna study"),
                                            ("other", "another tool's attributes"),
                                            ("lookalike", "another tool's attributes"),
                                            ("multi", "a study of 2 objectives")])
def test_export_of_a_foreign_study_is_one_line(box, name, what):
    before = snapshot(db(box))
    r = invoke("export", name)
    assert r.exit_code == 2
    line = one_line(r)
    assert f"study '{name}' was not written by loraplus-sweep ({what}); export reads only" in line, line
    assert "#" not in line  # names no trial: there is no best one to name
    assert not list((box / "results").glob("*.json"))
    assert snapshot(db(box)) == before


@pytest.mark.parametrize("command", ["worker", "confirm"])
def test_a_two_objective_study_with_our_attributes_is_refused_by_name(box, command):
    before = snapshot(db(box))
    r = invoke(command, "multi")
    assert r.exit_code == 2
    assert "study 'multi' was not created by loraplus-sweep run (a study of 2 objectives)" in one_line(r)
    assert snapshot(db(box)) == before


@pytest.mark.parametrize("name", ["multi", "other"])
def test_studies_show_lists_a_foreign_study_and_says_it_is_foreign(box, name):
    r = invoke("studies", "show", name)
    assert r.exit_code == 0, r.output
    assert f"study '{name}' is foreign" in one_line(r)


# Item 5: direction where trials are sorted


def shown_numbers(stdout: str) -> list[int]:
    return [int(line.split("│")[1]) for line in stdout.splitlines()
            if line.count("│") > 4 and line.split("│")[1].strip().isdigit()]


@pytest.mark.parametrize(("name", "order"), [("loss", [1, 0, 2]), ("plain", [1, 2, 0]), ("toy", [1, 2, 0])])
def test_studies_show_lists_the_best_trial_first_in_the_study_direction(box, name, order):
    r = invoke("studies", "show", name)
    assert r.exit_code == 0, r.output
    assert shown_numbers(r.stdout) == order


def test_export_of_a_loss_study_names_its_lowest_trial(box):
    r = invoke("export", "loss", "--out", "best.json", "--format", "peft")
    assert r.exit_code == 2  # its trials hold no config (built without training): one line naming the best
    assert "trial #1" in one_line(r) or "(#1)" in one_line(r)


def test_a_trial_without_a_metric_name_follows_its_study_direction():
    import pandas as pd

    from sweep.analysis.report import best_configs

    frame = pd.DataFrame({"study": "s", "model": "m", "task": "t", "metric_name": None,
                          "direction": "minimize", "number": [0, 1], "state": "COMPLETE",
                          "value": [0.2, 0.9], "eta_a": 1e-3, "lambda": 2.0, "rank": 4, "init": "standard"})
    assert best_configs(frame)["number"].tolist() == [0]


# Item 10: a confirm study is no configuration to export


def test_export_of_a_confirm_study_points_at_its_search_study(box):
    before = snapshot(db(box))
    r = invoke("export", "toy.confirm")
    assert r.exit_code == 2
    line = one_line(r)
    assert "study 'toy.confirm' is a confirm study" in line and "export 'toy'" in line, line
    assert not list((box / "results").glob("*.json"))
    assert snapshot(db(box)) == before


def test_export_of_the_search_study_still_works(box):
    r = invoke("export", "toy", "--out", "best.json")
    assert r.exit_code == 0, r.output
    assert json.loads((box / "best.json").read_text())["trial"] == 1
    assert not math.isnan(json.loads((box / "best.json").read_text())["value"])
    assert os.path.getsize(box / "best.json") > 0


# Item 8: destinations resolved and checked before the work


@pytest.mark.parametrize("target", ["empty", "new/adapter"])
def test_export_adapter_writes_through_a_link_to_an_empty_or_new_directory(box, target):
    (box / "empty").mkdir()
    (box / "link").symlink_to(box / target)
    r = invoke("export", "toy", "--adapter", "link")
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert (box / target / "adapter_config.json").is_file()
    assert (box / "link").is_symlink() and (box / "link" / "adapter_model.safetensors").is_file()
    assert not [p for p in (box / target).parent.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize(("make", "message"), [
    (lambda box: (box / "link").symlink_to(box / "results" / "loraplus.db"), "(a link to "),
    (lambda box: (box / "link").symlink_to(box / "link"), "cannot be resolved"),
    (lambda box: ((box / "full").mkdir(), (box / "full" / "x").write_text("keep"),
                  (box / "link").symlink_to(box / "full")), "exists and is not empty"),
])
def test_export_adapter_into_a_bad_link_is_refused_before_training(box, make, message):
    make(box)
    before = snapshot(db(box))
    r = invoke("export", "toy", "--adapter", "link")
    assert r.exit_code == 2
    line = one_line(r)
    assert "--adapter 'link'" in line and message in line, line
    assert "training" not in r.output and not (box / "results" / "toy-best.json").exists()
    assert snapshot(db(box)) == before


# Item 10: SIGHUP is a stop request, as SIGTERM


def test_sighup_requests_a_stop_with_exit_code_129():
    stop = Stop()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGHUP)
    assert stop.signum == signal.SIGHUP
    assert stop.reason == "interrupted by SIGHUP (hangup: the terminal closed)"
    with pytest.raises(Interrupted) as stopped:
        stop.check()
    assert stopped.value.exit_code == 129


@pytest.mark.processes
def test_a_sweep_hung_up_fails_its_trial_with_the_reason_and_exits_129(tiny_model, toy_csv, tmp_path):
    db = f"sqlite:///{tmp_path}/sweep.db"
    args = ["run", *sweep_args(tiny_model, toy_csv), "--max-steps", "1500", "--eval-every", "20",
            "--storage", db, "--study-name", "s", "--n-trials", "1"]
    proc = start(args, tmp_path / "run.log")
    try:
        running = wait_for(lambda: running_trials_of(proc, db, "s") if trial_processes(proc.pid) else None,
                           180, "a running trial")
        os.killpg(proc.pid, signal.SIGHUP)  # as a closed terminal hangs up its session
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = (tmp_path / "run.log").read_text()
    assert code == 129, output
    assert "interrupted by SIGHUP" in output and "Traceback" not in output
    ts = {t.number: t for t in trials(db, "s")}
    assert [t.state.name for t in ts.values()].count("RUNNING") == 0
    assert ts[running[0].number].user_attrs["stop_reason"].startswith("interrupted by SIGHUP")


# Item 10: dashboard --port 0 says the port it got


def test_dashboard_on_port_0_prints_the_port_it_listens_on(stored):
    import socket

    from sweep.study.dashboard import serve

    addresses = []

    class Listening(Exception):
        pass

    def listening(address: str) -> None:
        addresses.append(address)
        port = int(address.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # it accepts there
            raise Listening

    with pytest.raises(Listening):
        serve(f"sqlite:///{stored}/loraplus.db", "127.0.0.1", 0, listening)
    assert addresses[0].startswith("http://127.0.0.1:") and not addresses[0].endswith(":0/")


# Item 10: studies copy from a live database


def test_studies_copy_from_a_live_database_copies_running_trials_as_failed(box, tmp_path):
    source = f"sqlite:///{db(box)}"
    live = optuna.load_study(study_name="toy", storage=source)
    running = live.ask({"eta_a": DISTRIBUTIONS["eta_a"], "lambda": DISTRIBUTIONS["lambda"],
                        "rank": DISTRIBUTIONS["rank"]})
    before = snapshot(db(box))
    dest = f"sqlite:///{tmp_path}/home.db"
    r = invoke("studies", "copy", source, "toy", "--storage", dest)
    assert r.exit_code == 0, r.output
    assert one_line(r) == "copied 'toy' (4 trials; 1 running there copied as failed)"
    copied = {t.number: t for t in optuna.load_study(study_name="toy", storage=dest).trials}
    assert [t.state.name for t in copied.values()].count("RUNNING") == 0
    assert copied[running.number].state.name == "FAIL"
    assert copied[running.number].user_attrs["stop_reason"].startswith("running in sqlite:///")
    assert copied[running.number].params == running.params
    assert [copied[n].value for n in range(3)] == [0.6, 0.7, 0.65]
    stored_copy = optuna.load_study(study_name="toy", storage=dest)
    assert stored_copy.user_attrs == live.user_attrs and stored_copy.direction == live.direction
    assert snapshot(db(box)) == before  # the source, its running trial included, as it was


# Item 11: what the real tools did with an exported config


@pytest.mark.parametrize("fmt", ["axolotl", "llama-factory"])
def test_each_exported_yaml_trains_into_a_folder_of_its_own(fmt):
    import yaml

    from sweep.analysis.export import BestTrial, render
    from sweep.data.config import TrialConfig

    cfg = TrialConfig(model="/nonexistent/model", task="t.csv", kind="causal-lm", max_steps=2)
    one = yaml.safe_load(render(BestTrial("a/b", 3, 1.0, "loss", cfg), fmt))
    other = yaml.safe_load(render(BestTrial("a/b", 4, 1.0, "loss", cfg), fmt))
    assert one["output_dir"].startswith("saves/a_b-") and one["output_dir"] != other["output_dir"]
    assert ".." not in one["output_dir"]


@pytest.mark.parametrize("fmt", ["axolotl", "llama-factory"])
@pytest.mark.parametrize(("ran", "key", "value"), [("bf16", "bf16", True), ("fp32", "bf16", False),
                                                   ("fp16", "fp16", True)])
def test_the_exported_precision_is_the_one_the_trial_ran_in(fmt, ran, key, value):
    import yaml

    from sweep.analysis.export import BestTrial, render
    from sweep.data.config import TrialConfig

    cfg = TrialConfig(model="/nonexistent/model", task="t.csv", kind="causal-lm", precision="auto")
    text = render(BestTrial("s", 1, 1.0, "loss", cfg, precision=ran), fmt)
    assert yaml.safe_load(text)[key] is value
    assert f"the trial ran in {ran}" in text and "(precision auto on the machine it ran on)" in text


def test_export_reads_the_precision_the_trial_stored(box):
    import yaml

    r = invoke("export", "ran-bf16", "--format", "llama-factory", "--out", "best.json")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout)["bf16"] is True  # the stored config says fp32 (the test's default)


@pytest.mark.parametrize(("fmt", "said"), [
    ("axolotl", "checked with axolotl 0.21"),
    ("axolotl", "axolotl 0.19 (what pip installs on Python 3.11) drops weight_decay from its LoRA+"),
    ("llama-factory", "checked with LLaMA-Factory 0.9.5")])
def test_the_exported_yaml_names_the_tool_versions_it_was_checked_with(fmt, said):
    from sweep.analysis.export import BestTrial, render
    from sweep.data.config import TrialConfig

    text = render(BestTrial("s", 1, 1.0, "loss", TrialConfig(model="/nonexistent/m", kind="causal-lm")), fmt)
    header = " ".join(line.lstrip("# ") for line in text.split("\n\n")[0].splitlines())
    assert said in header, header


# Item 10: a large grid is queued a batch at a time


def grid_spec(tmp_path, etas: int, lambdas: int):
    toml = tmp_path / "grid.toml"
    toml.write_text(f"[grid]\neta_a = {[round(1e-4 * 1.01 ** i, 12) for i in range(etas)]}\n"
                    f"lambda = {[float(2 ** i) for i in range(lambdas)]}\nrank = [4]\n")
    return load_spec(toml, {"storage": f"sqlite:///{tmp_path}/grid.db", "model": "m", "task": "t.csv"})


def test_a_grid_of_100000_points_queues_one_batch_before_its_first_trial(tmp_path):
    from sweep.study.workers import GRID_BATCH, open_study

    spec = grid_spec(tmp_path, 10_000, 10)
    assert len(spec.grid) == 100_000 and spec.n_trials == 100_000
    store = open_study(spec)
    assert store.counts()["WAITING"] == GRID_BATCH  # was 100,000 writes (~40 minutes) before the first trial


def test_a_grid_runs_every_point_once_in_batches_and_a_failed_point_waits_for_the_next_run(tmp_path):
    from sweep.data.hooks import Hooks
    from sweep.study.search import key
    from sweep.study.workers import GRID_BATCH, Workers, open_study

    spec = grid_spec(tmp_path, 15, 5)  # 75 points: three batches
    store = open_study(spec)
    workers, told = Workers(store, spec, Hooks()), []
    while (claimed := workers._claim()) not in ("done", "wait"):
        trial, cfg = claimed
        told.append(store.tell(trial, "FAIL" if not told else "COMPLETE", None if not told else 0.5))
        assert store.counts()["WAITING"] <= GRID_BATCH
    assert claimed == "done"
    points = {key(f.params) for f in told}
    assert len(told) == len(points) == 75 and store.counts()["COMPLETE"] == 74
    assert points == {key({"eta_a": e, "lambda": lam, "rank": r}) for e, lam, r in spec.grid}
    assert store.counts()["FAIL"] == 1  # not queued again in the run it failed in
    again = open_study(spec)  # the same command again retries it first
    assert again.counts()["WAITING"] == 1


# Item 10: messages that point at the right line and show a name as it is


@pytest.mark.parametrize(("toml", "shown"), [
    ("[study]\nseed = [1,\n2,\n\n[trial]\nepochs = 1\n",
     "Invalid value (at line 5, column 2); the value that fails starts at line 2"),
    ("[trial]\nbetas = [0.9, 0.99\nepochs = 2\n",
     "(at line 3, column 1); the value that fails starts at line 2"),
    ('\n[study]\nname = """abc\n\nseed = 1\n', "(at end of document); the value that fails starts at line 3"),
    ("[study]\nname = 'x'\nbad line\n", "(at line 3, column 5)"),  # already the right line: said once
])
def test_a_toml_error_names_the_line_its_value_starts_on(box, toml, shown):
    (box / "study.toml").write_text(toml)
    r = invoke("run", "study.toml")
    assert r.exit_code == 2
    line = one_line(r)
    assert "study.toml is not valid TOML" in line and shown in line, line
    assert line.count("line") == shown.count("line")


def test_a_column_name_with_a_trailing_space_is_shown_quoted(box, tiny_model):
    (box / "spaced.csv").write_text("text ,label\n" + "a good film,pos\na bad film,neg\n" * 20)
    r = invoke("trial", "--model", tiny_model, "--task", "spaced.csv", "--text-column", "text")
    assert r.exit_code == 2
    assert "text column 'text' not in spaced.csv (columns: 'text ', 'label')" in one_line(r)
    r = invoke("trial", "--model", tiny_model, "--task", "spaced.csv")
    assert "(columns: 'text ', 'label'); name it with --text-column" in one_line(r)


def test_report_out_through_a_dangling_link_writes_where_it_points(box):
    (box / "rep").symlink_to(box / "elsewhere" / "tables")
    r = invoke("report", "--out", "rep")
    assert r.exit_code == 0, r.output
    assert (box / "elsewhere" / "tables" / "summary.csv").is_file() and (box / "rep").is_symlink()


def test_an_output_link_in_a_loop_is_one_line(box):
    (box / "loop").symlink_to(box / "loop")
    r = invoke("confirm", "toy", "--out", "loop")
    assert r.exit_code == 2
    assert "the output directory 'loop' is a symlink that cannot be resolved" in one_line(r)


def test_export_out_through_a_dangling_link_writes_the_file_it_points_at(box):
    (box / "best.json").symlink_to(box / "exports" / "toy.json")
    r = invoke("export", "toy", "--out", "best.json")
    assert r.exit_code == 0, r.output
    assert json.loads((box / "exports" / "toy.json").read_text())["study"] == "toy"


def test_export_out_as_a_link_in_a_loop_is_one_line(box):
    (box / "best.json").symlink_to(box / "best.json")
    r = invoke("export", "toy", "--out", "best.json")
    assert r.exit_code == 2
    assert "--out 'best.json' is a symlink that cannot be resolved" in one_line(r)


def test_the_heatmap_draws_a_loss_studys_lowest_value_last_on_top(monkeypatch, tmp_path):
    import matplotlib.axes
    import pandas as pd

    from sweep.analysis import plots

    drawn = []
    scatter = matplotlib.axes.Axes.scatter

    def recording(self, x, y, *args, c=None, **kwargs):
        if c is not None and not isinstance(c, str):
            drawn.append(list(c))
        return scatter(self, x, y, *args, c=c, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", recording)
    frame = pd.DataFrame({"study": "s", "model": "m", "task": "t", "metric_name": "loss", "number": [0, 1, 2],
                          "state": "COMPLETE", "value": [2.5, 1.5, 3.5], "eta_a": [1e-3, 2e-3, 3e-3],
                          "lambda": [1.0, 2.0, 4.0], "rank": 4, "init": "standard"})
    plots.plot_heatmap(frame, tmp_path / "heatmap.png")
    assert drawn[0] == [3.5, 2.5, 1.5]  # worst first, best last


@pytest.mark.parametrize(("name", "message"), [
    ("plain", "study 'plain' in sqlite:///results/loraplus.db was not created by loraplus-sweep run"),
    ("other", "was not created by loraplus-sweep run (another tool's attributes)"),
    ("multi", "was not created by loraplus-sweep run (a study of 2 objectives)"),
    ("toy.confirm", "study 'toy.confirm' is a confirm study"),
])
def test_run_into_a_study_it_did_not_create_is_refused_and_leaves_it_alone(box, name, message):
    from sweep.core.errors import SweepError
    from sweep.study.stored import StoredStudy

    spec = load_spec(None, {"storage": "sqlite:///results/loraplus.db", "model": "m", "task": "t.csv",
                            "name": name})
    before = snapshot(db(box))
    with pytest.raises(SweepError) as refused:
        StoredStudy.create_or_load(spec)
    assert message in str(refused.value) and "pick another --study-name" in str(refused.value)
    assert snapshot(db(box)) == before


def test_run_under_a_new_name_creates_its_study_and_continues_it(box):
    from sweep.study.stored import StoredStudy

    spec = load_spec(None, {"storage": "sqlite:///results/loraplus.db", "model": "m", "task": "t.csv",
                            "name": "fresh"})
    assert StoredStudy.create_or_load(spec).is_ours
    assert StoredStudy.create_or_load(spec).is_ours  # continued, not taken for another tool's


def test_a_confirm_queues_its_runs_itself_and_its_workers_queue_no_grid_point(tmp_path):
    from sweep.data.hooks import Hooks
    from sweep.study.stored import StoredStudy
    from sweep.study.workers import Workers

    spec = grid_spec(tmp_path, 3, 2)
    store = StoredStudy.create_or_load(spec)  # nothing queued: a confirm's runs are queued with their seeds
    assert Workers(store, spec, Hooks(), queue_grid=False)._claim() == "done"
    assert store.counts()["WAITING"] == 0
