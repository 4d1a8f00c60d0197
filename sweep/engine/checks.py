"""What would fail (or mislead) every trial, checked before the first one: the task's classes, the
device, the model's positions and module names, the number of CPU jobs.

Each check is one line and exit code 2 at the command line, instead of a study full of failed
trials, or of trials that "learn" a one-class training set to accuracy 1.0.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

import numpy as np
import torch

from sweep.core.errors import SweepError
from sweep.core.metrics import main_metric
from sweep.core.schema import short
from sweep.data.batches import cache_dir, sampled
from sweep.data.config import TrialConfig
from sweep.data.lm_tasks import PACKING_NEEDS_LM, LMTask, load_lm_task, task_kind
from sweep.data.spec import StudySpec
from sweep.data.tasks import Columns, TaskData, load_task
from sweep.engine.base import gpu_group
from sweep.engine.memory import check_fits, free_bytes


@dataclass(frozen=True)
class Checked:
    """What the checks of a trial found out."""

    kind: str  # classification or causal-lm
    metric: str  # what the trial is judged by (sweep.core.metrics.direction says which way)
    fingerprint: str  # of the task's data: part of a study's identity
    task: TaskData | LMTask  # the task, loaded (a trial need not load it again)


def check_trial(cfg: TrialConfig, ranks: tuple[int, ...] = (), trials_at_once: int = 1) -> Checked:
    """Load the task and the model's tokenizer and config, and check that a trial can run; what is
    usable but worth knowing (a class the training set lacks) is a warning on stderr once every check
    has passed. `ranks`: every LoRA rank the trials may take (a study's), else cfg.rank."""
    from sweep.engine.base import check_quantization
    from sweep.engine.models import default_target_modules, load_config, load_tokenizer, meta_model

    cache_dir()  # every trial writes its tokenized task there
    kind = task_kind(cfg.task, cfg.kind, cfg.label_column)
    if cfg.packing and kind != "causal-lm":
        raise SweepError(PACKING_NEEDS_LM)  # before a sweep, not in each of its trials
    task: TaskData | LMTask
    try:
        if kind == "causal-lm":
            task, warnings = load_lm_task(cfg.task), []
            metric = main_metric(task.metrics, cfg.metric, f"causal-LM task {task.name}")
            fingerprint = task.fingerprint()
        else:
            task = load_task(cfg.task, Columns(cfg.text_column, cfg.text_pair_column, cfg.label_column))
            warnings = check_classes(task, cfg.task, cfg.train_limit)
            metric = main_metric(task.metrics, cfg.metric, f"task {task.name}")
            fingerprint = task.fingerprint()
    except OSError as e:  # e.g. a name too long for the file system
        raise SweepError(f"cannot read task {short(cfg.task)}: {e.strerror or e}") from e
    check_device(cfg.device)
    check_quantization(cfg.quantize, cfg.device)  # bitsandbytes installed, and able to run here
    try:
        tokenizer = load_tokenizer(cfg)
        config = load_config(cfg)
    except OSError as e:
        raise SweepError(f"cannot read model {short(cfg.model)}: {e.strerror or e}") from e
    except SweepError as e:
        if "custom code" in str(e) and not cfg.trust_remote_code:
            raise SweepError(f"{e} Its code runs only with --trust-remote-code on this command line "
                             "(never from a study file, a config file or the database).") from e
        raise
    positions = _positions(config, tokenizer)
    if positions is not None and cfg.max_length > positions:
        raise SweepError(f"max_length {cfg.max_length} is more than the {positions} positions of "
                         f"{short(cfg.model)}; use --max-length {positions} or less")
    check_max_length(cfg, tokenizer, kind, isinstance(task, TaskData) and task.train.pair is not None)
    if cfg.target_modules is None and kind == "classification":  # (a causal LM's default fits any)
        default_target_modules(config.model_type)  # an architecture without defaults says so
    model = meta_model(cfg, config, kind)
    _check_layers(cfg, model, kind, ranks or (cfg.rank,))
    device = torch.device("cpu") if trials_at_once > 1 else _device(cfg.device)
    free = None
    if gpu_group(cfg.device):  # a trial spread over GPUs has the free memory of them all
        parts = [free_bytes(torch.device(f"cuda:{i}")) for i in gpu_group(cfg.device)]
        free = None if None in parts else sum(parts)
    check_fits(cfg, model, kind, device, max(ranks or (cfg.rank,)), trials_at_once, free)
    task.evaluated(cfg.eval_split)  # a trial scored on the test split needs one
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return Checked(kind, metric, fingerprint, task)


def check_classes(task: TaskData, where: str, train_limit: int | None = None) -> list[str]:
    """A classification task needs two classes in what its trials train on (the train_limit sample,
    where there is one), else every trial scores the one class it was shown, and every class it is
    scored on in its training set, else no trial can predict it. Returns warnings, for what is
    usable: a class the train_limit sample or the validation split lacks."""
    if task.is_regression or task.label_names is None:
        return []
    names = task.label_names
    trained = np.bincount(task.train.label, minlength=len(names))
    rows = sampled(task.train.label, train_limit, stratified=True)
    sample = trained if rows is None else np.bincount(task.train.label[rows], minlength=len(names))
    what = f"the training set of {short(where)}"
    if rows is not None:
        what = f"the train_limit sample ({train_limit} of {len(task.train)} training rows) of {short(where)}"
    if (sample > 0).sum() < 2:
        seen = ", ".join(names[c] for c in np.flatnonzero(sample))[:60] or "none"
        fix = "" if rows is None else "; raise train_limit"
        raise SweepError(f"{what} holds one class ({seen}); a classifier needs at least two{fix}")
    scored = [task.validation, *task.extra_validation.values(),
              *([task.test, *task.extra_test.values()] if task.test is not None else [])]
    held = sum(np.bincount(s.label, minlength=len(names)) for s in scored)
    untrained = np.flatnonzero((trained == 0) & (held > 0))
    if len(untrained):
        c = untrained[0]
        raise SweepError(f"class {short(names[c], 30)} of {short(where)} has {held[c]} validation or test "
                         "example(s) but none in the training set, so no trial can learn it; add training "
                         "rows of it or leave it out")
    warnings = []
    lost = np.flatnonzero((trained > 0) & (sample == 0))
    if len(lost):
        warnings.append(f"{what} holds no example of class {_classes(names, lost, trained)}: trials never "
                        "learn it; raise train_limit")
    unscored = np.flatnonzero(np.bincount(task.validation.label, minlength=len(names)) == 0)
    if len(unscored):
        warnings.append(f"the validation split of {short(where)} holds no example of class "
                        f"{_classes(names, unscored, trained)}: no metric sees how it is predicted")
    return warnings


def _classes(names: tuple[str, ...], classes: np.ndarray, trained: np.ndarray) -> str:
    """The first of `classes` with its training examples, and how many more there are."""
    more = f" and {len(classes) - 1} more" if len(classes) > 1 else ""
    return f"{short(names[classes[0]], 30)} ({trained[classes[0]]} in the training set){more}"


def check_max_length(cfg: TrialConfig, tokenizer, kind: str, pair: bool) -> None:
    """Room for text beside the special tokens: below it the tokenizer turns truncation off (it logs
    an error and keeps every token), and one long row then outgrows the model. A causal LM needs
    two tokens, one predicted from the other."""
    if kind == "causal-lm":
        if cfg.max_length < 2:
            raise SweepError(f"max_length {cfg.max_length} leaves a causal LM nothing to predict; use "
                             "--max-length 2 or more")
        return
    special = tokenizer.num_special_tokens_to_add(pair=pair)
    if cfg.max_length <= special:
        raise SweepError(f"max_length {cfg.max_length} leaves no room for text: the tokenizer of "
                         f"{short(cfg.model)} adds {special} special tokens to each example"
                         f"{' (a text pair)' if pair else ''}; use --max-length {special + 1} or more")


def check_device(device: str) -> None:
    if not device.startswith("cuda"):
        return
    count = torch.cuda.device_count()  # asks NVML; CUDA stays uninitialised in this process
    if count == 0 or not torch.cuda.is_available():
        raise SweepError(f"--device {device}: CUDA is not available on this machine; use cpu or auto")
    index = max(int(i) for i in (device.partition(":")[2] or "0").split("+"))
    if index >= count:
        raise SweepError(f"--device {device}: this machine has {count} CUDA device(s), "
                         f"cuda:0 to cuda:{count - 1}")


def check_slots(devices: str, jobs: int) -> None:
    """GPU ids that exist, and no more CPU jobs than cores (each trial takes a share of them)."""
    if devices not in ("auto", "cpu"):
        count = torch.cuda.device_count()
        missing = [d for d in re.split(r"[,+]", devices) if int(d) >= count]
        if missing:
            raise SweepError(f"--devices {devices}: no GPU {', '.join(missing)} on this machine "
                             f"({count} visible); use auto or cpu")
    cores = os.cpu_count() or 1
    on_cpu = devices == "cpu" or torch.cuda.device_count() == 0
    if on_cpu and jobs > cores:
        raise SweepError(f"--jobs {jobs} is more than the {cores} CPU cores of this machine")


def _positions(config, tokenizer) -> int | None:
    """The longest input the model takes: its position embeddings, or the tokenizer's limit when
    that is smaller (RoBERTa keeps 2 of its 514 positions for padding)."""
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 10**7]  # 1e30: "no limit"
    return min(limits) if limits else None


def _device(setting: str) -> torch.device:
    """The device a trial of this setting runs on (auto: the first GPU where CUDA answers)."""
    if setting == "auto":
        return torch.device("cuda:0" if torch.cuda.device_count() > 0 else "cpu")
    return torch.device("cuda:0" if setting == "cuda" else setting.split("+")[0])


def _check_layers(cfg: TrialConfig, model: torch.nn.Module, kind: str, ranks: tuple[int, ...]) -> None:
    """Every target module name matches a module of the model, as PEFT matches them (the name, or
    its last dotted parts), and no rank is more than the narrower side of a layer LoRA adapts: its
    factors' product holds that rank at most, so a larger one trains the same update under another
    name (and another alpha / rank scaling). `model`: built on the meta device (models.meta_model)."""
    from sweep.engine.models import CAUSAL_LM_TARGETS, adapted_layers, default_target_modules

    config = model.config
    names = [n for n, _ in model.named_modules()]
    targets = cfg.target_modules
    missing = [t for t in targets or () if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if n and not n.rsplit(".", 1)[-1].isdigit()})
        raise SweepError(f"target_modules {short(missing)} are not modules of {short(cfg.model)} "
                         f"(its module names include {short(', '.join(leaves), 200)})")
    if targets is None:
        targets = default_target_modules(config.model_type) if kind == "classification" else CAUSAL_LM_TARGETS
    layers = adapted_layers(model, targets)
    if not layers:
        return
    name, shape = min(layers, key=lambda layer: min(layer[1]))
    if max(ranks) > min(shape):
        width = min(shape)
        raise SweepError(f"rank {max(ranks)} is more than {width}, the narrower side of the adapted layer "
                         f"{short(name)} of {short(cfg.model)} (weight {shape[0]} x {shape[1]}), where LoRA "
                         f"learns rank {width} at most; use --rank {width} or less")


def preflight(spec: StudySpec, eval_split: str = "validation") -> StudySpec:
    """Fail on anything that would fail every trial (task, classes, model, positions, target modules,
    device, jobs, a test split for runs scored on `eval_split` test) before the first one, not in the
    middle of a sweep. Returns the spec with the task's data fingerprint (of every split, the test
    split included), which is part of the study's identity; a spec that already holds one (a study
    joined from its stored definition) must find the same data here."""
    on_cpu = spec.devices == "cpu" or torch.cuda.device_count() == 0
    checked = check_trial(spec.base, spec.ranks, trials_at_once=spec.jobs if on_cpu else 1)
    fingerprint = checked.fingerprint
    check_slots(spec.devices, spec.jobs)
    if spec.data_fingerprint is not None and spec.data_fingerprint != fingerprint:
        raise SweepError(
            f"task {spec.base.task!r} holds other data here than when study {spec.study_name} was created "
            f"(data fingerprint {fingerprint}, the study's {spec.data_fingerprint}); use the same data"
        )
    checked.task.evaluated(eval_split)  # runs scored on the test split need one
    return spec.replace(data_fingerprint=fingerprint, objective=checked.metric)
