"""Journal storage (a JSON-lines file on a shared file system): its URL forms, the lock beside it, its
one-line errors, and the commands that read and delete studies on it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from commands import invoke
from readonly import read_only, writable

from sweep.core.errors import SweepError
from sweep.study import storage as st


def one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.parametrize("url, path", [
    ("journal:///srv/nfs/sweeps/study.log", "/srv/nfs/sweeps/study.log"),
    ("journal://results/study.log", "results/study.log"),
    ("results/study.log", "results/study.log"),
    ("/srv/nfs/study.log", "/srv/nfs/study.log"),
    ("sqlite:///results/study.log", None),  # SQLite whatever the file is called
    ("postgresql://u:pw@h/db.log", None),
    ("results/study.db", None),
])
def test_journal_urls_and_plain_paths_ending_in_log(url, path):
    assert st.journal_path(url) == (None if path is None else Path(path))


def test_a_journal_url_is_shown_as_written_even_with_at_signs_and_colons():
    url = "journal:///nfs/team:lora@site/study.log"
    assert st.mask_url(url) == url
    assert st.mask_url("/nfs/a:b@c/study.log") == "/nfs/a:b@c/study.log"


def test_two_openings_of_one_journal_see_each_others_studies_and_it_holds_json_only(tmp_path):
    url = f"journal://{tmp_path}/study.log"
    first = st.open_storage(url)
    assert isinstance(first, optuna.storages.JournalStorage)
    study = optuna.create_study(study_name="s", storage=first)
    study.set_user_attr("model", "m")
    study.enqueue_trial({"x": 1.0})
    second = st.open_storage(url, create=False)  # another process would open it this way
    loaded = optuna.load_study(study_name="s", storage=second)
    assert loaded.user_attrs == {"model": "m"} and len(loaded.trials) == 1
    lines = (tmp_path / "study.log").read_text().splitlines()
    assert len(lines) >= 3 and all(isinstance(json.loads(line), dict) for line in lines)
    assert [p.name for p in tmp_path.iterdir()] == ["study.log"]  # no lock left behind, no snapshot


def test_the_budget_lock_is_a_file_beside_the_journal_held_across_processes(tmp_path):
    url = str(tmp_path / "study.log")
    st.open_storage(url)
    lock_file = tmp_path / "study.log.sweep.lock"  # not Optuna's study.log.lock, which writes take
    done = tmp_path / "done"  # written by the holder as the last thing under the lock
    code = ("import sys, time, pathlib; from sweep.study.storage import storage_lock\n"
            "with storage_lock(sys.argv[1], 's'):\n    print('held', flush=True); time.sleep(1.5)\n"
            "    pathlib.Path(sys.argv[2]).write_text('x')\n")
    holder = subprocess.Popen([sys.executable, "-c", code, url, str(done)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline() == "held\n"
        assert lock_file.exists()
        with st.storage_lock(url, "s"):
            assert done.exists()  # this process waited for the other to finish its block
            assert lock_file.exists()
        assert not lock_file.exists()
    finally:
        holder.wait(timeout=30)


def test_a_journal_in_a_missing_directory_is_one_line_and_creates_nothing(tmp_path, tiny_model, toy_csv):
    missing = tmp_path / "not-mounted" / "sweeps"
    r = invoke("run", "--storage", f"journal://{missing}/study.log", "--model", tiny_model, "--task", toy_csv,
               "--max-length", 32, "--in-process")
    one_line_error(r, f"no directory {missing} for the journal study.log; create it first")
    with pytest.raises(SweepError, match="is the shared file system mounted here"):
        st.open_storage(str(missing / "study.log"))
    assert not (tmp_path / "not-mounted").exists()


def test_reading_a_journal_that_does_not_exist_is_one_line(tmp_path):
    for args in (("studies", "list"), ("studies", "show", "s"), ("report",), ("export", "s")):
        r = invoke(*args, "--storage", tmp_path / "none.log")
        one_line_error(r, f"no journal at {tmp_path / 'none.log'}; run a sweep first")
    assert not (tmp_path / "none.log").exists()


def test_a_damaged_journal_is_one_line(tmp_path):
    log = tmp_path / "study.log"
    st.open_storage(str(log))
    optuna.create_study(study_name="s", storage=st.open_storage(str(log)))
    with log.open("a") as f:
        f.write("{not json\n" + json.dumps({"op_code": 0, "worker_id": "w"}) + "\n")
    one_line_error(invoke("studies", "list", "--storage", log), f"cannot open the journal {log}",
                   "a damaged file?")


# --- commands on a study stored in a journal -----------------------------------------------------


@pytest.fixture(scope="module")
def journal(tmp_path_factory, tiny_model, toy_csv):
    """A journal whose study 'toy' holds two trials, run once for the module through the CLI."""
    log = tmp_path_factory.mktemp("journal") / "study.log"
    r = invoke("run", "--model", tiny_model, "--task", toy_csv, "--eta-a", "1e-3:1e-2", "--lambda", "1:64",
               "--rank", "2,4", "--epochs", 1, "--max-length", 32, "--batch-size", 32, "--eval-every", 4,
               "--sampler", "random", "--device", "cpu", "--storage", f"journal://{log}",
               "--study-name", "toy", "--in-process", "--n-trials", 2)
    assert r.exit_code == 0, r.output
    return log


def test_studies_list_show_report_and_export_read_a_journal(journal, tmp_path):
    url = f"journal://{journal}"
    listed = invoke("studies", "list", "--storage", url, "--names")
    assert listed.exit_code == 0 and listed.stdout == "toy\n", listed.output
    shown = invoke("studies", "show", "toy", "--storage", journal)  # the plain path names it too
    assert shown.exit_code == 0 and "COMPLETE" in shown.stdout, shown.output
    rep = invoke("report", "--storage", url, "--format", "json")
    assert rep.exit_code == 0, rep.output
    assert json.loads(rep.stdout)["summary"][0]["trials"] == 2
    out = tmp_path / "best.json"
    exported = invoke("export", "toy", "--storage", url, "--out", out)
    assert exported.exit_code == 0, exported.output
    assert json.loads(out.read_text())["config"]["model"]


def test_studies_delete_on_a_journal_and_on_a_read_only_one(journal, tmp_path):
    copy = tmp_path / "ro" / "study.log"
    copy.parent.mkdir()
    shutil.copy(journal, copy)
    read_only(copy.parent)
    try:
        one_line_error(invoke("studies", "delete", "toy", "--yes", "--storage", copy),
                       "is read-only here; nothing was changed")
    finally:
        writable(copy.parent)
    assert copy.read_bytes() == journal.read_bytes()
    deleted = invoke("studies", "delete", "toy", "--yes", "--storage", f"journal://{copy}")
    assert deleted.exit_code == 0 and "deleted study 'toy' (2 trials)" in deleted.stderr, deleted.output
    assert invoke("studies", "list", "--storage", copy, "--names").stdout == ""
    one_line_error(invoke("studies", "show", "toy", "--storage", copy), "no study 'toy'")
