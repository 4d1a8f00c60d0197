"""TrialConfig: everything one LoRA+ fine-tune needs, frozen and validated once."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from typing import Any

from sweep.errors import SweepError

INIT_SCHEMES = ("standard", "reversed")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")

# The offline default: a pretrained MiniLM-L6 encoder and a real labelled task shipped by packages.
DEFAULT_MODEL = "minilm-l6"
DEFAULT_TASK = "rotten-tomatoes"

# `lam` is spelled `lambda` in dicts, JSON and Optuna (it is a Python keyword).
_RENAMES = {"lam": "lambda"}
_UNRENAMES = {v: k for k, v in _RENAMES.items()}


@dataclass(frozen=True)
class TrialConfig:
    """One trial. eta_B = lam * eta_a; lam = 1 is plain LoRA.

    alpha None means alpha = rank (scaling 1, as in the LoRA+ GLUE runs); target_modules None means
    the architecture's default (query, value for BERT/RoBERTa). `init` is `standard` (PEFT: A random,
    B zero) or `reversed` (B random, A zero, as in the LoRA+ authors' code). use_dora and use_rslora
    are PEFT's DoRA (a trained magnitude per output column, at eta_a) and rank-stabilised scaling
    alpha / sqrt(rank). head_lr None means the
    classifier head trains at eta_a. max_steps, when set, overrides epochs. eval_every 0 evaluates at
    the end of each epoch (and always at the end). train_limit / eval_limit cap the examples used.
    """

    model: str = DEFAULT_MODEL
    task: str = DEFAULT_TASK
    eta_a: float = 5e-4
    lam: float = 16.0
    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    init: str = "standard"
    use_dora: bool = False
    use_rslora: bool = False
    embedding_lr: float = 1e-6
    head_lr: float | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    batch_size: int = 32
    max_length: int = 128
    epochs: float = 3.0
    max_steps: int | None = None
    warmup_ratio: float = 0.06
    schedule: str = "linear"
    seed: int = 0
    eval_every: int = 0
    precision: str = "auto"
    device: str = "auto"
    train_limit: int | None = None
    eval_limit: int | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        # Normalise sequences so that equal configs compare and hash equal whatever their source.
        if self.target_modules is not None:
            mods = self.target_modules
            if isinstance(mods, str):
                mods = [m.strip() for m in mods.split(",") if m.strip()]
            object.__setattr__(self, "target_modules", tuple(mods))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _validate(self)

    @property
    def eta_b(self) -> float:
        return self.lam * self.eta_a

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[_RENAMES.get(f.name, f.name)] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in data.items():
            name = _UNRENAMES.get(key, key)
            if name not in known or key in _RENAMES:
                raise SweepError(f"unknown trial setting {key!r}")
            kwargs[name] = value
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrialConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> TrialConfig:
        return dataclasses.replace(self, **changes)


def _validate(c: TrialConfig) -> None:
    def positive(name: str, value: float | None, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if value is None or not math.isfinite(value) or value <= 0:
            raise SweepError(f"{_RENAMES.get(name, name)} must be a finite number > 0, got {value!r}")

    positive("eta_a", c.eta_a)
    positive("lam", c.lam)
    positive("embedding_lr", c.embedding_lr)
    positive("head_lr", c.head_lr, allow_none=True)
    positive("alpha", c.alpha, allow_none=True)
    positive("epochs", c.epochs)
    positive("max_grad_norm", c.max_grad_norm, allow_none=True)
    for name in ("rank", "batch_size", "max_length"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SweepError(f"{name} must be an integer >= 1, got {value!r}")
    for name in ("max_steps", "train_limit", "eval_limit"):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise SweepError(f"{name} must be an integer >= 1 (or unset), got {value!r}")
    if not isinstance(c.eval_every, int) or c.eval_every < 0:
        raise SweepError(f"eval_every must be an integer >= 0, got {c.eval_every!r}")
    if not 0 <= c.dropout < 1:
        raise SweepError(f"dropout must be in [0, 1), got {c.dropout!r}")
    if not 0 <= c.warmup_ratio < 1:
        raise SweepError(f"warmup_ratio must be in [0, 1), got {c.warmup_ratio!r}")
    if c.weight_decay < 0:
        raise SweepError(f"weight_decay must be >= 0, got {c.weight_decay!r}")
    if len(c.betas) != 2 or not all(0 <= b < 1 for b in c.betas):
        raise SweepError(f"betas must be two numbers in [0, 1), got {c.betas!r}")
    for name, allowed in (("init", INIT_SCHEMES), ("schedule", SCHEDULES), ("precision", PRECISIONS)):
        if getattr(c, name) not in allowed:
            raise SweepError(f"{name} must be one of {', '.join(allowed)}; got {getattr(c, name)!r}")
    if c.device != "auto" and c.device != "cpu" and not c.device.startswith("cuda"):
        raise SweepError(f"device must be auto, cpu, cuda or cuda:N; got {c.device!r}")
    if c.target_modules is not None and not c.target_modules:
        raise SweepError("target_modules must name at least one module")
    if not c.model:
        raise SweepError("model must be a hub name or a local directory")
    if not c.task:
        raise SweepError("task must be a task name or a CSV/JSONL file")
