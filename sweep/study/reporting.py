"""What `report` shows: every loraplus-sweep study of a database (or the named ones, or one model /
task), as tables, with the summaries of the confirm studies among them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from sweep.analysis import report
from sweep.analysis.gridcheck import sweep_vs_grid
from sweep.core.errors import SweepError
from sweep.core.schema import short
from sweep.study import confirm
from sweep.study.stored import StoredStudy, studies_attrs, trials_frame


@dataclass(frozen=True)
class Report:
    trials: pd.DataFrame  # the search trials
    tables: dict[str, pd.DataFrame]  # sweep.analysis.report.tables, and "confirm" when there is one
    confirmations: list[confirm.Confirmation]


def gather(url: str, model: str | None = None, task: str | None = None,
           studies: Sequence[str] | None = None) -> Report:
    """The report of every study of `url`, or of the named `studies` (with their confirm studies)."""
    chosen = selected(url, studies) if studies else None
    df = trials_frame(url, chosen)
    if model is not None:
        df = df[df["model"] == model]
    if task is not None:
        df = df[df["task"] == task]
    where = f" in {', '.join(short(n) for n in studies)}" if studies else ""
    if df.empty:
        raise SweepError(f"no trials to report{where}" + (" for that model/task" if model or task else "")
                         + "; run a sweep first (loraplus-sweep run)")
    names = sorted(df.loc[df["kind"] == "confirm", "study"].unique())
    confirmations = [c for n in names for c in confirm.summaries(StoredStudy.load(url, n))]
    df = df[df["kind"] != "confirm"]
    if df.empty:
        raise SweepError(f"no search trials to report{where}; run a sweep first (loraplus-sweep run), or "
                         "name the study a confirm study confirms")
    tables = report.tables(df)
    versus = sweep_vs_grid(df)
    if not versus.empty:  # only where a grid and a sweep of the same trials are both stored
        tables["sweep_vs_grid"] = versus
    if confirmations:
        tables["confirm"] = confirm.table(confirmations)
    return Report(df, tables, confirmations)


LISTED = 10  # stored study names an unknown name's message lists; studies list has them all


def selected(url: str, names: Sequence[str]) -> list[str]:
    """The named studies, each once, then the confirm studies of any of them: what a scoped report
    reads. A name not stored, or another tool's study, is one line."""
    stored = studies_attrs(url)
    ours = [n for n, attrs in stored.items() if attrs is not None]
    for name in names:
        if name not in stored:
            listed = ", ".join(short(n) for n in ours[:LISTED]) or "none"
            more = f" and {len(ours) - LISTED} more" if len(ours) > LISTED else ""
            raise SweepError(f"no study {short(name)} to report (stored: {listed}{more}); "
                             "see loraplus-sweep studies list")
        if stored[name] is None:
            raise SweepError(f"study {short(name)} was not written by loraplus-sweep; report reads only "
                             "the studies that loraplus-sweep makes (loraplus-sweep studies list marks the "
                             "others as foreign)")
    chosen = list(dict.fromkeys(names))
    confirms = [n for n, attrs in stored.items()
                if attrs is not None and attrs.get("confirm_of") in chosen and n not in chosen]
    return chosen + sorted(confirms)
