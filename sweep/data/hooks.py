"""Progress callbacks from a running sweep to whatever shows it; the sweep knows nothing of rich."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sweep.data.config import TrialConfig
from sweep.data.result import EvalPoint


@dataclass(frozen=True)
class Finished:
    """How a stored trial ended, as a progress display needs it."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)
    # What the trial stored (sweep.study.stored.RunningTrial.record and its notes): final metrics, tokens/s,
    # stop reason; for a failed trial only its notes.
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hooks:
    """All optional; each takes the trial's number first."""

    trial_start: Callable[[int, TrialConfig], None] | None = None
    step: Callable[[int, int, int, float], None] | None = None  # (number, step, total, smoothed loss)
    eval: Callable[[int, EvalPoint], None] | None = None
    trial_end: Callable[[Finished], None] | None = None


def chain(*hooks: Hooks) -> Hooks:
    """One Hooks that calls each of `hooks` in turn (a progress display and experiment trackers)."""

    def each(name: str) -> Callable[..., None] | None:
        calls = [getattr(h, name) for h in hooks if getattr(h, name) is not None]
        if not calls:
            return None

        def call(*args: Any) -> None:
            for c in calls:
                c(*args)

        return call

    return Hooks(**{name: each(name) for name in ("trial_start", "step", "eval", "trial_end")})
