"""`studies copy`: studies run in one database (a GPU box's) copied whole into another."""

import optuna
import pytest
from commands import invoke
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweep.data.spec import load_spec
from sweep.study.stored import StoredStudy, study_names


def store(url: str, name: str, values: list[float | None]) -> None:
    """A study named `name` with a finished trial per value (None: a failed one), each with the
    attributes a report reads."""
    spec = {"model": "bert", "task": "sst2", "storage": url, "name": name}
    StoredStudy.create_or_load(load_spec(None, spec))
    study = optuna.load_study(study_name=name, storage=url)
    for i, v in enumerate(values):
        study.add_trial(create_trial(
            state=TrialState.FAIL if v is None else TrialState.COMPLETE, value=v,
            params={"eta_a": 1e-4 * (i + 1)},
            distributions={"eta_a": FloatDistribution(1e-5, 1e-2, log=True)},
            user_attrs={"metric_name": "accuracy", "tokens": 1000 + i}))


@pytest.fixture
def source(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/gpu.db"
    store(url, "a", [0.8, 0.9, None])
    store(url, "b", [0.7])
    return url


def snapshot(url: str, name: str) -> tuple:
    study = optuna.load_study(study_name=name, storage=url)
    trials = [(t.number, t.state, t.value, t.params, t.user_attrs) for t in study.trials]
    return study.user_attrs, study.direction, trials


def test_copy_brings_every_study_with_its_trials_and_attributes(source, tmp_path):
    dest = f"sqlite:///{tmp_path}/home.db"
    store(dest, "kept", [0.5])
    r = invoke("studies", "copy", source, "--storage", dest)
    assert r.exit_code == 0, r.output
    assert sorted(study_names(dest)) == ["a", "b", "kept"]
    for name in ("a", "b"):
        assert snapshot(dest, name) == snapshot(source, name)
    assert snapshot(dest, "a")[0]["spec"]["base"]["model"] == "bert"  # the definition travels too
    assert "copied 'a' (3 trials)" in r.output


def test_copy_by_name_copies_only_those(source, tmp_path):
    dest = f"sqlite:///{tmp_path}/home.db"
    assert invoke("studies", "copy", source, "b", "--storage", dest).exit_code == 0
    assert study_names(dest) == ["b"]


def test_a_name_already_stored_is_refused_and_nothing_is_copied(source, tmp_path):
    dest = f"sqlite:///{tmp_path}/home.db"
    store(dest, "b", [0.1])
    before = snapshot(dest, "b")
    r = invoke("studies", "copy", source, "--storage", dest)
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1 and "already holds 'b'" in r.output
    assert study_names(dest) == ["b"] and snapshot(dest, "b") == before


def test_an_unknown_name_or_source_is_one_line(source, tmp_path):
    dest = f"sqlite:///{tmp_path}/home.db"
    r = invoke("studies", "copy", source, "nope", "--storage", dest)
    assert r.exit_code == 2 and "no study 'nope'" in r.output and len(r.output.strip().splitlines()) == 1
    r = invoke("studies", "copy", f"sqlite:///{tmp_path}/missing.db", "--storage", dest)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "missing.db").exists()
