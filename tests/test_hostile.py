"""Hostile and careless input, through the command line: every case is one line on stderr with the
right exit code, no traceback, no password in any output, no code that the command line did not
allow, and the studies of a prepared database exactly as they were.

The table names each case's kind: remote-code, data, markup, secret, types, output, database,
checks (what would fail every trial), path, limits, usage.
"""
# ruff: noqa: E501  (the case table reads best one case to a line or two, like the options of cli.py)

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from cli import app
from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig
from sweep.data.spec import joined, load_spec
from sweep.data.tasks import load_task
from sweep.engine.checks import preflight
from sweep.study.storage import mask_secrets, mask_url
from sweep.study.stored import StoredStudy

runner = CliRunner()
SECRETS = ("Secret123", "s3cr3tpw", "hunter2x")
LONG = "x" * 5000
DISTRIBUTIONS = {"eta_a": FloatDistribution(1e-4, 1e-2, log=True), "lambda": FloatDistribution(1.0, 64.0, log=True),
                 "rank": CategoricalDistribution([2, 4])}


def remote_code_model(directory: Path, tokenizer_from: str, marker: Path) -> Path:
    """A local model directory whose config names its own Python code (auto_map), which leaves
    `marker` behind when it runs; its model type is unknown to transformers, so only that code can
    load it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tokenizer_from) / name, directory / name)
    (directory / "config.json").write_text(json.dumps(
        {"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig"}}))
    (directory / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n\n\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    return directory


def add_trial(study: optuna.Study, cfg: TrialConfig, eta_a: float, lam: float, rank: int, value: float | None,
              state: TrialState = TrialState.COMPLETE) -> None:
    run = cfg.replace(eta_a=eta_a, lam=lam, rank=rank)
    attrs = {"config": run.to_dict(), "model": cfg.model, "task": cfg.task, "metric_name": "accuracy",
             "metric": value, "tokens": 1000, "wall_time_s": 2.0, "steps": 10, "init": "standard",
             "stop_reason": "completed" if state == TrialState.COMPLETE else "RuntimeError: [Errno 5] boom"}
    study.add_trial(create_trial(params={"eta_a": eta_a, "lambda": lam, "rank": rank}, distributions=DISTRIBUTIONS,
                                 value=value, state=state, user_attrs=attrs))


def open_study(spec) -> optuna.Study:
    """The spec's study created as `run` creates it, opened with Optuna itself to plant trials."""
    StoredStudy.create_or_load(spec)
    return optuna.load_study(study_name=spec.study_name, storage=spec.storage)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model, toy_csv) -> Path:
    """A results database with studies of every kind a command may meet (built without training):
    a normal one over a relative task file, one whose stored definition asks for remote code, one
    whose names are rich markup or spreadsheet formulas, one named like a path, another tool's."""
    root = tmp_path_factory.mktemp("prepared")
    url = f"sqlite:///{root}/loraplus.db"
    evil = remote_code_model(root / "evil-model", tiny_model, root / "MARKER")
    fingerprint = load_task(toy_csv).fingerprint()
    flags = {"task": "data/toy.csv", "storage": url, "eta_a": (1e-4, 1e-2), "rank": (2, 4), "max_length": 32,
             "batch_size": 16, "device": "cpu", "n_trials": 3}

    spec = load_spec(None, {**flags, "model": tiny_model, "name": "toy"}).replace(data_fingerprint=fingerprint)
    toy = open_study(spec)
    add_trial(toy, spec.base, 1e-3, 1.0, 4, 0.6)
    add_trial(toy, spec.base, 2e-3, 4.0, 2, 0.7)
    add_trial(toy, spec.base, 5e-3, 30.0, 4, None, TrialState.FAIL)

    remote = load_spec(None, {**flags, "model": str(evil), "name": "remote"}).replace(data_fingerprint=fingerprint)
    study = open_study(remote)
    definition = study.user_attrs["spec"]
    study.set_user_attr("spec", {**definition, "base": {**definition["base"], "trust_remote_code": True}})
    add_trial(study, remote.base, 1e-3, 4.0, 4, 0.7)

    markup = load_spec(None, {**flags, "model": "[bold]m[/]", "task": "d[/]x.csv", "name": "markup"})
    add_trial(open_study(markup), markup.base, 1e-3, 1.0, 4, 0.5)
    formula = load_spec(None, {**flags, "model": "=HYPERLINK(1)", "task": "@x.csv", "name": "formula"})
    add_trial(open_study(formula), formula.base, 1e-3, 2.0, 4, 0.5)

    pathlike = optuna.create_study(study_name="../../x", storage=url, direction="maximize")
    for key, value in (("model", "m"), ("task", "t.csv"), ("spec", definition)):
        pathlike.set_user_attr(key, value)
    add_trial(pathlike, spec.base, 1e-3, 2.0, 4, 0.5)

    foreign = optuna.create_study(study_name="foreign", storage=url)
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return root


def snapshot(db: Path) -> dict[str, list]:
    """Every row of every table of the database (studies, trials, their values and attributes)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"'))) for t in tables}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Sandbox:
    """A working directory holding a copy of the prepared database as results/loraplus.db (the
    default storage), the toy task as data/toy.csv, and anything a case writes."""

    root: Path
    model: str
    evil: Path
    undo: list[Callable[[], object]] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.root / "results" / "loraplus.db"

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def read_only(self, path: Path) -> None:
        """chmod where it binds (not as root), else the immutable flag; skip where neither can."""
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
        self.undo.append(lambda: os.chmod(path, 0o755 if path.is_dir() else 0o644))
        if os.access(path, os.W_OK) and shutil.which("chattr"):
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
                self.undo.insert(0, lambda: subprocess.run(["chattr", "-i", str(path)], capture_output=True))
        if os.access(path, os.W_OK):
            pytest.skip("no way to make a file read-only on this machine")


@pytest.fixture
def sandbox(tmp_path, prepared, tiny_model, toy_csv, monkeypatch):
    box = Sandbox(tmp_path, tiny_model, prepared / "evil-model")
    (tmp_path / "results").mkdir()
    shutil.copy(prepared / "loraplus.db", box.db)
    box.write("data/toy.csv", Path(toy_csv).read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORAPLUS_SWEEP_DEBUG", raising=False)
    yield box
    for undo in box.undo:
        undo()


def corrupt(box: Sandbox) -> None:
    """Random bytes over the middle half of the database file, as a crash or a bad disk leaves it."""
    data = bytearray(box.db.read_bytes())
    n = len(data)
    data[n // 4: 3 * n // 4] = random.Random(0).randbytes(3 * n // 4 - n // 4)
    box.db.write_bytes(bytes(data))


def toml(text: str) -> Callable[[Sandbox], None]:
    return lambda box: box.write("study.toml", text)


def config_json(content: str | bytes) -> Callable[[Sandbox], None]:
    return lambda box: box.write("config.json", content)


CHANGED = "text,label\n" + "an awful film,neg\na great film,pos\n" * 20
ONE_CLASS = "text,label\n" + "".join(f"good movie number {i},pos\n" for i in range(40))
MIXED_JSONL = "".join(json.dumps(r) + "\n" for r in (
    [{"text": "great fun", "label": 1}, {"text": 5, "label": "neg"}, {"text": {"a": 1}, "label": 1},
     {"text": "dull", "label": "neg"}] * 10))
LIST_LABELS = "".join(json.dumps({"text": f"t{i}", "label": [i % 2]}) + "\n" for i in range(20))
RUN = ("run", "--model", "{model}", "--task", "data/toy.csv", "--max-length", "32")


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    args: tuple[str, ...]
    message: str  # in the one stderr line
    code: int = 2
    setup: Callable[[Sandbox], None] | None = None


CASES = [
    # remote code: only from a flag of the command that runs it (issue items 1, 2)
    Case("toml-remote-code-string", "remote-code", ("run", "study.toml"), "pass --trust-remote-code on the command line",
         setup=toml('[trial]\ntrust_remote_code = "false"\n')),
    Case("toml-remote-code-true", "remote-code", ("run", "study.toml"), "pass --trust-remote-code on the command line",
         setup=toml("[trial]\ntrust_remote_code = true\n")),
    Case("toml-remote-code-in-study", "remote-code", ("run", "study.toml"), "pass --trust-remote-code",
         setup=toml("[study]\ntrust_remote_code = true\n")),
    Case("config-remote-code-true", "remote-code", ("trial", "--config", "config.json"),
         "pass --trust-remote-code on the command line", setup=config_json('{"trust_remote_code": true}')),
    Case("config-remote-code-string", "remote-code", ("trial", "--config", "config.json"),
         "pass --trust-remote-code on the command line", setup=config_json('{"config": {"trust_remote_code": "false"}}')),
    Case("worker-stored-remote-code", "remote-code", ("worker", "remote"), "runs only with --trust-remote-code"),
    Case("confirm-stored-remote-code", "remote-code", ("confirm", "remote", "--seeds", "2"),
         "runs only with --trust-remote-code"),
    Case("run-remote-model-without-flag", "remote-code", ("run", "--model", "{evil}", "--task", "data/toy.csv"),
         "contains custom code"),
    # the task's content is part of the study (item 4)
    Case("worker-data-changed", "data", ("worker", "toy"), "holds other data here than when study toy was created",
         setup=lambda box: box.write("data/toy.csv", CHANGED)),
    Case("confirm-data-changed", "data", ("confirm", "toy", "--seeds", "2"), "holds other data here",
         setup=lambda box: box.write("data/toy.csv", CHANGED)),
    # user text is text, not rich markup (item 5)
    Case("eta-a-nan-prints-value", "markup", ("run", "--eta-a", "nan"), "eta_a range must be positive, got [nan, nan]"),
    Case("markup-task-path", "markup", ("run", "--task", "d[/]x[bold].csv"), "task file 'd[/]x[bold].csv' does not exist"),
    Case("markup-study-name", "markup", ("run", "--study-name", "[bold]x[/]"), "study name '[bold]x[/]' may hold only"),
    Case("markup-study-file", "markup", ("run", "[red]nope[/].toml"), "no study file '[red]nope[/].toml'"),
    # passwords never printed (item 6), whatever the URL's form or the error
    Case("password-with-at", "secret", ("studies", "list", "--storage", "postgresql://sweep:Top@Secret123@127.0.0.1:1/db"),
         "the password holds '@'"),
    Case("password-query-key", "secret", ("studies", "list", "--storage", "postgresql://u@127.0.0.1:1/db?password=hunter2x"),
         "cannot open storage postgresql://u@127.0.0.1:1/db?password=***"),
    Case("password-empty-user", "secret", ("report", "--storage", "postgresql://:s3cr3tpw@127.0.0.1:1/db"),
         "cannot open storage postgresql://:***@127.0.0.1:1/db"),
    Case("password-percent-encoded", "secret", ("studies", "list", "--storage", "postgresql://u:Secret123%40x@127.0.0.1:1/db"),
         "postgresql://u:***@127.0.0.1:1/db"),
    Case("password-sslpassword", "secret",
         ("studies", "list", "--storage", "postgresql+psycopg://u@127.0.0.1:1/db?sslpassword=hunter2x"), "sslpassword=***"),
    Case("password-in-run", "secret", (*RUN, "--storage", "postgresql://u:s3cr3tpw@127.0.0.1:1/db"),
         "cannot open storage postgresql://u:***@"),
    Case("password-unknown-driver", "secret", ("studies", "list", "--storage", "mysql://u:s3cr3tpw@127.0.0.1:1/db"),
         "cannot open storage mysql://u:***@"),
    Case("pg-driver-not-installed", "secret", ("studies", "list", "--storage", "postgresql+pg8000://u:s3cr3tpw@h/db"),
         "names the PostgreSQL driver 'pg8000', which is not installed: pip install pg8000"),
    # one strict type schema for TOML, flags and JSON (item 8)
    Case("toml-task-int", "types", ("run", "study.toml"), "task must be a string, got 5", setup=toml("[study]\ntask = 5\n")),
    Case("toml-seed-string", "types", ("run", "study.toml"), "seed must be an integer, got 'x'",
         setup=toml('[study]\nseed = "x"\n')),
    Case("toml-devices-int", "types", ("run", "study.toml"), "devices must be a string, got 0",
         setup=toml("[study]\ndevices = 0\n")),
    Case("toml-not-utf8", "types", ("run", "study.toml"), "is not UTF-8 text",
         setup=lambda box: box.write("study.toml", b'[study]\nmodel = "caf\xe9"\n')),
    Case("toml-several-problems-one-line", "types", ("run", "study.toml"),
         "batch_size must be an integer, got '8'; epochs must be a number, got [1]",
         setup=toml('[trial]\nbatch_size = "8"\nepochs = [1]\n')),
    Case("toml-top-level-key", "types", ("run", "study.toml"), "unknown table [task]", setup=toml("task = 5\n")),
    Case("toml-search-string", "types", ("run", "study.toml"), "search.eta_a must be a number or [low, high]",
         setup=toml('[search]\neta_a = "1e-3"\n')),
    Case("toml-betas-one", "types", ("run", "study.toml"), "betas must be [number, number], got [0.9]",
         setup=toml("[trial]\nbetas = [0.9]\n")),
    Case("toml-heartbeat-float", "types", ("run", "study.toml"), "heartbeat must be an integer, got 10000000000.0",
         setup=toml("[study]\nheartbeat = 1e10\n")),
    Case("toml-epochs-nan", "types", ("run", "study.toml"), "epochs must be a finite number > 0, got nan",
         setup=toml("[trial]\nepochs = nan\n")),
    Case("config-json-list", "types", ("trial", "--config", "config.json"), "must be a JSON object", setup=config_json("[1, 2]")),
    Case("config-json-null", "types", ("trial", "--config", "config.json"), "must be a JSON object", setup=config_json("null")),
    Case("config-json-wrong-types", "types", ("trial", "--config", "config.json"),
         "rank must be an integer, got '8'; max_steps must be an integer (or unset), got 2.5",
         setup=config_json('{"rank": "8", "max_steps": 2.5}')),
    Case("config-json-unknown-key", "types", ("trial", "--config", "config.json"), "unknown trial setting 'learning_rate'",
         setup=config_json('{"learning_rate": 1e-3}')),
    Case("config-not-json", "types", ("trial", "--config", "config.json"), "is not JSON", setup=config_json(b"\xff\xfe{")),
    Case("config-is-a-directory", "types", ("trial", "--config", "data"), "cannot read trial config 'data'"),
    # outputs checked before any work (item 8)
    Case("report-out-is-a-file", "output", ("report", "--out", "data/toy.csv"), "is a file"),
    Case("report-out-read-only", "output", ("report", "--out", "ro"), "is not writable",
         setup=lambda box: box.read_only(box.write("ro/keep", "").parent)),
    Case("confirm-out-is-a-file", "output", ("confirm", "toy", "--out", "data/toy.csv"), "is a file"),
    Case("confirm-out-read-only", "output", ("confirm", "toy", "--out", "ro/sub"), "cannot create the output directory",
         setup=lambda box: box.read_only(box.write("ro/keep", "").parent)),
    Case("export-out-is-a-directory", "output", ("export", "toy", "--out", "data"), "is a directory; name a file"),
    Case("export-out-read-only", "output", ("export", "toy", "--out", "ro.json"), "is not writable",
         setup=lambda box: box.read_only(box.write("ro.json", "{}"))),
    Case("export-out-under-a-file", "output", ("export", "toy", "--out", "data/toy.csv/best.json"), "is a file"),
    # the database: damaged, read-only, another tool's (item 8)
    Case("corrupt-db-list", "database", ("studies", "list"), "database disk image is malformed", setup=corrupt),
    Case("corrupt-db-report", "database", ("report",), "database disk image is malformed", setup=corrupt),
    Case("corrupt-db-export", "database", ("export", "toy"), "database disk image is malformed", setup=corrupt),
    Case("delete-read-only-db", "database", ("studies", "delete", "toy", "--yes"), "is read-only here; nothing was changed",
         setup=lambda box: box.read_only(box.db)),
    Case("run-read-only-db", "database", RUN, "is read-only here", setup=lambda box: box.read_only(box.db)),
    Case("export-foreign-study", "database", ("export", "foreign"), "was not written by loraplus-sweep"),
    Case("worker-foreign-study", "database", ("worker", "foreign"), "was not created by loraplus-sweep run"),
    Case("confirm-foreign-study", "database", ("confirm", "foreign"), "was not created by loraplus-sweep run"),
    Case("not-a-database", "database", ("report", "--storage", "sqlite:///data/toy.csv"), "file is not a database"),
    # what would fail every trial, checked before the first one (items 8, 9)
    Case("max-length-beyond-positions", "checks", (*RUN[:-1], "4096"), "max_length 4096 is more than the 128 positions"),
    Case("one-class-training-set", "checks", ("run", "--model", "{model}", "--task", "one.csv"), "holds one class (pos)",
         setup=lambda box: box.write("one.csv", ONE_CLASS)),
    Case("one-class-trial", "checks", ("trial", "--model", "{model}", "--task", "one.csv"), "holds one class",
         setup=lambda box: box.write("one.csv", ONE_CLASS)),
    Case("device-cuda-missing", "checks", (*RUN, "--device", "cuda:99"), "--device cuda:99"),
    Case("devices-gpu-missing", "checks", (*RUN, "--devices", "7"), "no GPU 7 on this machine"),
    Case("toml-target-modules-ints", "checks", ("run", "study.toml"), "target_modules must be a list of strings",
         setup=toml("[trial]\ntarget_modules = [1, 2]\n")),
    Case("toml-in-process-string", "checks", ("run", "study.toml"), "in_process must be true or false, got 'yes'",
         setup=toml('[study]\nin_process = "yes"\n')),
    Case("rank-empty", "checks", ("run", "--rank", ""), "--rank must be a comma-separated list of integers, got ''"),
    Case("target-module-missing", "checks", ("trial", "--model", "{model}", "--task", "data/toy.csv", "--target-modules",
                                             "q_proj"), "target_modules ['q_proj'] are not modules of"),
    Case("jobs-beyond-cores", "checks", (*RUN, "--jobs", "100000"), "more than the"),
    # names and paths: traversal, length, unicode, spaces (items 8, 11)
    Case("study-name-5000", "path", ("run", "--study-name", LONG), "may hold only letters"),
    Case("show-name-5000", "path", ("studies", "show", LONG), "no study 'xxxx"),
    Case("export-name-5000", "path", ("export", LONG), "no study 'xxxx"),
    Case("delete-name-5000", "path", ("studies", "delete", LONG, "--yes"), "no study 'xxxx"),
    Case("worker-name-5000", "path", ("worker", LONG), "no study 'xxxx"),
    Case("model-5000", "path", ("trial", "--model", LONG, "--task", "data/toy.csv"), "File name too long"),
    Case("task-5000", "path", ("trial", "--model", "{model}", "--task", LONG + ".csv"), "File name too long"),
    Case("study-file-5000", "path", ("run", LONG + ".toml"), "no study file"),
    Case("study-name-emoji", "path", ("run", "--study-name", "λ-😀"), "study name 'λ-😀' may hold only"),
    Case("study-name-empty", "path", ("run", "--study-name", ""), "study name '' may hold only"),
    Case("study-name-traversal", "path", ("run", "study.toml"), "may hold only", setup=toml('[study]\nname = "../x"\n')),
    Case("study-file-empty", "path", ("run", ""), "no study file ''"),
    Case("task-with-spaces-and-emoji-loads", "path",
         ("trial", "--model", "{model}", "--task", "my data 😀.csv", "--max-length", "999"),
         "max_length 999 is more than the 128 positions", setup=lambda box: box.write("my data 😀.csv",
                                                                                        (box.root / "data/toy.csv").read_text())),
    Case("task-is-a-directory", "path", ("trial", "--model", "{model}", "--task", "dir.csv"), "is a directory",
         setup=lambda box: (box.root / "dir.csv").mkdir()),
    Case("task-directory-no-suffix", "path", ("trial", "--model", "{model}", "--task", "data"), "unknown task 'data'"),
    Case("jsonl-object-as-text", "path", ("trial", "--model", "{model}", "--task", "mixed.jsonl"),
         "column 'text' of mixed.jsonl holds lists or objects", setup=lambda box: box.write("mixed.jsonl", MIXED_JSONL)),
    Case("model-empty", "path", ("trial", "--model", ""), "model must be a hub name or a local directory"),
    Case("task-empty", "path", ("trial", "--task", ""), "task must be a task name"),
    Case("storage-empty", "path", (*RUN, "--storage", ""), "storage must be a database URL"),
    Case("storage-not-a-url", "path", ("studies", "list", "--storage", "results/loraplus.db"), "is not a database URL"),
    # values: zero, negative, huge, infinite (the cases a careless user tries)
    Case("n-trials-zero", "limits", ("run", "--n-trials", "0"), "n_trials must be an integer >= 1, got 0"),
    Case("n-trials-negative", "limits", ("run", "--n-trials", "-5"), "n_trials must be an integer >= 1, got -5"),
    Case("eta-a-overflow", "limits", ("run", "--eta-a", "1e400"), "eta_a range must be positive, got [inf, inf]"),
    Case("lambda-three-parts", "limits", ("run", "--lambda", "1:2:3"), "--lambda must be LOW:HIGH or a number"),
    Case("timeout-infinite", "limits", ("run", "--timeout", "inf"), "timeout must be a finite number of seconds > 0"),
    Case("heartbeat-huge", "limits", ("run", "--heartbeat", "1000000000000"), "heartbeat must be a whole number of seconds"),
    Case("seed-huge", "limits", ("run", "--seed", "99999999999999999999"), "seed must be an integer from 0 to 2**32 - 1"),
    Case("seed-negative", "limits", ("trial", "--seed", "-1"), "seed must be an integer from 0"),
    Case("batch-size-zero", "limits", ("trial", "--batch-size", "0"), "batch_size must be an integer >= 1, got 0"),
    Case("grid-too-large", "limits", ("run", "study.toml"), "at most 100,000",
         setup=toml(f"[grid]\neta_a = [{', '.join(['1e-3'] * 100)}]\nlambda = [{', '.join(['2.0'] * 100)}]\nrank = [{', '.join(['4'] * 20)}]\n")),
    Case("grid-eta-zero", "limits", ("run", "study.toml"), "must be positive",
         setup=toml("[grid]\neta_a = [0.0]\neta_b = [1e-3]\n")),
    Case("in-process-with-jobs", "limits", ("run", "--in-process", "--jobs", "2"), "in_process runs one trial at a time"),
    Case("worker-heartbeat-zero", "limits", ("worker", "toy", "--heartbeat", "0"), "heartbeat must be a whole number"),
    # usage errors are one line too
    Case("usage-rank-not-int", "usage", ("trial", "--rank", "eight"), "Invalid value for '--rank'"),
    Case("usage-unknown-command", "usage", ("nosuch",), "No such command 'nosuch'"),
    Case("usage-unknown-option", "usage", ("report", "--nope"), "No such option: --nope"),
    Case("report-format-unknown", "usage", ("report", "--format", "xml"), "--format must be one of rich, csv, json, markdown"),
    Case("confirm-seeds-one", "usage", ("confirm", "toy", "--seeds", "1"), "--seeds"),
]


def invoke(box: Sandbox, args: tuple[str, ...]):
    subs = {"{model}": box.model, "{evil}": str(box.evil), "{tmp}": str(box.root)}
    argv = []
    for a in args:
        for key, value in subs.items():
            a = a.replace(key, value)
        argv.append(a)
    return runner.invoke(app, argv)


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.kind}:{c.id}") for c in CASES])
def test_hostile_input_is_one_line_and_changes_nothing(sandbox, prepared, case):
    if case.setup is not None:
        case.setup(sandbox)
    damaged = case.kind == "database" and case.id.startswith("corrupt")
    before = digest(sandbox.db) if damaged else snapshot(sandbox.db)
    r = invoke(sandbox, case.args)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == case.code, r.output
    assert len(lines) == 1, r.stderr
    assert case.message in lines[0], lines[0]
    assert "Traceback" not in r.output
    assert not any(secret in r.output for secret in SECRETS), r.output
    assert not (prepared / "MARKER").exists(), "the stored definition ran the model's code"
    assert (digest(sandbox.db) if damaged else snapshot(sandbox.db)) == before


def test_every_case_kind_of_the_issue_is_covered():
    kinds = {c.kind for c in CASES}
    assert kinds >= {"remote-code", "data", "markup", "secret", "types", "output", "database", "checks", "path", "limits"}
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("args", "shown"), [
    (("studies", "list"), "[bold]m[/]"),
    (("studies", "show", "markup"), '"task": "d[/]x.csv"'),
    (("report",), "best configuration vs plain LoRA"),
    (("report", "--format", "markdown"), "| [bold]m[/] | d[/]x.csv |"),
    (("studies", "show", "../../x"), "../../x"),
])
def test_stored_markup_and_paths_print_as_text(sandbox, args, shown):
    before = snapshot(sandbox.db)
    r = invoke(sandbox, args)
    assert r.exit_code == 0, r.output
    assert shown in r.stdout and "Traceback" not in r.output
    assert snapshot(sandbox.db) == before


def test_report_csv_neutralises_formulas(sandbox):
    r = invoke(sandbox, ("report", "--format", "csv"))
    assert r.exit_code == 0, r.output
    assert any(row.startswith("'=HYPERLINK(1),'@x.csv,") for row in r.stdout.splitlines()), r.stdout
    out = invoke(sandbox, ("report", "--out", "rep"))
    assert out.exit_code == 0, out.output
    assert "\n'=HYPERLINK(1),'@x.csv," in (sandbox.root / "rep" / "summary.csv").read_text()


def test_spreadsheet_safe_cells_leave_numbers_numeric():
    import pandas as pd

    from sweep.analysis.report import to_format

    frame = pd.DataFrame({"gain": [-0.25], "name": ["-cmd"], "formula": ["=1+1"], "at": ["@SUM(A1)"], "ok": ["a-b"]})
    assert to_format(frame, "csv") == "gain,name,formula,at,ok\n-0.25,'-cmd,'=1+1,'@SUM(A1),a-b\n"


def test_export_of_a_path_like_study_name_stays_in_results(sandbox):
    r = invoke(sandbox, ("export", "../../x"))
    assert r.exit_code == 0, r.output
    written = list((sandbox.root / "results").glob("x-*-best.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["study"] == "../../x"
    assert not (sandbox.root.parent.parent / "x-best.json").exists()


def test_remote_code_runs_only_with_the_flag_of_the_command_that_runs_it(sandbox, tmp_path, tiny_model, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # not the user's cache
    marker = tmp_path / "ran"
    evil = remote_code_model(tmp_path / "own-evil", tiny_model, marker)
    without = invoke(sandbox, ("run", "--model", str(evil), "--task", "data/toy.csv"))
    assert without.exit_code == 2 and not marker.exists()
    # With the flag the code runs (and then the unknown architecture has no default LoRA targets).
    flagged = invoke(sandbox, ("run", "--model", str(evil), "--task", "data/toy.csv", "--trust-remote-code"))
    assert marker.exists(), flagged.output
    assert flagged.exit_code == 2 and "no default LoRA target modules" in flagged.stderr


def test_a_joined_study_takes_remote_code_from_the_command_line_only(sandbox):
    study = optuna.load_study(study_name="remote", storage=f"sqlite:///{sandbox.db}")
    assert study.user_attrs["spec"]["base"]["trust_remote_code"] is True  # what a hostile database says
    stored = study.user_attrs["spec"]
    assert joined(stored, "sqlite:///x.db", "remote", {}).base.trust_remote_code is False
    assert joined(stored, "sqlite:///x.db", "remote", {}, trust_remote_code=True).base.trust_remote_code is True


def test_remote_code_is_never_serialised_but_reaches_the_trial_process():
    import pickle

    cfg = TrialConfig(trust_remote_code=True)
    assert "trust_remote_code" not in cfg.to_dict() and "trust_remote_code" not in cfg.to_json()
    assert pickle.loads(pickle.dumps(cfg)).trust_remote_code is True  # how a trial's child process gets it


def test_a_changed_task_file_makes_another_study(sandbox, tiny_model):
    spec = load_spec(None, {"model": tiny_model, "task": "data/toy.csv", "max_length": 32})
    first = preflight(spec)
    sandbox.write("data/toy.csv", (sandbox.root / "data/toy.csv").read_text() + "an extra film,pos\n")
    second = preflight(spec)
    assert first.data_fingerprint != second.data_fingerprint and first.study_name != second.study_name
    with pytest.raises(SweepError, match="holds other data here"):
        preflight(first)  # a study's stored definition meets other data on this machine


def test_a_jsonl_with_list_labels_is_one_line(sandbox):
    sandbox.write("lists.jsonl", LIST_LABELS)
    r = invoke(sandbox, ("trial", "--model", sandbox.model, "--task", "lists.jsonl"))
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1


def test_an_unexpected_error_is_one_line_and_its_traceback_needs_debug(sandbox, monkeypatch):
    import sweep.console.options

    def broken(*_):
        raise RuntimeError("internal failure with postgresql://u:s3cr3tpw@h/db")

    monkeypatch.setattr(sweep.console.options, "load_spec", broken)  # where run reads its study
    r = invoke(sandbox, ("run",))
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "unexpected RuntimeError" in r.stderr and "--debug" in r.stderr and "s3cr3tpw" not in r.output
    debug = invoke(sandbox, ("--debug", "run"))
    assert isinstance(debug.exception, RuntimeError)  # raised, so Python prints its traceback


def test_a_bare_postgresql_url_picks_the_installed_driver_or_says_what_to_install(monkeypatch):
    import importlib.util

    from sweep.study import storage

    installed: set[str] = set()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in installed else None)
    with pytest.raises(SweepError, match=r"neither psycopg nor psycopg2 is installed: pip install"):
        storage.with_driver("postgresql://u@h/db")
    installed.add("psycopg2")
    assert storage.with_driver("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    installed.add("psycopg")
    assert storage.with_driver("postgres://u@h/db") == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://sweep:Top@Secret123@host/db", "postgresql://sweep:***@host/db"),
    ("postgresql://sweep@host/db?password=hunter2x&sslmode=require", "postgresql://sweep@host/db?password=***&sslmode=require"),
    ("postgresql://:s3cr3tpw@host/db", "postgresql://:***@host/db"),
    ("postgresql://u:Secret123%40x@host:5432/db", "postgresql://u:***@host:5432/db"),
    ("sqlite:///results/a:b@c.db", "sqlite:///results/a:b@c.db"),
])
def test_mask_url_hides_every_form_of_password(url, shown):
    assert mask_url(url) == shown


def test_mask_secrets_hides_passwords_inside_library_messages():
    url = "postgresql://sweep:Top@Secret123@host/db"
    message = 'could not translate host name "Secret123@host"; dsn: host=h password=hunter2x; see postgresql://u:s3cr3tpw@h/db'
    masked = mask_secrets(message, [url])
    assert not any(s in masked for s in SECRETS) and "password=***" in masked


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_refused_before_any_trial(sandbox):
    r = invoke(sandbox, (*RUN, "--device", "cuda"))
    assert r.exit_code == 2 and "CUDA is not available" in r.stderr
