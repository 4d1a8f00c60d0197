"""Storage under hostile conditions: a journal left with an unfinished line by a killed writer, files
that are not results databases given to commands that only read, servers and trackers that never
answer, and two commands racing on one study. Each ends in one line, and every stored study is still
there and counts the same afterwards."""

import hashlib
import json
import socket
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from commands import invoke
from readonly import read_only, writable

from sweep.study import storage as st


def one_line_error(r, *words, code=2):
    assert r.exit_code == code, (r.exit_code, r.output)
    assert r.stdout == "" and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.output and "unexpected" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def counts(url: str) -> dict[str, int]:
    """Every stored study and its number of trials, read by a fresh opening (as another process would)."""
    storage = st.open_storage(url, create=False)
    return {n: len(optuna.load_study(study_name=n, storage=storage).trials)
            for n in optuna.get_all_study_names(storage)}


# A journal whose writer was killed mid-line

@pytest.fixture
def journal(tmp_path) -> Path:
    """A journal holding study a (two trials, a user attribute last) and study b (one trial)."""
    log = tmp_path / "study.log"
    storage = st.open_storage(str(log))
    a = optuna.create_study(study_name="a", storage=storage)
    b = optuna.create_study(study_name="b", storage=storage)
    a.enqueue_trial({"x": 1.0})
    a.enqueue_trial({"x": 2.0})
    b.enqueue_trial({"x": 3.0})
    a.set_user_attr("model", "m")
    assert counts(str(log)) == {"a": 2, "b": 1}
    return log


UNFINISHED = b'{"op_code":5,"worker_id":"w","study_id":0,"user_attr":{"mod'


def test_a_journal_with_an_unfinished_last_line_is_read_and_the_next_write_moves_the_line_aside(journal):
    with journal.open("ab") as f:
        f.write(UNFINISHED)
    listed = invoke("studies", "list", "--names", "--storage", journal)  # readers skip the line
    assert listed.exit_code == 0 and listed.stdout.split() == ["a", "b"], listed.output
    r = invoke("studies", "delete", "b", "--yes", "--storage", journal)  # a write
    assert r.exit_code == 0, r.output
    warning, deleted = r.stderr.splitlines()
    assert warning.startswith(f"warning: the journal {journal} ended with an unfinished line")
    assert "every stored study is intact" in warning and deleted == "deleted study 'b' (1 trials)"
    assert counts(str(journal)) == {"a": 2}
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())
    assert (journal.parent / "study.log.partial").read_bytes() == UNFINISHED + b"\n"
    # and what comes after: a second write, another reader
    optuna.create_study(study_name="c", storage=st.open_storage(str(journal)))
    assert counts(str(journal)) == {"a": 2, "c": 0}


def test_blank_lines_at_the_end_of_a_journal_are_dropped_before_the_next_write(journal):
    with journal.open("ab") as f:
        f.write(b"\n")
    assert counts(str(journal)) == {"a": 2, "b": 1}
    r = invoke("studies", "delete", "b", "--yes", "--storage", journal)
    assert r.exit_code == 0 and r.stderr == "deleted study 'b' (1 trials)\n", r.output
    assert counts(str(journal)) == {"a": 2}
    assert not (journal.parent / "study.log.partial").exists()


def test_a_last_record_without_its_newline_is_kept_and_ended(journal):
    journal.write_bytes(journal.read_bytes()[:-1])  # the user attribute, less its newline
    before = st.open_storage(str(journal), create=False)
    assert optuna.load_study(study_name="a", storage=before).user_attrs == {}
    r = invoke("studies", "delete", "b", "--yes", "--storage", journal)
    assert r.exit_code == 0 and r.stderr == "deleted study 'b' (1 trials)\n", r.output
    storage = st.open_storage(str(journal), create=False)
    assert optuna.load_study(study_name="a", storage=storage).user_attrs == {"model": "m"}
    assert counts(str(journal)) == {"a": 2}


def test_an_unfinished_line_that_cannot_be_moved_aside_refuses_the_write_in_one_line(journal):
    with journal.open("ab") as f:
        f.write(UNFINISHED)
    (journal.parent / "study.log.partial").mkdir()  # where it would go
    before = digest(journal)
    one_line_error(invoke("studies", "delete", "b", "--yes", "--storage", journal),
                   f"the journal {journal} ends with an unfinished line", "nothing was written")
    assert digest(journal) == before and counts(str(journal)) == {"a": 2, "b": 1}


@pytest.mark.parametrize("tail, kept", [
    (b"", b""),
    (b"\n\n", b""),
    (b'{"op_code":0', b""),
    (b'\n{"op_code":0', b""),
    (b'{"op_code":0}', b'{"op_code":0}\n'),
    (b'{"op_code":0}  \n\n', b'{"op_code":0}  \n'),
    (b"[1, 2]", b""),  # JSON, but no record
    (b'{"op_code":0\n\n{"op_co', b""),  # more than one line that no reader could apply
    (b'{"op_co{"op_code":0}\n', b""),  # a record glued onto an unfinished line (by an older writer)
])
def test_mending_a_journal_end_keeps_every_whole_record_and_nothing_else(tmp_path, tail, kept):
    log = tmp_path / "study.log"
    head = b'{"op_code":0,"study_name":"a"}\n' + b'{"op_code":1}\n' * 3
    log.write_bytes(head + tail)
    warned = []
    st.mend_journal_end(log, warned.append)
    assert log.read_bytes() == head + kept
    assert len(warned) == (1 if tail.strip() and not kept else 0)


def test_a_journal_of_one_unfinished_line_is_mended_to_empty(tmp_path):
    log = tmp_path / "study.log"
    log.write_bytes(UNFINISHED)
    st.mend_journal_end(log, lambda _: None)
    assert log.read_bytes() == b"" and (tmp_path / "study.log.partial").read_bytes() == UNFINISHED + b"\n"


# Commands that only read never write

def unrelated_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    db.close()
    return path


def mlflow_like(path: Path) -> Path:
    """Tables of another tool that, like Optuna, keeps an alembic_version (MLflow's own mlflow.db)."""
    with sqlite3.connect(path) as db:
        for table in ("alembic_version (version_num TEXT)", "experiments (experiment_id INTEGER)",
                      "runs (run_uuid TEXT)"):
            db.execute(f"CREATE TABLE {table}")
        db.execute("INSERT INTO alembic_version VALUES ('abc123')")
    db.close()
    return path


SQLITE_FILES = {
    "empty": lambda p: (p.write_bytes(b""), p)[1],
    "unrelated": unrelated_sqlite,
    "mlflow": mlflow_like,
}
READERS = [("studies", "list"), ("studies", "list", "--names"), ("report",), ("studies", "show", "x"),
           ("export", "x"), ("studies", "delete", "x", "--yes"), ("worker", "x")]


@pytest.mark.parametrize("kind", sorted(SQLITE_FILES))
@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_a_sqlite_file_that_is_not_an_optuna_database_is_named_and_left_as_it_was(tmp_path, kind, args):
    db = SQLITE_FILES[kind](tmp_path / "mlflow.db")
    before = digest(db)
    one_line_error(invoke(*args, "--storage", f"sqlite:///{db}"),
                   f"{db} holds no loraplus-sweep studies (it is not an Optuna database)")
    assert digest(db) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_a_copy_from_a_file_that_is_not_an_optuna_database_writes_nothing(tmp_path):
    source = unrelated_sqlite(tmp_path / "other.db")
    before = digest(source)
    r = invoke("studies", "copy", f"sqlite:///{source}", "--storage", f"sqlite:///{tmp_path / 'to.db'}")
    one_line_error(r, "holds no loraplus-sweep studies")
    assert digest(source) == before


def test_an_optuna_database_is_still_read(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    optuna.create_study(study_name="a", storage=st.open_storage(url))
    r = invoke("studies", "list", "--names", "--storage", url)
    assert r.exit_code == 0 and r.stdout == "a\n", r.output


JOURNAL_FILES = {
    "empty": (b"", "the journal is empty"),
    "text": (b"hello\nworld\n", "it is not an Optuna journal"),
    "json-lines": (b'{"level": "info", "msg": "x"}\n', "it is not an Optuna journal"),
    "unfinished": (UNFINISHED, "the journal is empty"),
}


@pytest.mark.parametrize("kind", sorted(JOURNAL_FILES))
@pytest.mark.parametrize("args", READERS[:5], ids=" ".join)
def test_a_log_file_that_is_not_a_journal_is_named_and_left_as_it_was(tmp_path, kind, args):
    content, why = JOURNAL_FILES[kind]
    log = tmp_path / "app.log"
    log.write_bytes(content)
    one_line_error(invoke(*args, "--storage", log), f"{log} holds no loraplus-sweep studies ({why}")
    assert log.read_bytes() == content and [p.name for p in tmp_path.iterdir()] == ["app.log"]


def test_a_sweep_into_a_file_that_is_not_a_journal_is_refused(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"hello\n")
    with pytest.raises(st.SweepError, match="it is not an Optuna journal.*name a new file"):
        st.open_storage(str(log))
    assert log.read_bytes() == b"hello\n"


# Servers and trackers that never answer

LIMIT = 2  # seconds: LORAPLUS_CONNECT_TIMEOUT in these tests
SLACK = 25  # what a loaded machine may add; without a limit these took minutes, or forever


@pytest.fixture
def silent_port():
    """A port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.fixture
def closed_port():
    """A port nothing listens on (held, so that nothing else takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def timed(*args, env=None):
    env = {"LORAPLUS_CONNECT_TIMEOUT": str(LIMIT), "MLFLOW_HTTP_REQUEST_TIMEOUT": None,
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": None, **(env or {})}
    start = time.monotonic()
    r = invoke(*args, env=env)
    return r, time.monotonic() - start


@pytest.mark.parametrize("args", [("studies", "list"), ("report",), ("studies", "show", "x")], ids=" ".join)
def test_a_postgresql_server_that_never_answers_is_one_line_within_the_limit(silent_port, args):
    r, took = timed(*args, "--storage", f"postgresql://sweep:secret@127.0.0.1:{silent_port}/sweeps")
    one_line_error(r, f"no answer within {LIMIT} s; LORAPLUS_CONNECT_TIMEOUT sets how long to wait")
    assert "secret" not in r.stderr and took < LIMIT + SLACK


def test_a_closed_postgresql_port_is_one_line_at_once(closed_port):
    r, took = timed("studies", "list", "--storage", f"postgresql://sweep@127.0.0.1:{closed_port}/sweeps")
    one_line_error(r, "cannot open storage", "refused")
    assert took < LIMIT + SLACK


def test_the_postgresql_limit_is_libpqs_connect_timeout_unless_the_url_sets_one(monkeypatch):
    monkeypatch.setenv("LORAPLUS_CONNECT_TIMEOUT", "0.5")
    assert st.server_connect_args("postgresql+psycopg://u@h/db") == {"connect_timeout": 2}  # libpq's least
    monkeypatch.setenv("LORAPLUS_CONNECT_TIMEOUT", "7.5")
    assert st.server_connect_args("postgresql+psycopg2://u@h/db") == {"connect_timeout": 8}
    assert st.server_connect_args("postgresql+pg8000://u@h/db") == {"timeout": 7.5}
    assert st.server_connect_args("postgresql+psycopg://u@h/db?connect_timeout=60") == {}
    assert st.server_connect_args("sqlite:///x.db") == {}
    monkeypatch.delenv("LORAPLUS_CONNECT_TIMEOUT")
    assert st.connect_timeout() == st.DEFAULT_CONNECT_TIMEOUT_S == 10


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf"])
def test_a_bad_connect_timeout_is_one_line(value, closed_port):
    r, _ = timed("studies", "list", "--storage", f"postgresql://sweep@127.0.0.1:{closed_port}/sweeps",
                 env={"LORAPLUS_CONNECT_TIMEOUT": value})
    one_line_error(r, "LORAPLUS_CONNECT_TIMEOUT must be a number of seconds above 0", repr(value))


def toy_run(model: str, task: str, db: Path) -> list:
    return ["--model", model, "--task", task, "--eta-a", "1e-3:1e-2", "--lambda", "1:64", "--rank", "2",
            "--epochs", 1, "--train-limit", 32, "--eval-limit", 16, "--max-length", 32, "--batch-size", 16,
            "--sampler", "random", "--pruner", "none", "--device", "cpu", "--storage", f"sqlite:///{db}",
            "--study-name", "toy", "--in-process", "--n-trials", 1]


def test_an_mlflow_server_that_never_answers_stops_run_within_the_limit_before_any_study(
        tmp_path, silent_port, tiny_model, toy_csv):
    db = tmp_path / "loraplus.db"
    r, took = timed("run", *toy_run(tiny_model, toy_csv, db), "--track", "mlflow",
                    env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{silent_port}"})
    one_line_error(r, f"--track mlflow: the tracking server http://127.0.0.1:{silent_port} did not answer "
                      f"within {LIMIT} s; nothing was created")
    assert took < LIMIT + SLACK and not db.exists()


def test_a_closed_mlflow_port_stops_run_at_once_before_any_study(tmp_path, closed_port, tiny_model, toy_csv):
    db = tmp_path / "loraplus.db"
    r, took = timed("run", *toy_run(tiny_model, toy_csv, db), "--track", "mlflow",
                    env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port}"})
    one_line_error(r, "refused the connection; nothing was created")
    assert took < LIMIT + SLACK and not db.exists()


@pytest.mark.parametrize("what", ["file", "directory"])
def test_a_read_only_mlflow_store_stops_run_at_once_before_any_study(tmp_path, tiny_model, toy_csv, what):
    track = tmp_path / "track"
    track.mkdir()
    store = track / "mlflow.db"
    store.write_bytes(b"")
    db = tmp_path / "loraplus.db"
    read_only(store if what == "file" else track)
    try:
        r, took = timed("run", *toy_run(tiny_model, toy_csv, db), "--track", "mlflow", "--track-dir", track,
                        env={"MLFLOW_TRACKING_URI": None})
    finally:
        writable(store if what == "file" else track)
    if what == "file":
        one_line_error(r, f"--track mlflow: the MLflow store {store} is read-only here; nothing was created")
    else:
        one_line_error(r, "the output directory", "is not writable")
    assert took < LIMIT + SLACK and not db.exists() and store.read_bytes() == b""


# Two commands on one study at once, and stored values that are no numbers

@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_study_deleted_by_another_command_while_delete_asks_is_one_line(tmp_path, monkeypatch, kind):
    url = f"sqlite:///{tmp_path / 'results.db'}" if kind == "sqlite" else str(tmp_path / "study.log")
    storage = st.open_storage(url)
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=storage).enqueue_trial({"x": 1.0})

    def the_other_command_deletes(prompt, **_):  # while this one waits for its yes
        other = st.open_storage(url)
        optuna.delete_study(study_name="b", storage=other)
        return True

    monkeypatch.setattr("typer.confirm", the_other_command_deletes)
    one_line_error(invoke("studies", "delete", "b", "--storage", url),
                   "study 'b' was deleted meanwhile, by another command; nothing left to delete")
    assert counts(url) == {"a": 1}


def test_two_deletes_of_one_study_delete_it_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    storage = st.open_storage(url)
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=storage)
    from sweep.study.stored import StoredStudy

    first, second = StoredStudy.load(url, "b"), StoredStudy.load(url, "b")
    first.delete()
    with pytest.raises(st.SweepError, match="was deleted meanwhile"):
        second.delete()
    assert counts(url) == {"a": 0}


def ours(url: str, attrs: list[dict]) -> None:
    """A loraplus-sweep study 'toy' whose trials store `attrs` (over a valid default)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    study = optuna.create_study(study_name="toy", storage=st.open_storage(url), direction="maximize")
    for k, v in {"model": "m", "task": "t", "spec": {"base": {"model": "m"}}, "definition_hash": "d",
                 "metric_name": "accuracy"}.items():
        study.set_user_attr(k, v)
    space = {"eta_a": FloatDistribution(1e-4, 1e-2, log=True), "lambda": FloatDistribution(1, 64, log=True),
             "rank": CategoricalDistribution([4])}
    for i, extra in enumerate(attrs):
        user = {"tokens": 100, "wall_time_s": 1.0, "metric_name": "accuracy", "metric_se": 0.01, "steps": 10,
                **extra}
        pruned = "metric" in extra
        study.add_trial(optuna.trial.create_trial(
            params={"eta_a": 1e-3, "lambda": 1.0 + i, "rank": 4}, distributions=space, user_attrs=user,
            value=None if pruned else 0.5 + i / 10,
            state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE))


@pytest.mark.parametrize("stored, shown", [
    ({"tokens": "lots"}, "trial #1 stores tokens = 'lots', which is not a number"),
    ({"wall_time_s": [1, 2]}, "trial #1 stores wall_time_s = [1, 2], which is not a number"),
    ({"metric": "abc"}, "trial #1 stores metric = 'abc', which is not a number"),
    ({"metric_se": {"a": 1}}, "trial #1 stores metric_se = {'a': 1}, which is not a number"),
], ids=["tokens", "wall_time_s", "metric", "metric_se"])
@pytest.mark.parametrize("args", [("report",), ("export", "toy")], ids=" ".join)
def test_a_stored_value_that_is_no_number_is_one_line(tmp_path, monkeypatch, stored, shown, args):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'results.db'}"
    ours(url, [{}, stored, {}])
    before = digest(tmp_path / "results.db")
    one_line_error(invoke(*args, "--storage", url), f"study 'toy' {shown}", "restore it from a copy")
    assert digest(tmp_path / "results.db") == before and counts(url) == {"toy": 3}
    assert not (tmp_path / "results" / "toy-best.json").exists()
