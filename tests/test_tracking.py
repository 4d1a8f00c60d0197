"""--track mlflow|wandb|tensorboard: one run per trial in each tracker, read back with the trackers' own
readers; a tracker that fails mid-sweep warns once and costs no trial."""

import json
import sys
from pathlib import Path

import optuna
import pytest
from commands import invoke

from sweep.data.spec import load_spec
from sweep.study.stored import StoredStudy


def toy_run(model: str, task: str, db: str) -> list:
    return ["--model", model, "--task", task, "--eta-a", "1e-3:1e-2", "--lambda", "1:64", "--rank", "2,4",
            "--epochs", 1, "--train-limit", 96, "--eval-limit", 32, "--max-length", 32, "--batch-size", 32,
            "--eval-every", 1, "--sampler", "random",
            "--pruner", "none", "--device", "cpu", "--storage", db, "--study-name", "toy", "--in-process"]


@pytest.fixture(autouse=True)
def _tracker_env(monkeypatch):
    """Each tracker at its defaults, offline."""
    for var in ("MLFLOW_TRACKING_URI", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_model, toy_csv):
    """Two trials of the study 'toy', each tracked by MLflow, W&B (offline) and TensorBoard; the
    tracking directory and the stored trials."""
    root = tmp_path_factory.mktemp("tracked")
    db = f"sqlite:///{root}/loraplus.db"
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY"):
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        r = invoke("run", *toy_run(tiny_model, toy_csv, db), "--n-trials", 2, "--track", "mlflow",
                   "--track", "wandb", "--track", "tensorboard", "--track-dir", root / "track")
    assert r.exit_code == 0, r.output
    assert "tracking with" not in r.stderr and "wandb" not in r.stderr.lower()
    trials = optuna.load_study(study_name="toy", storage=db).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    return root / "track", trials, db


def searched(t) -> dict:
    return {"eta_a": t.params["eta_a"], "lambda": t.params["lambda"],
            "eta_b": t.params["lambda"] * t.params["eta_a"], "rank": t.params["rank"]}


def test_mlflow_has_a_run_per_trial_with_params_curve_and_result(tracked):
    from mlflow import MlflowClient

    track, trials, _ = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{track}/mlflow.db")
    experiment = client.get_experiment_by_name("toy")  # the study's name
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"toy/trial-0", "toy/trial-1"}
    for t in trials:
        run, a = runs[f"toy/trial-{t.number}"], t.user_attrs
        params = {k: float(run.data.params[k]) for k in ("eta_a", "lambda", "eta_b", "rank")}
        assert params == pytest.approx(searched(t))
        assert run.data.params["epochs"] == "1.0" and run.data.params["batch_size"] == "32"
        curve = client.get_metric_history(run.info.run_id, f"eval/{a['metric_name']}")
        assert [[m.step, m.value] for m in sorted(curve, key=lambda m: m.step)] == a["history"]
        assert len(a["history"]) == 3  # an evaluation at every step
        assert run.data.metrics[f"final/{a['metric_name']}"] == pytest.approx(a["metric"])
        assert run.data.metrics["tokens_per_s"] == pytest.approx(a["tokens_per_s"])
        assert run.data.metrics["value"] == pytest.approx(t.value)
        assert run.data.tags["stop_reason"] == a["stop_reason"] == "completed"
        assert run.data.tags["state"] == "COMPLETE" and run.info.status == "FINISHED"


def wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (.wandb): a LevelDB-style log of 32 KiB blocks after a
    7-byte header, each record a wandb protobuf Record, split into chunks across blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, records, pending = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(path: Path) -> dict:
    def items(update) -> dict:
        return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in update}

    run = {"history": [], "summary": {}}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.update(name=r.run.display_name, group=r.run.run_group, project=r.run.project,
                       config=items(r.run.config.update))
        elif kind == "history":
            run["history"].append(items(r.history.item))
        elif kind == "summary":
            run["summary"].update(items(r.summary.update))
        elif kind == "exit":
            run["exit_code"] = r.exit.exit_code
    return run


def test_wandb_offline_run_per_trial_with_group_config_history_and_summary(tracked):
    track, trials, _ = tracked
    files = sorted(track.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2
    runs = {r["name"]: r for r in map(wandb_run, files)}
    assert set(runs) == {"toy/trial-0", "toy/trial-1"}
    for t in trials:
        run, a = runs[f"toy/trial-{t.number}"], t.user_attrs
        assert run["group"] == "toy" and run["project"] == "loraplus-sweep"
        config = {k: run["config"][k] for k in ("eta_a", "lambda", "eta_b", "rank")}
        assert config == pytest.approx(searched(t))
        key = f"eval/{a['metric_name']}"
        assert [[h["_step"], h[key]] for h in run["history"] if key in h] == a["history"]
        assert run["summary"]["tokens_per_s"] == pytest.approx(a["tokens_per_s"])
        assert run["summary"][f"final/{a['metric_name']}"] == pytest.approx(a["metric"])
        assert run["summary"]["stop_reason"] == "completed" and run["exit_code"] == 0


def test_tensorboard_writes_a_directory_per_trial_under_the_study(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    track, trials, _ = tracked
    assert sorted(p.name for p in (track / "tensorboard" / "toy").iterdir()) == ["trial-0", "trial-1"]
    for t in trials:
        a = t.user_attrs
        events = EventAccumulator(str(track / "tensorboard" / "toy" / f"trial-{t.number}"))
        events.Reload()
        curve = events.Scalars(f"eval/{a['metric_name']}")
        assert [e.step for e in curve] == [s for s, _ in a["history"]]
        assert [e.value for e in curve] == pytest.approx([m for _, m in a["history"]], abs=1e-6)
        assert events.Scalars("tokens_per_s")[0].value == pytest.approx(a["tokens_per_s"], rel=1e-6)
        [text] = events.Tensors("stop_reason/text_summary")
        assert text.tensor_proto.string_val == [b"completed"]
        hparams = plugin_data_pb2.HParamsPluginData()
        hparams.ParseFromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        shown = {k: v.number_value for k, v in hparams.session_start_info.hparams.items()
                 if k in ("eta_a", "lambda", "eta_b", "rank")}
        assert shown == pytest.approx(searched(t))


def test_a_tracker_failing_mid_sweep_warns_once_and_every_trial_is_stored(tmp_path, tiny_model, toy_csv):
    study_dir = tmp_path / "track" / "tensorboard" / "toy"
    study_dir.mkdir(parents=True)
    (study_dir / "trial-0").write_text("not a directory")  # the first trial's run cannot be opened
    toml = tmp_path / "tracked.toml"
    toml.write_text(f'[study]\ntrack = ["tensorboard"]\ntrack_dir = "{tmp_path / "track"}"\n')
    db = f"sqlite:///{tmp_path}/loraplus.db"
    r = invoke("run", toml, *toy_run(tiny_model, toy_csv, db), "--n-trials", 2)
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if "tracking with" in line]
    assert len(warnings) == 1 and "tracking with tensorboard failed" in warnings[0], r.stderr
    trials = optuna.load_study(study_name="toy", storage=db).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert not (study_dir / "trial-1").exists()  # skipped after the failure


def test_a_missing_tracker_library_is_one_line_before_any_trial(tmp_path, tiny_model, toy_csv, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if mlflow-skinny were not installed
    db = f"sqlite:///{tmp_path}/loraplus.db"
    r = invoke("run", *toy_run(tiny_model, toy_csv, db), "--n-trials", 1, "--track", "mlflow")
    assert r.exit_code == 2, r.output
    assert "--track mlflow needs the mlflow package: pip install 'loraplus-sweep[mlflow]'" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and not (tmp_path / "loraplus.db").exists()
    bad = invoke("run", *toy_run(tiny_model, toy_csv, db), "--track", "neptune")
    assert bad.exit_code == 2 and "track must name mlflow, wandb, tensorboard; got 'neptune'" in bad.stderr
    assert not (tmp_path / "loraplus.db").exists()


def test_wandb_online_without_a_login_is_one_line_before_any_trial(tmp_path, tiny_model, toy_csv,
                                                                   monkeypatch):
    import wandb

    wandb.teardown()  # W&B keeps its settings (offline, from the runs above) per process
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    db = f"sqlite:///{tmp_path}/loraplus.db"
    r = invoke("run", *toy_run(tiny_model, toy_csv, db), "--n-trials", 1, "--track", "wandb",
               "--track-dir", tmp_path / "track")
    assert r.exit_code == 2, r.output
    assert "cannot track with wandb: UsageError: No API key configured" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error:")
    assert not (tmp_path / "loraplus.db").exists()  # checked before the study is created


def test_a_worker_tracks_by_its_own_command_line_not_the_stored_study(tracked):
    _, _, db = tracked
    study = StoredStudy.load(db, "toy")
    assert "track" not in study.attrs["spec"] and "track_dir" not in study.attrs["spec"]
    assert study.joined_spec({}).track == ()
    assert study.joined_spec({"track": ("wandb",), "track_dir": "elsewhere"}).track == ("wandb",)


def test_tracking_is_not_part_of_a_studys_identity(tmp_path):
    plain = load_spec(None, {"model": "m", "task": "t"})
    tracked = load_spec(None, {"model": "m", "task": "t", "track": ("mlflow", "wandb"), "track_dir": "x"})
    assert tracked.track == ("mlflow", "wandb") and tracked.study_name == plain.study_name
    toml = tmp_path / "s.toml"
    toml.write_text('[study]\nmodel = "m"\ntask = "t"\ntrack = ["tensorboard"]\n')
    assert load_spec(toml).study_name == plain.study_name
