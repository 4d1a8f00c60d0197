"""Experiment tracking: a sweep's trials as runs of MLflow, Weights & Biases or TensorBoard.

One run per trial, named `<study>/trial-<n>` and grouped by study (an MLflow experiment, a W&B group,
a TensorBoard directory), holding the trial's settings, its evaluation curve as it comes in, and at
its end the final metrics, tokens/s and stop reason. Only the sweep's hooks (sweep.data.hooks) feed it, so
a trial runs the same with or without it. A tracker that fails says so once and is left out from
then on: the results database, not a tracker, is the record of a study, and no trial is lost to one.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from sweep.core.errors import SweepError
from sweep.core.outfiles import prepare_dir, safe_name
from sweep.core.schema import not_one_of
from sweep.data.config import TrialConfig
from sweep.data.hooks import Finished, Hooks
from sweep.data.result import EvalPoint
from sweep.data.spec import TRACKERS
from sweep.study.storage import TIMEOUT_ENV, connect_timeout, mask_secrets

DEFAULT_DIR = "results"
# The module each tracker imports; the package's extra that installs it has the tracker's name.
MODULES = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}
# What a trial stored that a tracker shows at its end (sweep.study.stored.RunningTrial.record).
SUMMARY_ATTRS = ("best_metric", "tokens_per_s", "tokens", "steps", "wall_time_s", "peak_memory_mb")
Values = dict[str, float]  # metrics by name
Tags = dict[str, str]  # words: state, stop reason


class Tracker(Protocol):
    """One tracking backend: a run per trial, opened, fed and closed through these calls."""

    name: str

    def start(self, number: int, params: dict[str, Any]) -> None: ...

    def log(self, number: int, step: int, values: Values) -> None: ...

    def end(self, number: int, state: str, step: int, values: Values, tags: Tags) -> None: ...

    def close(self) -> None:
        """End the runs still open (a sweep stopped by an error)."""


def require(names: tuple[str, ...] | list[str]) -> None:
    """Every named tracker's library is installed: else one line saying how to install it, before
    any trial runs."""
    for name in names:
        if name not in MODULES:
            raise SweepError(not_one_of("--track", name, TRACKERS))
        if importlib.util.find_spec(MODULES[name]) is None:
            raise SweepError(f"--track {name} needs the {MODULES[name]} package: "
                             f"pip install 'loraplus-sweep[{name}]'")


def check(names: tuple[str, ...] | list[str], directory: str | Path | None = None) -> None:
    """Every named tracker installed (require) and its store reachable, before a study is created or
    any trial runs: a tracking server must answer within connect_timeout() seconds, a local store must
    be writable; else one line."""
    require(names)
    where = Path(directory or DEFAULT_DIR)
    for name in dict.fromkeys(names):
        try:
            PROBES[name](where)
        except SweepError:
            raise
        except Exception as e:
            raise SweepError(f"cannot track with {name}: {type(e).__name__}: {_first_line(e)}") from e


def _probe_mlflow(directory: Path) -> None:
    """MLflow's store: a server answers (search_experiments) within the limit, without MLflow's own
    retries, which take minutes on a closed port; a local SQLite store is writable (MLflow would retry
    one it cannot open for a minute and a half)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{prepare_dir(directory).resolve()}/mlflow.db"
    scheme = uri.partition("://")[0].lower()
    if scheme == "sqlite":
        store = Path(uri.partition(":///")[2])
        if not (os.access(store.parent, os.W_OK) and (not store.exists() or os.access(store, os.W_OK))):
            raise SweepError(f"--track mlflow: the MLflow store {store} is read-only here; nothing was "
                             "created (set --track-dir, or MLFLOW_TRACKING_URI, to somewhere writable)")
        return
    if scheme not in ("http", "https"):
        return
    from mlflow import MlflowClient

    limit = connect_timeout()
    # Later requests too wait no longer than the limit, unless MLflow's own setting says otherwise.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(math.ceil(limit)))
    settings = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(math.ceil(limit)), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        if within(limit, lambda: MlflowClient(tracking_uri=uri).search_experiments(max_results=1)):
            return
        failure = "no answer"
    except Exception as e:
        text = str(e).lower()
        if "timeout" not in text and "refused" not in text:
            raise
        failure = "no answer" if "timeout" in text else "refused the connection"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    server = mask_secrets(uri, [uri])
    if failure == "no answer":
        raise SweepError(f"--track mlflow: the tracking server {server} did not answer within {limit:g} "
                         f"s; nothing was created (check MLFLOW_TRACKING_URI, or set {TIMEOUT_ENV} to wait "
                         "longer)")
    raise SweepError(f"--track mlflow: the tracking server {server} refused the connection; nothing was "
                     "created (is it running? check MLFLOW_TRACKING_URI)")


def _probe_wandb(directory: Path) -> None:
    WandbTracker("", directory)  # an online W&B without a login is refused here


def _probe_tensorboard(directory: Path) -> None:
    prepare_dir(directory)


PROBES: dict[str, Callable[[Path], None]] = {
    "mlflow": _probe_mlflow, "wandb": _probe_wandb, "tensorboard": _probe_tensorboard,
}


def within(seconds: float, call: Callable[[], Any], slack: float = 1.0) -> bool:
    """Run `call` in a thread and wait at most `seconds` (plus `slack`) for it: whether it ended in
    time; its exception, if it raised one in time, is raised here. A call still waiting is left to
    itself (a daemon thread, blocked in a socket that the process closes as it exits)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=run, name="connect-check", daemon=True)
    thread.start()
    thread.join(seconds + slack)
    if raised:
        raise raised[0]
    return not thread.is_alive()


def trial_params(cfg: TrialConfig) -> dict[str, Any]:
    """The searched parameters first (eta_B too), then every other setting that is set."""
    out: dict[str, Any] = {"eta_a": cfg.eta_a, "lambda": cfg.lam, "eta_b": cfg.eta_b, "rank": cfg.rank}
    for key, value in cfg.to_dict().items():
        if key not in out and value is not None:
            out[key] = ",".join(str(v) for v in value) if isinstance(value, list) else value
    return out


def eval_values(point: EvalPoint) -> Values:
    return {**{f"eval/{k}": float(v) for k, v in point.metrics.items()},
            "train_loss": float(point.train_loss), "examples": float(point.examples)}


def end_values(trial: Finished) -> tuple[int, Values, Tags]:
    """(last step, final metrics and costs, words) of a finished trial, from what it stored."""
    a = trial.attrs
    values = {f"final/{k}": float(v) for k, v in (a.get("metrics") or {}).items() if _number(v)}
    values.update({k: float(a[k]) for k in SUMMARY_ATTRS if _number(a.get(k))})
    if trial.value is not None:
        values["value"] = float(trial.value)
    tags = {"state": trial.state, "stop_reason": str(a.get("stop_reason") or "")}
    if a.get("stop"):
        tags["stop"] = str(a["stop"])
    return int(a["steps"]) if _number(a.get("steps")) else 0, values, tags


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _run_name(study: str, number: int) -> str:
    return f"{study}/trial-{number}"


class MLflowTracker:
    """Runs in the MLflow experiment named after the study: MLFLOW_TRACKING_URI, else a SQLite store
    in the tracking directory (MLflow's own default backend; its file store is retired)."""

    name = "mlflow"

    def __init__(self, study: str, directory: Path) -> None:
        from mlflow import MlflowClient

        # Its database migrations log at INFO on every new store.
        for logger in ("mlflow", "alembic"):
            logging.getLogger(logger).setLevel(logging.WARNING)
        self.study = study
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:
            uri = f"sqlite:///{prepare_dir(directory).resolve() / 'mlflow.db'}"
            artifacts = (directory.resolve() / "mlartifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment = self._experiment(study, artifacts)
        self.runs: dict[int, str] = {}

    def _experiment(self, name: str, artifacts: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except Exception:  # another worker created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start(self, number: int, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment, run_name=_run_name(self.study, number),
                                     tags={"study": self.study, "trial": str(number)})
        self.runs[number] = run.info.run_id
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def log(self, number: int, step: int, values: Values) -> None:
        from mlflow.entities import Metric

        if number in self.runs:
            now = _millis()
            metrics = [Metric(k, v, now, step) for k, v in values.items()]
            self.client.log_batch(self.runs[number], metrics=metrics)

    def end(self, number: int, state: str, step: int, values: Values, tags: Tags) -> None:
        from mlflow.entities import Metric, RunTag

        run = self.runs.pop(number, None)
        if run is None:
            return
        now = _millis()
        self.client.log_batch(run, metrics=[Metric(k, v, now, step) for k, v in values.items()],
                              tags=[RunTag(k, v[:5000]) for k, v in tags.items()])
        # A pruned trial ended early, by the pruner or because it diverged: its result stands.
        self.client.set_terminated(run, {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED"))

    def close(self) -> None:
        for run in self.runs.values():
            self.client.set_terminated(run, "FAILED")
        self.runs.clear()


class WandbTracker:
    """Runs of the W&B project WANDB_PROJECT (else loraplus-sweep), grouped by study; WANDB_MODE,
    WANDB_DIR (else the tracking directory), WANDB_ENTITY and a login work as for any W&B run."""

    name = "wandb"

    def __init__(self, study: str, directory: Path) -> None:
        import wandb

        self.wandb, self.study = wandb, study
        # Set only where the environment does not: W&B's own variables win.
        self.where: dict[str, Any] = {}
        if not os.environ.get("WANDB_PROJECT"):
            self.where["project"] = "loraplus-sweep"
        if not os.environ.get("WANDB_DIR"):
            self.where["dir"] = str(prepare_dir(directory))
        if os.environ.get("WANDB_MODE", "online") not in ("offline", "dryrun", "disabled"):
            # A missing API key now, in one line, rather than at the first trial.
            wandb.login(verify=False)
        # console off: a sweep's stderr is its progress display, shared by every trial.
        self.settings = wandb.Settings(silent=True, console="off", save_code=False)
        self.runs: dict[int, Any] = {}

    def start(self, number: int, params: dict[str, Any]) -> None:
        self.runs[number] = self.wandb.init(
            **self.where, group=self.study, name=_run_name(self.study, number), job_type="trial",
            config=params, reinit="create_new", settings=self.settings,
        )

    def log(self, number: int, step: int, values: Values) -> None:
        if number in self.runs:
            self.runs[number].log(values, step=step)

    def end(self, number: int, state: str, step: int, values: Values, tags: Tags) -> None:
        run = self.runs.pop(number, None)
        if run is None:
            return
        run.summary.update({**values, **tags})
        run.finish(exit_code=0 if state in ("COMPLETE", "PRUNED") else 1)

    def close(self) -> None:
        for run in self.runs.values():
            run.finish(exit_code=1)
        self.runs.clear()


class TensorBoardTracker:
    """Event files in <directory>/tensorboard/<study>/trial-<n>: scalars, the settings and final
    metrics for the HParams dashboard, and the stop reason as text."""

    name = "tensorboard"

    def __init__(self, study: str, directory: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer_class = SummaryWriter
        self.root = prepare_dir(directory / "tensorboard" / safe_name(study))
        self.runs: dict[int, tuple[Any, dict[str, Any]]] = {}

    def start(self, number: int, params: dict[str, Any]) -> None:
        writer = self.writer_class(log_dir=str(self.root / f"trial-{number}"))
        self.runs[number] = writer, params

    def log(self, number: int, step: int, values: Values) -> None:
        if number in self.runs:
            writer = self.runs[number][0]
            for k, v in values.items():
                writer.add_scalar(k, v, step)

    def end(self, number: int, state: str, step: int, values: Values, tags: Tags) -> None:
        from torch.utils.tensorboard.summary import hparams

        if number not in self.runs:
            return
        writer, params = self.runs.pop(number)
        try:
            for k, v in values.items():
                writer.add_scalar(k, v, step)
            for k, v in tags.items():
                writer.add_text(k, v, step)
            # Written into this trial's own directory (SummaryWriter.add_hparams would make another).
            finite = {k: v for k, v in values.items() if math.isfinite(v)}
            for summary in hparams(params, finite):
                writer.file_writer.add_summary(summary)
        finally:
            writer.close()

    def close(self) -> None:
        for writer, _ in self.runs.values():
            writer.close()
        self.runs.clear()


BACKENDS: dict[str, Callable[[str, Path], Tracker]] = {
    "mlflow": MLflowTracker, "wandb": WandbTracker, "tensorboard": TensorBoardTracker,
}


class Tracking:
    """The sweep's hooks as tracker calls. A tracker's first failure is one warning, after which it
    is skipped; the trial, and every other tracker, go on."""

    def __init__(self, trackers: list[Tracker], warn: Callable[[str], None]) -> None:
        self.trackers, self.warn = trackers, warn
        self.broken: set[str] = set()
        self.locks = {t.name: threading.Lock() for t in trackers}  # workers run trials in threads

    def hooks(self) -> Hooks:
        if not self.trackers:
            return Hooks()
        return Hooks(trial_start=self.trial_start, eval=self.eval, trial_end=self.trial_end)

    def trial_start(self, number: int, cfg: TrialConfig) -> None:
        self._each("start", number, trial_params(cfg))

    def eval(self, number: int, point: EvalPoint) -> None:
        self._each("log", number, point.step, eval_values(point))

    def trial_end(self, trial: Finished) -> None:
        step, values, tags = end_values(trial)
        self._each("end", trial.number, trial.state, step, values, tags)

    def close(self) -> None:
        self._each("close")

    def _each(self, method: str, *args: Any) -> None:
        for tracker in self.trackers:
            with self.locks[tracker.name]:
                if tracker.name in self.broken:
                    continue
                try:
                    getattr(tracker, method)(*args)
                except Exception as e:
                    self.broken.add(tracker.name)
                    self.warn(f"warning: tracking with {tracker.name} failed and stops for this sweep "
                              f"({type(e).__name__}: {_first_line(e)}); the trials go on and are stored")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@contextmanager
def tracking(names: tuple[str, ...], study: str, directory: str | Path | None = None,
             warn: Callable[[str], None] = _stderr) -> Iterator[Hooks]:
    """Hooks that give every trial of `study` a run in each named tracker; runs left open are ended
    on the way out. A missing library or a store that cannot be opened is one line, before any trial."""
    require(names)
    where = Path(directory or DEFAULT_DIR)
    trackers: list[Tracker] = []
    for name in dict.fromkeys(names):  # each once, in the order given
        try:
            trackers.append(BACKENDS[name](study, where))
        except SweepError:
            raise
        except Exception as e:
            raise SweepError(f"cannot track with {name}: {type(e).__name__}: {_first_line(e)}") from e
    tracked = Tracking(trackers, warn)
    try:
        yield tracked.hooks()
    finally:
        tracked.close()


def _first_line(e: Exception, limit: int = 200) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _millis() -> int:
    return int(time.time() * 1000)
