"""TrialConfig: everything one LoRA+ fine-tune needs, frozen and validated once."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any

from sweep.errors import SweepError
from sweep.schema import RENAMES, conform, display_name, short

INIT_SCHEMES = ("standard", "reversed")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")

# The offline default: a pretrained MiniLM-L6 encoder and a real labelled task shipped by packages.
DEFAULT_MODEL = "minilm-l6"
DEFAULT_TASK = "rotten-tomatoes"

REMOTE_CODE_ONLY_FROM_FLAG = (
    "trust_remote_code cannot come from a file or a stored study; pass --trust-remote-code on the "
    "command line to run a model's own code"
)

_UNRENAMES = {v: k for k, v in RENAMES.items()}


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
        # "query,value" (a flag) and ["query", "value"] (a file) are the same setting.
        if isinstance(self.target_modules, str):
            mods = [m.strip() for m in self.target_modules.split(",") if m.strip()]
            object.__setattr__(self, "target_modules", tuple(mods))
        # Types first (every source: flags, TOML, JSON, a stored study), then values.
        problems = conform(self)
        if problems:
            raise SweepError("; ".join(problems))
        _validate(self)

    @property
    def eta_b(self) -> float:
        return self.lam * self.eta_a

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    def to_dict(self) -> dict[str, Any]:
        """Every setting but trust_remote_code: that is a permission of the machine that runs the
        trial (a command-line flag), never part of a stored study, a result or an exported file."""
        out = {}
        for f in fields(self):
            if f.name == "trust_remote_code":
                continue
            value = getattr(self, f.name)
            out[display_name(f.name)] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """A config from a file or a database: untrusted, so it can never turn remote code on (an
        explicit false, as older files hold, is accepted and means nothing)."""
        if not isinstance(data, dict):
            raise SweepError(f"a trial config must be a JSON object of settings, got {short(data)}")
        known = {f.name for f in fields(cls)} - {"trust_remote_code"}
        kwargs = {}
        for key, value in data.items():
            if key == "trust_remote_code":
                if value is not False:
                    raise SweepError(REMOTE_CODE_ONLY_FROM_FLAG)
                continue
            name = _UNRENAMES.get(key, key)
            if name not in known or key in RENAMES:
                raise SweepError(f"unknown trial setting {short(key)}")
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
    """Every value problem at once, in one line (types are checked before, by the schema)."""
    problems: list[str] = []

    def positive(name: str, value: float | None) -> None:
        if value is not None and (not math.isfinite(value) or value <= 0):
            problems.append(f"{display_name(name)} must be a finite number > 0, got {value!r}")

    for name in ("eta_a", "lam", "embedding_lr", "head_lr", "alpha", "epochs", "max_grad_norm"):
        positive(name, getattr(c, name))
    for name in ("rank", "batch_size", "max_length"):
        if getattr(c, name) < 1:
            problems.append(f"{name} must be an integer >= 1, got {getattr(c, name)!r}")
    for name in ("max_steps", "train_limit", "eval_limit"):
        value = getattr(c, name)
        if value is not None and value < 1:
            problems.append(f"{name} must be an integer >= 1 (or unset), got {value!r}")
    if c.eval_every < 0:
        problems.append(f"eval_every must be an integer >= 0, got {c.eval_every!r}")
    if not 0 <= c.seed < 2**32:
        problems.append(f"seed must be an integer from 0 to 2**32 - 1, got {short(c.seed)}")
    if not 0 <= c.dropout < 1:
        problems.append(f"dropout must be in [0, 1), got {c.dropout!r}")
    if not 0 <= c.warmup_ratio < 1:
        problems.append(f"warmup_ratio must be in [0, 1), got {c.warmup_ratio!r}")
    if not c.weight_decay >= 0 or not math.isfinite(c.weight_decay):
        problems.append(f"weight_decay must be a finite number >= 0, got {c.weight_decay!r}")
    if not all(0 <= b < 1 for b in c.betas):
        problems.append(f"betas must be two numbers in [0, 1), got {list(c.betas)!r}")
    for name, allowed in (("init", INIT_SCHEMES), ("schedule", SCHEDULES), ("precision", PRECISIONS)):
        if getattr(c, name) not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}; got {short(getattr(c, name))}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", c.device):
        problems.append(f"device must be auto, cpu, cuda or cuda:N; got {short(c.device)}")
    if c.target_modules is not None and not all(m.strip() for m in c.target_modules):
        problems.append(f"target_modules must be module names, got {short(list(c.target_modules))}")
    elif c.target_modules is not None and not c.target_modules:
        problems.append("target_modules must name at least one module")
    if not c.model.strip():
        problems.append("model must be a hub name or a local directory")
    if not c.task.strip():
        problems.append("task must be a task name or a CSV/JSONL file")
    for name in ("model", "task", "text_column", "text_pair_column", "label_column"):
        value = getattr(c, name)
        if value is not None and any(ch in value for ch in "\0\n\r"):
            problems.append(f"{name} must not hold NUL or line breaks, got {short(value)}")
    if problems:
        raise SweepError("; ".join(problems))
