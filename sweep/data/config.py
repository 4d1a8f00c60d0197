"""TrialConfig: everything one LoRA+ fine-tune needs, frozen and validated once."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sweep.core.errors import SweepError
from sweep.core.schema import RENAMES, conform_fields, display_name, not_one_of, short

INIT_SCHEMES = ("standard", "reversed")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
BASE_DTYPES = ("auto", "fp32", "bf16", "fp16")
QUANTIZATIONS = ("none", "4bit", "8bit")
KINDS = ("auto", "classification", "causal-lm")
EVAL_SPLITS = ("validation", "test")
# Settings added after studies were first stored: a study's identity (StudySpec.definition_hash)
# leaves them out while at their defaults, so an existing study keeps its name.
LATER_DEFAULTS = {"kind": "auto", "metric": None, "micro_batch_size": None, "gradient_checkpointing": False,
                  "packing": False, "eval_split": "validation", "base_dtype": "auto", "quantize": "none"}

# The offline default: a pretrained MiniLM-L6 encoder and a real labelled task shipped by packages.
# A lambda this close to 1 (relative) is plain LoRA: a lambda worked out as eta_B / eta_A can miss
# 1 by a rounding error.
PLAIN_RTOL = 1e-6
DEFAULT_MODEL = "minilm-l6"
DEFAULT_TASK = "rotten-tomatoes"

REMOTE_CODE_ONLY_FROM_FLAG = (
    "trust_remote_code cannot come from a file or a stored study; pass --trust-remote-code on the "
    "command line to run a model's own code"
)

_UNRENAMES = {v: k for k, v in RENAMES.items()}

# The sections of the trial settings, in this order, in --help and in the README.
GROUPS = ("LoRA", "optimizer", "data", "run")

REMOTE_CODE_HELP = (
    "Let the model's own Python code run (a config's auto_map). Off unless given on the command line: "
    "never taken from a study file, a config file or the database."
)


def setting(default: Any, help: str, group: str) -> Any:
    """A TrialConfig field with its documentation: `help` is the text of its command-line option and of
    its row in the README's table of trial settings, `group` (one of GROUPS) the section of both."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    return dataclasses.field(default=default, metadata={"help": help, "group": group})


@dataclass(frozen=True)
class TrialConfig:
    """One trial: every setting of a LoRA+ fine-tune. eta_B = lam * eta_a; lam = 1 is plain LoRA.
    Each field's help (see `settings_markdown`) says what it sets and what unset means."""

    model: str = setting(DEFAULT_MODEL, "Hub id, local model directory, or an embedded model (offline): "
                                        "'minilm-l6' (an encoder, for classification) or 'smollm2-135m' (a "
                                        "causal LM).", "run")
    task: str = setting(DEFAULT_TASK, "GLUE task (sst2, mrpc, qqp, qnli, rte, mnli, cola, stsb), embedded "
                                      "task, or a .csv/.tsv/.jsonl file.", "data")
    kind: str = setting("auto", "What the model learns: classification (a head on the model) or causal-lm "
                                "(the completions of a chat, prompt/completion or text JSONL, or of an "
                                "embedded instruction task); auto: from the task.", "data")
    metric: str | None = setting(None, "The metric a trial is judged by; unset: the task's first (accuracy, "
                                       "F1, MCC, Pearson; for a causal LM the validation loss per trained "
                                       "token, minimised). Causal-LM tasks with candidate answers also offer "
                                       "accuracy.", "run")
    eta_a: float = setting(5e-4, "Learning rate eta_A of the A matrices.", "optimizer")
    lam: float = setting(16.0, "lambda = eta_B / eta_A, the learning rate of B over that of A; 1 is plain "
                               "LoRA.", "optimizer")
    rank: int = setting(8, "LoRA rank r.", "LoRA")
    alpha: float | None = setting(None, "LoRA alpha; unset: the rank (scaling 1, as in the LoRA+ GLUE "
                                        "runs).", "LoRA")
    dropout: float = setting(0.0, "LoRA dropout, from 0 up to (not including) 1.", "LoRA")
    target_modules: tuple[str, ...] | None = setting(
        None, "Modules to adapt, comma-separated; unset: the architecture's query and value projections "
              "(PEFT's defaults elsewhere).", "LoRA")
    init: str = setting("standard", "standard: A random, B zero (PEFT); reversed: B random, A zero (the "
                                    "LoRA+ authors' code).", "LoRA")
    use_dora: bool = setting(False, "DoRA: a trained magnitude per output column, at eta_A.", "LoRA")
    use_rslora: bool = setting(False, "rsLoRA: scaling alpha / sqrt(rank) instead of alpha / rank.", "LoRA")
    embedding_lr: float = setting(1e-6, "Learning rate of LoRA on embeddings.", "optimizer")
    head_lr: float | None = setting(None, "Learning rate of the classifier head (a causal LM has none); "
                                          "unset: eta_A in a trial, and in a study the geometric middle of "
                                          "its eta_A range, the same for every trial.", "optimizer")
    weight_decay: float = setting(0.0, "AdamW decoupled weight decay of all matrices (not of biases or "
                                       "LayerNorm).", "optimizer")
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW betas: two numbers from 0 up to (not "
                                                       "including) 1.", "optimizer")
    max_grad_norm: float | None = setting(1.0, "Clip the gradient norm to this; unset (in a config file): "
                                               "no clipping.", "optimizer")
    batch_size: int = setting(32, "Examples per step.", "optimizer")
    micro_batch_size: int | None = setting(None, "Examples per forward pass: a step adds up the gradients of "
                                                 "its batch in pieces this size, so the batch stays the same "
                                                 "when memory is short; unset: the whole batch at once.",
                                           "optimizer")
    max_length: int = setting(128, "Tokens per example; longer ones are truncated.", "data")
    packing: bool = setting(False, "Causal LM: pack a step's examples into rows of max_length tokens, each "
                                   "example attending to itself only: less padding, the same loss.", "data")
    epochs: float = setting(3.0, "Passes over the training set.", "run")
    max_steps: int | None = setting(None, "Step budget; overrides epochs.", "run")
    warmup_ratio: float = setting(0.06, "Fraction of steps with linear warmup.", "optimizer")
    schedule: str = setting("linear", "Learning rate after warmup: linear, cosine or constant.", "optimizer")
    seed: int = setting(0, "Seed of the LoRA and head init, the batch order and dropout.", "run")
    eval_every: int = setting(0, "Evaluate every N steps (0: at the end of each epoch), and always at the "
                                 "end.", "run")
    precision: str = setting("auto", "auto (bf16 autocast on a CPU with native bf16, else fp32: on a GPU "
                             "too, where fp32 was the faster at trial sizes), fp32 or bf16.", "run")
    base_dtype: str = setting("auto", "The dtype the frozen base weights are loaded in: fp32, bf16 or fp16 "
                                      "(then computed in that dtype's autocast; LoRA, DoRA and the head stay "
                                      "fp32); auto: bf16 for a model of 1B parameters or more on a device "
                                      "with native bf16 (CUDA, a CPU with AVX512-BF16 or AMX), else fp32.",
                              "run")
    quantize: str = setting("none", "Quantize the frozen base linear layers with bitsandbytes: 4bit (NF4, "
                                    "double quantization, bf16 compute: QLoRA) or 8bit (LLM.int8); none: "
                                    "as base_dtype says.", "run")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N; cuda:0+1 spreads the model over GPUs 0 and 1 "
                                  "(layers placed by transformers' device_map).", "run")
    gradient_checkpointing: bool | None = setting(None, "Recompute activations in the backward pass: less "
                                                        "memory for about a third more compute; unset: on "
                                                        "for a quantized base (QLoRA's recipe), else off.",
                                                  "run")
    train_limit: int | None = setting(None, "Train on a fixed (seed 0), stratified sample of N examples, the "
                                            "same for every trial; unset: all.", "data")
    eval_limit: int | None = setting(None, "Evaluate on a fixed (seed 0), stratified sample of N examples, "
                                           "the same for every trial; unset: all.", "data")
    eval_split: str = setting("validation", "The split evaluated: validation, what a study selects on, or "
                                            "test, held out from every search (confirm scores it).", "data")
    text_column: str | None = setting(None, "Text column of a local task file.", "data")
    text_pair_column: str | None = setting(None, "Second text column of a local task file (sentence "
                                                 "pairs).", "data")
    label_column: str | None = setting(None, "Label column of a local task file.", "data")
    trust_remote_code: bool = setting(False, REMOTE_CODE_HELP, "run")

    def __post_init__(self) -> None:
        # "query,value" (a flag) and ["query", "value"] (a file) are the same setting.
        if isinstance(self.target_modules, str):
            mods = [m.strip() for m in self.target_modules.split(",") if m.strip()]
            object.__setattr__(self, "target_modules", tuple(mods))
        # Types (every source: flags, TOML, JSON, a stored study), then the values of the fields whose
        # type is right, all in one error.
        bad_types = conform_fields(self)
        problems = [*bad_types.values(), *_value_problems(self, set(bad_types))]
        if problems:
            raise SweepError("; ".join(problems))

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

    @classmethod
    def from_file(cls, path: Path) -> TrialConfig:
        """A config JSON, or a result JSON (`trial --json`, `export`) that holds one under "config"."""
        where = f"trial config {short(str(path))}"
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise SweepError(f"cannot read {where}: {e.strerror or e}") from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SweepError(f"{where} is not JSON: {e}") from e
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]
        try:
            return cls.from_dict(data)
        except SweepError as e:
            raise SweepError(f"{where}: {e}") from e

    def replace(self, **changes: Any) -> TrialConfig:
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """to_dict without the LATER_DEFAULTS settings that are at their defaults: what a study's
        identity hashes (identity_of)."""
        return identity_of(self.to_dict())

    @property
    def checkpointing(self) -> bool:
        """Whether the trial recomputes activations: as set, or unset on for a quantized base (QLoRA
        trains so: with a 4-bit base the activations are most of a trial's memory)."""
        if self.gradient_checkpointing is None:
            return self.quantize != "none"
        return self.gradient_checkpointing

    @property
    def micro_batches(self) -> int:
        """Forward passes per step."""
        return -(-self.batch_size // min(self.micro_batch_size or self.batch_size, self.batch_size))


def identity_of(settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of `settings` (as to_dict writes them, or as a study stored them, perhaps before some
    settings existed) that reads as what the trials do: checkpointing resolved, and the LATER_DEFAULTS
    settings at their defaults (or absent) left out."""
    out = dict(settings)
    # what checkpointing does, not how it was asked: unset means on for a quantized base, off else
    if out.get("gradient_checkpointing") is None:
        out["gradient_checkpointing"] = out.get("quantize", "none") != "none"
    for name, default in LATER_DEFAULTS.items():
        if out.get(display_name(name), default) == default:
            out.pop(display_name(name), None)
    return out


def flag(name: str) -> str:
    """The command-line option of a TrialConfig field: `lam` is --lambda, `eta_a` --eta-a."""
    return "--" + display_name(name).replace("_", "-")


def settings_markdown() -> str:
    """The README's tables of trial settings, one per group: name, flag, default and help of each field."""
    parts = []
    for group in GROUPS:
        rows = [f"**{group}**", "", "| setting | flag | default | meaning |", "|---|---|---|---|"]
        for f in (f for f in fields(TrialConfig) if f.metadata["group"] == group):
            cells = [f"`{display_name(f.name)}`", f"`{flag(f.name)}`", _shown(f.default), f.metadata["help"]]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts) + "\n"


def _shown(default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, str):
        return f"`{default}`"
    if isinstance(default, tuple):
        return ", ".join(_shown(v) for v in default)
    return f"{default:g}"


def _value_problems(c: TrialConfig, bad_types: set[str]) -> list[str]:
    """Every value problem of the fields whose type is right (`bad_types` names the others)."""
    problems: list[str] = []
    names = {f.name for f in fields(c)} - bad_types

    def typed(*candidates: str) -> list[str]:
        return [n for n in candidates if n in names]

    def positive(name: str, value: float | None) -> None:
        if value is not None and (not math.isfinite(value) or value <= 0):
            problems.append(f"{display_name(name)} must be a finite number > 0, got {value!r}")

    for name in typed("eta_a", "lam", "embedding_lr", "head_lr", "alpha", "epochs", "max_grad_norm"):
        positive(name, getattr(c, name))
    for name in typed("rank", "batch_size", "max_length"):
        if getattr(c, name) < 1:
            problems.append(f"{name} must be an integer >= 1, got {getattr(c, name)!r}")
    for name in typed("max_steps", "train_limit", "eval_limit", "micro_batch_size"):
        value = getattr(c, name)
        if value is not None and value < 1:
            problems.append(f"{name} must be an integer >= 1 (or unset), got {value!r}")
    if "eval_every" in names and c.eval_every < 0:
        problems.append(f"eval_every must be an integer >= 0, got {c.eval_every!r}")
    if "seed" in names and not 0 <= c.seed < 2**32:
        problems.append(f"seed must be an integer from 0 to 2**32 - 1, got {short(c.seed)}")
    if "dropout" in names and not 0 <= c.dropout < 1:
        problems.append(f"dropout must be in [0, 1), got {c.dropout!r}")
    if "warmup_ratio" in names and not 0 <= c.warmup_ratio < 1:
        problems.append(f"warmup_ratio must be in [0, 1), got {c.warmup_ratio!r}")
    if "weight_decay" in names and (not c.weight_decay >= 0 or not math.isfinite(c.weight_decay)):
        problems.append(f"weight_decay must be a finite number >= 0, got {c.weight_decay!r}")
    if "betas" in names and not all(0 <= b < 1 for b in c.betas):
        problems.append(f"betas must be two numbers in [0, 1), got {list(c.betas)!r}")
    for name, allowed in (("init", INIT_SCHEMES), ("schedule", SCHEDULES), ("precision", PRECISIONS),
                          ("kind", KINDS), ("eval_split", EVAL_SPLITS), ("base_dtype", BASE_DTYPES),
                          ("quantize", QUANTIZATIONS)):
        if name in names and getattr(c, name) not in allowed:
            problems.append(not_one_of(name, getattr(c, name), allowed))
    # A bf16 or fp16 base computes in its own dtype's autocast: fp32 arithmetic would meet weights of
    # another dtype in every linear layer.
    if ({"base_dtype", "precision"} <= names and c.base_dtype in ("bf16", "fp16")
            and c.precision not in ("auto", c.base_dtype)):
        problems.append(f"base_dtype {c.base_dtype} computes in {c.base_dtype} autocast, not precision "
                        f"{c.precision}: leave precision at auto"
                        + (" or set it to bf16" if c.base_dtype == "bf16" else ""))
    if "device" in names and not re.fullmatch(r"auto|cpu|cuda(:\d+(\+\d+)*)?", c.device):
        problems.append(f"device must be auto, cpu, cuda or cuda:N (cuda:N+M: a trial spread over GPUs N "
                        f"and M); got {short(c.device)}")
    if "target_modules" in names and c.target_modules is not None:
        if not all(m.strip() for m in c.target_modules):
            problems.append(f"target_modules must be module names, got {short(list(c.target_modules))}")
        elif not c.target_modules:
            problems.append("target_modules must name at least one module")
    if "model" in names and not c.model.strip():
        problems.append("model must be a hub name or a local directory")
    if "task" in names and not c.task.strip():
        problems.append("task must be a task name or a CSV/JSONL file")
    if "metric" in names and c.metric is not None and not re.fullmatch(r"[a-z0-9_]{1,40}", c.metric):
        problems.append(f"metric must be a metric's name (letters, digits, _), got {short(c.metric)}")
    for name in ("model", "task", "text_column", "text_pair_column", "label_column"):
        value = getattr(c, name)
        if name in names and value is not None and any(ch in value for ch in "\0\n\r"):
            problems.append(f"{name} must not hold NUL or line breaks, got {short(value)}")
    return problems


def is_plain(lam: float) -> bool:
    """Whether a trial at this lambda is plain LoRA (lambda 1, within PLAIN_RTOL)."""
    return abs(float(lam) - 1.0) <= PLAIN_RTOL
