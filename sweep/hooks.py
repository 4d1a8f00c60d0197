"""Progress callbacks from a running sweep to whatever shows it; the sweep knows nothing of rich."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sweep.config import TrialConfig
from sweep.result import EvalPoint


@dataclass(frozen=True)
class Finished:
    """How a stored trial ended, as a progress display needs it."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hooks:
    """All optional; each takes the trial's number first."""

    trial_start: Callable[[int, TrialConfig], None] | None = None
    step: Callable[[int, int, int, float], None] | None = None  # (number, step, total, smoothed loss)
    eval: Callable[[int, EvalPoint], None] | None = None
    trial_end: Callable[[Finished], None] | None = None
