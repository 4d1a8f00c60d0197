"""What `report` shows: every loraplus-sweep study of a database (or one model / task), as tables,
with the summaries of the confirm studies among them."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sweep import confirm, report
from sweep.errors import SweepError
from sweep.gridcheck import sweep_vs_grid
from sweep.stored import StoredStudy, trials_frame


@dataclass(frozen=True)
class Report:
    trials: pd.DataFrame  # the search trials
    tables: dict[str, pd.DataFrame]  # sweep.report.tables, and "confirm" when there is one
    confirmations: list[confirm.Confirmation]


def gather(url: str, model: str | None = None, task: str | None = None) -> Report:
    df = trials_frame(url)
    if model is not None:
        df = df[df["model"] == model]
    if task is not None:
        df = df[df["task"] == task]
    if df.empty:
        raise SweepError("no trials to report" + (" for that model/task" if model or task else "")
                         + "; run a sweep first (loraplus-sweep run)")
    names = sorted(df.loc[df["kind"] == "confirm", "study"].unique())
    confirmations = [c for n in names for c in confirm.summaries(StoredStudy.load(url, n))]
    df = df[df["kind"] != "confirm"]
    if df.empty:
        raise SweepError("no search trials to report; run a sweep first (loraplus-sweep run)")
    tables = report.tables(df)
    versus = sweep_vs_grid(df)
    if not versus.empty:  # only where a grid and a sweep of the same trials are both stored
        tables["sweep_vs_grid"] = versus
    if confirmations:
        tables["confirm"] = confirm.table(confirmations)
    return Report(df, tables, confirmations)
