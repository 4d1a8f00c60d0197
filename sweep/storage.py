"""The one place that turns a URL into an Optuna storage, and stored trials into report rows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from sweep.errors import SweepError

# Trial user attributes a report reads (set by sweep.study); the rest is kept for provenance.
ROW_ATTRS = ("model", "task", "metric_name", "init", "tokens", "wall_time_s", "stop_reason", "steps")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for every message and log."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage for a SQLAlchemy URL (SQLite by default; PostgreSQL across machines).

    With create=False a missing SQLite file is an error instead of a new empty database.
    """
    path = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        if not create and not path.is_file():
            raise SweepError(f"no results database at {path}; run a sweep first (loraplus-sweep run)")
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SweepError(f"cannot create the directory for {path}: {e.strerror}") from e
        # Wait for a busy writer instead of failing with "database is locked".
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif "://" not in url:
        raise SweepError(f"storage {mask_url(url)!r} is not a database URL (e.g. sqlite:///results/x.db)")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs or None)
    except Exception as e:  # SQLAlchemy raises many types for a URL it cannot open; all mean the same
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SweepError(f"cannot open storage {mask_url(url)}: {mask_url(first)}") from e


def trial_row(study_name: str, t: FrozenTrial) -> dict[str, Any]:
    attrs = t.user_attrs
    return {
        "study": study_name,
        "number": t.number,
        "state": t.state.name,
        "value": t.value if t.value is not None else attrs.get("metric", float("nan")),
        "eta_a": t.params.get("eta_a"),
        "lambda": t.params.get("lambda"),
        "rank": t.params.get("rank"),
        **{k: attrs.get(k) for k in ROW_ATTRS},
    }


def trials_frame(storage: optuna.storages.BaseStorage, study_names: list[str] | None = None) -> pd.DataFrame:
    """One row per trial of every (or the named) studies: the frame that sweep.report works on."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if study_names is not None and summary.study_name not in study_names:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        model, task = summary.user_attrs.get("model"), summary.user_attrs.get("task")
        for t in study.get_trials(deepcopy=False):
            row = trial_row(summary.study_name, t)
            row["model"] = row["model"] or model
            row["task"] = row["task"] or task
            row["metric_name"] = row["metric_name"] or summary.user_attrs.get("metric_name")
            rows.append(row)
    columns = ["study", "number", "state", "value", "eta_a", "lambda", "rank", *ROW_ATTRS]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("tokens", "wall_time_s"):
        df[col] = pd.to_numeric(df[col]).fillna(0)
    return df


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
