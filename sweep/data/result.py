"""What a trial returns: its metric, how it got there, and what it cost."""

from __future__ import annotations

import dataclasses
import enum
import math
import platform
from dataclasses import dataclass
from typing import Any

from sweep.data.config import TrialConfig


class StopReason(enum.Enum):
    """Why training ended. A diverged run is a result about its learning rates (scored at its worst);
    a stopped one was ended by its on_eval callback (the study's pruner)."""

    COMPLETED = "completed"
    DIVERGED = "diverged"
    STOPPED = "stopped"


@dataclass(frozen=True)
class EvalPoint:
    step: int
    examples: int
    metric: float
    metrics: dict[str, float]
    train_loss: float


@dataclass(frozen=True)
class TrialResult:
    config: TrialConfig
    metric_name: str
    metric: float  # the main metric at the end of training (or when stopped)
    best_metric: float
    best_step: int
    metrics: dict[str, float]  # every metric of the task at the end
    history: tuple[EvalPoint, ...]
    steps: int
    examples: int
    tokens: int  # real training tokens, padding excluded
    wall_time_s: float  # everything: loading, tokenizing, training, evaluating
    train_time_s: float  # optimizer steps only
    tokens_per_s: float
    peak_memory_mb: float
    stop: StopReason
    stop_reason: str  # the same in words, for people: "diverged: non-finite loss at step 12"
    device: str
    versions: dict[str, str]
    # How far each optimizer group moved: the L2 norm of (final - initial) over its parameters. A
    # group at 0 did not train (a frozen head would show here).
    update_norms: dict[str, float] = dataclasses.field(default_factory=dict)
    kind: str = "classification"  # or causal-lm (sweep.engine.kinds)
    precision: str = "fp32"  # what the forward passes ran in: fp32, or bf16 autocast
    base: str = "fp32"  # the frozen base's form, auto resolved: fp32, bf16, fp16, 4bit or 8bit
    setup_time_s: float = 0.0  # loading the task and the model, before the first step
    eval_time_s: float = 0.0  # the evaluations
    # The standard error of `metric` over the examples it was scored on (a bootstrap, see
    # sweep.core.metrics.bootstrap); NaN for a diverged run.
    metric_se: float = math.nan
    # Per-example outcomes of that final evaluation (sweep.core.outcomes), to pair two trials scored on the
    # same examples; None for a diverged run.
    outcomes: dict | None = None

    @property
    def diverged(self) -> bool:
        return self.stop is StopReason.DIVERGED

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["config"] = self.config.to_dict()
        out["stop"] = self.stop.value
        out["history"] = [dataclasses.asdict(p) for p in self.history]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        return cls(**{
            **data,
            "config": TrialConfig.from_dict(data["config"]),
            "stop": StopReason(data["stop"]),
            "history": tuple(EvalPoint(**p) for p in data["history"]),
        })


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    import sweep

    return {
        "loraplus_sweep": sweep.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
