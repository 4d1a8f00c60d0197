"""A report written to a folder: every table as csv, markdown and json, and the plots."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.analysis import plots
from sweep.analysis.report import completed, to_format
from sweep.core.errors import SweepError
from sweep.core.outfiles import prepare_dir, safe_name, write_text
from sweep.core.schema import short


def write_table(frame: pd.DataFrame, out_dir: Path, name: str) -> list[Path]:
    """The table as NAME.csv, NAME.md and NAME.json in out_dir."""
    return [write_text(Path(out_dir) / f"{name}.{suffix}", to_format(frame, fmt))
            for fmt, suffix in (("csv", "csv"), ("markdown", "md"), ("json", "json"))]


def write(df: pd.DataFrame | None, frames: dict[str, pd.DataFrame], out_dir: Path,
          confirmations: list[Any] = ()) -> list[Path]:
    """Every table, a heatmap per study of `df` (the trials frame), the lambda curves, the parameter
    importance of each study with enough trials, and the convergence plot of each confirmation
    (sweep.study.confirm.Confirmation) that has curves."""
    out_dir = prepare_dir(Path(out_dir))
    written = [path for name, frame in frames.items() for path in write_table(frame, out_dir, name)]
    with _plots_in(out_dir):
        for study, rows in (df.groupby("study", sort=True) if df is not None else ()):
            if not completed(rows).empty:
                written.append(plots.plot_heatmap(rows, out_dir / f"heatmap-{safe_name(str(study))}.png"))
        if "lambda_curve" in frames and not frames["lambda_curve"].empty:
            path = out_dir / "lambda_curves.png"
            written.append(plots.plot_lambda_curves(frames["lambda_curve"], path, df))
        shares = frames.get("importance")
        for study, rows in (shares.groupby("study", sort=True) if shares is not None else ()):
            if rows["interactions"].notna().any():  # a study with too few trials has its answer, no plot
                path = out_dir / f"importance-{safe_name(str(study))}.png"
                written.append(plots.plot_importance(rows, path))
        for c in confirmations:
            if c.curves.get("lora"):
                written.append(plots.plot_convergence(c, out_dir / f"convergence-{safe_name(c.label)}.png"))
    return written


@contextlib.contextmanager
def _plots_in(out_dir: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise SweepError(f"cannot write a plot in {short(str(out_dir))}: {e.strerror or e}") from e
