"""run --replicate on a tiny model: after the search, the best of each lambda bin and of plain LoRA
are re-trained as trials of the study, at the same point on fresh seeds, marked as replicates."""

from typer.testing import CliRunner

from cli import app
from sweep.analysis import report
from sweep.study.stored import StoredStudy
from sweep.study.workers import REPLICATE_SEED_OFFSET

GRID = '[study]\nsampler = "grid"\n[grid]\neta_a = [2e-3]\nlambda = [1, 8]\nrank = [2]\n'


def test_run_replicate_queues_the_contenders_again_on_fresh_seeds(tiny_model, toy_csv, tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    storage = f"sqlite:///{tmp_path}/s.db"
    res = CliRunner().invoke(app, [
        "run", str(tmp_path / "grid.toml"), "--model", tiny_model, "--task", toy_csv, "--epochs", "1",
        "--batch-size", "32", "--max-length", "32", "--train-limit", "64", "--eval-limit", "32",
        "--eval-every", "2", "--device", "cpu", "--in-process", "--storage", storage, "--study-name", "toy",
        "--replicate", "1"])
    assert res.exit_code == 0, res.output
    study = StoredStudy.load(storage, "toy")
    trials = study.trials()
    search = {t.number: t for t in trials if "replicate_of" not in t.user_attrs}
    replicates = [t for t in trials if "replicate_of" in t.user_attrs]
    assert len(search) == 2 and len(replicates) == 2  # plain LoRA and bin 3, one round each
    seed = study.attrs["spec"]["base"]["seed"]
    for t in replicates:
        original = search[t.user_attrs["replicate_of"]]
        assert t.state.name == "COMPLETE" and t.params == original.params  # the same point
        assert t.user_attrs["seed"] == t.user_attrs["config"]["seed"] == seed + REPLICATE_SEED_OFFSET + 1
        assert original.user_attrs["config"]["seed"] == seed
    assert sorted(t.user_attrs["replicate_of"] for t in replicates) == sorted(search)

    frame = study.frame()
    race = report.race(frame)
    assert race.rounds == 1 and set(race.alive) == {0, 3}
    folded = report.completed(frame)  # the report reads each at its mean over two seeds
    assert len(folded) == 2 and (folded["seeds"] == 2).all()

    again = CliRunner().invoke(app, ["run", str(tmp_path / "grid.toml"), "--model", tiny_model, "--task",
                                     toy_csv, "--epochs", "1", "--batch-size", "32", "--max-length", "32",
                                     "--train-limit", "64", "--eval-limit", "32", "--eval-every", "2",
                                     "--device", "cpu", "--in-process", "--storage", storage,
                                     "--study-name", "toy", "--replicate", "1"])
    assert again.exit_code == 0, again.output
    assert len(study.trials()) == 4  # all rounds done: nothing trained again


def test_a_race_needs_two_contenders_and_its_replicates_are_not_the_searchs_budget(tiny_model, toy_csv,
                                                                                   tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"

    def tpe(n_trials: int):
        res = CliRunner().invoke(app, [
            "run", "--model", tiny_model, "--task", toy_csv, "--epochs", "1", "--batch-size", "32",
            "--max-length", "32", "--train-limit", "64", "--eval-limit", "32", "--device", "cpu",
            "--in-process", "--storage", storage, "--study-name", "tpe", "--n-trials", str(n_trials),
            "--replicate", "1"])
        assert res.exit_code == 0, res.output
        trials = StoredStudy.load(storage, "tpe").trials()
        return [t for t in trials if "replicate_of" not in t.user_attrs], [
            t for t in trials if "replicate_of" in t.user_attrs]

    assert [len(ts) for ts in tpe(1)] == [1, 0]  # plain LoRA alone: nothing to race it against
    assert [len(ts) for ts in tpe(2)] == [2, 2]  # a LoRA+ trial: both raced one round
    # the replicates are no part of the search's budget: one more search trial, and the race is done
    assert [len(ts) for ts in tpe(3)] == [3, 2]


def test_a_negative_replicate_is_one_line():
    res = CliRunner().invoke(app, ["run", "--replicate", "-1"])
    assert res.exit_code == 2 and "replicate must be an integer >= 0" in res.stderr
    assert res.stderr.strip().count("\n") == 0
