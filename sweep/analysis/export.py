"""A study's best trial as a config to reuse: the JSON that `export` writes, the PEFT code for it, and
the same settings as an axolotl or a LLaMA-Factory YAML config.

Both tools build LoRA+ as PEFT's create_loraplus_optimizer does: eta_B = learning_rate *
loraplus_lr_ratio, so learning_rate is eta_A and loraplus_lr_ratio is lambda. Every key written was
checked against the tools' own sources (their documented config schemas):

- axolotl v0.18.0 (commit 067b021): src/axolotl/utils/schemas/{model,peft,training,config}.py, the
  schema its config reference (docs/config-reference) is generated from; docs/lora.qmd; LoRA+ in
  src/axolotl/core/trainers/mixins/optimizer.py (create_loraplus_optimizer with learning_rate).
  base_model, adapter, lora_r, lora_alpha (an integer), lora_dropout, lora_target_modules or
  lora_target_linear, peft_use_dora, peft_use_rslora, learning_rate, loraplus_lr_ratio,
  loraplus_lr_embedding, optimizer, adam_beta1, adam_beta2, weight_decay, max_grad_norm,
  lr_scheduler (a transformers scheduler name), warmup_ratio, micro_batch_size,
  gradient_accumulation_steps, num_epochs or max_steps, sequence_len, seed, bf16 (default "auto",
  so fp32 is written as false; fp16 for a trial that ran in fp16), output_dir.
- LLaMA-Factory v0.9.5 (commit ff6d4d1): examples/extras/loraplus/llama3_lora_sft.yaml;
  src/llamafactory/hparams/finetuning_args.py (finetuning_type, lora_rank, lora_alpha: an integer
  whose default is 2 * rank, so it is always written, lora_dropout, lora_target: "all" or a comma
  list, use_dora, use_rslora, loraplus_lr_ratio, loraplus_lr_embedding), data_args.py (cutoff_len,
  dataset, template), model_args.py (model_name_or_path); LoRA+ in train/trainer_utils.py
  (_create_loraplus_optimizer: learning_rate * loraplus_lr_ratio). The training keys are
  transformers' Seq2SeqTrainingArguments, which its TrainingArguments extends:
  per_device_train_batch_size, gradient_accumulation_steps, learning_rate, num_train_epochs or
  max_steps, lr_scheduler_type, warmup_ratio, weight_decay, adam_beta1, adam_beta2, max_grad_norm
  (0: no clipping), seed, bf16 (or fp16), output_dir (a folder per config: LLaMA-Factory resumes
  from any checkpoint it finds in output_dir).

The precision written is the one the trial ran in where it stored it (`auto` is bf16 on a CPU with
native bf16, fp32 elsewhere). Run with axolotl 0.21 and LLaMA-Factory 0.9.5 (CHECKED, which each
config's header states): axolotl 0.19 drops weight_decay from its LoRA+ optimizer.

What a tool cannot express (the reversed init, a head learning rate, a classifier) is said in a
comment where the setting would go. No data set is ever named: the user's data goes where a comment
says.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

from sweep.analysis import report
from sweep.core.errors import SweepError
from sweep.core.schema import short
from sweep.data.config import TrialConfig

FORMATS = ("peft", "axolotl", "llama-factory")
# The releases of the tools an exported config was run with, said in its header.
CHECKED = {
    "axolotl": "checked with axolotl 0.21, which trains it as written; axolotl 0.19 (what pip installs on "
               "Python 3.11) drops weight_decay from its LoRA+ optimizer's parameter groups: use 0.21 or "
               "later for the trial's weight decay",
    "LLaMA-Factory": "checked with LLaMA-Factory 0.9.5, which trains it as written",
}
# Our schedules as transformers scheduler names: ours warm up before a constant rate too.
SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclass(frozen=True)
class BestTrial:
    study: str
    trial: int
    value: float
    metric_name: str | None
    config: TrialConfig
    precision: str | None = None  # what the trial's forward passes ran in (fp32, bf16, fp16), where stored
    steps: int | None = None  # the optimizer steps it took, where stored: its schedule's length
    picked: str = "best"  # best, or recommended: the centre of the plateau within noise of the best

    def to_json(self) -> str:
        """The exported file: `trial --config FILE` reads it back."""
        return json.dumps({"study": self.study, "trial": self.trial, "picked": self.picked,
                           "value": self.value, "metric_name": self.metric_name,
                           "config": self.config.to_dict()}, indent=2) + "\n"

    def describe(self) -> str:
        metric = self.metric_name or "metric"
        return (f"the {self.picked} trial (#{self.trial}) of study {short(self.study)}: validation {metric} "
                f"{self.value:.4g}")


def require_search(study: str, attrs: dict[str, Any]) -> None:
    """Refuse a confirm study: its best run is the luckiest seed of an arm, not a configuration the
    search found; the configurations it confirms are the best of its search study."""
    if attrs.get("kind") == "confirm":
        of = attrs.get("confirm_of")
        search = f"export {short(of)}" if isinstance(of, str) else "export the search study it confirms"
        raise SweepError(f"study {short(study)} is a confirm study: its best run is an arm's luckiest seed, "
                         f"not a configuration to reuse; {search}")


PICKS = ("recommended", "best")


def best_trial(trials: pd.DataFrame, study: str, pick: str = "recommended") -> BestTrial:
    """A completed trial of a study's trials frame with the trial config it stored: the one the report
    recommends (pick "recommended": the centre of the plateau within noise of the best, the largest
    margin to a cliff, sweep.analysis.report.plateau) or the best (sweep.analysis.report's rule: the
    highest finite value of a COMPLETE trial, ties to the earlier one)."""
    best = report.best_configs(trials)
    if best.empty:
        raise SweepError(f"study {short(study)} has no complete trial yet")
    row = best.iloc[0]
    number, value = int(row["number"]), float(row["value"])
    centre = report.plateau(trials) if pick == "recommended" else None
    if centre is not None and int(centre.recommended["number"]) != number:
        number, value = int(centre.recommended["number"]), float(centre.recommended["value"])
    else:
        pick = "best"
    stored = trials.loc[trials["number"] == number, "config"].iloc[0]
    if not isinstance(stored, dict):
        raise SweepError(f"study {short(study)} was not written by loraplus-sweep: its {pick} trial "
                         f"(#{number}) holds no trial config")
    try:
        cfg = TrialConfig.from_dict(stored)
    except SweepError as e:
        raise SweepError(f"the stored config of trial #{number} of {short(study)}: {e}") from e
    metric = row["metric_name"]
    ran = trials.loc[trials["number"] == number, "precision"].iloc[0] if "precision" in trials else None
    base = trials.loc[trials["number"] == number, "base"].iloc[0] if "base" in trials else None
    if cfg.base_dtype == "auto" and cfg.quantize == "none" and base in ("fp32", "bf16", "fp16"):
        cfg = cfg.replace(base_dtype=base)  # what auto resolved to where the trial ran
    steps = trials.loc[trials["number"] == number, "steps"].iloc[0] if "steps" in trials else None
    return BestTrial(study, number, value, None if pd.isna(metric) else str(metric), cfg,
                     ran if isinstance(ran, str) else None,
                     int(steps) if pd.notna(steps) and steps >= 1 else None, pick)


def trial_kind(cfg: TrialConfig) -> str:
    """classification or causal-lm, as the trial ran."""
    from sweep.data.lm_tasks import task_kind

    return task_kind(cfg.task, cfg.kind, cfg.label_column)


def default_targets(cfg: TrialConfig) -> list[str] | None:
    """The modules a classification trial without target_modules put LoRA on (its architecture's
    default); None (PEFT's own default for the architecture) where the model's config cannot be read."""
    from sweep.engine.models import default_target_modules, load_config

    try:
        return list(default_target_modules(load_config(cfg).model_type))
    except SweepError:
        return None


def targets(cfg: TrialConfig, kind: str) -> list[str] | str | None:
    """The trial's LoRA targets: module names, "all-linear" (a causal LM's default: every linear
    layer of the blocks), or None where a classifier's default cannot be read here."""
    from sweep.engine.models import CAUSAL_LM_TARGETS

    if cfg.target_modules:
        return list(cfg.target_modules)
    return CAUSAL_LM_TARGETS if kind == "causal-lm" else default_targets(cfg)


def peft_snippet(cfg: TrialConfig) -> str:
    """Python that puts the trial's LoRA on a `model` already loaded and builds its LoRA+ optimizer."""
    kind = trial_kind(cfg)
    return "\n".join(["from peft import LoraConfig, get_peft_model", "import torch", "",
                      *_wrapped(_not_expressed(cfg, kind, "PEFT")), *_quantized_base(cfg),
                      *_lora_lines(cfg, kind), "", *_optimizer_lines(cfg, kind)])


def peft_program(best: BestTrial) -> str:
    """A whole script that trains the best trial again with PEFT: it loads the model in the form the
    trial did (a dtype or a bitsandbytes quantization), puts the same LoRA on it, builds the trial's
    LoRA+ parameter groups (sweep.engine.optim.loraplus_param_groups) and schedule
    (sweep.engine.train.lr_factor), and defines its training step; only the data loop is left to the user."""
    cfg, kind = best.config, trial_kind(best.config)
    path = _base(cfg, "model")
    auto = "AutoModelForCausalLM" if kind == "causal-lm" else "AutoModelForSequenceClassification"
    lines = [f"# {_comment('PEFT code of ' + best.describe())}",
             f"# {_comment(f'written by loraplus-sweep export: {cfg.model} on {cfg.task}')}",
             "# It runs as it is: it loads the model, puts the trial's LoRA on it and builds its LoRA+",
             "# optimizer and learning-rate schedule; your data goes in the loop at the end.",
             "import math", "", "import torch", "from peft import LoraConfig, get_peft_model",
             f"from transformers import {auto}, AutoTokenizer", "",
             *_wrapped(_not_expressed(cfg, kind, "PEFT")),
             *_quantized_base(cfg, loads=True),
             *_wrapped(_comment(n) for n in path.notes),
             f"model_path = {path.value!r}",
             'device = "cuda" if torch.cuda.is_available() else "cpu"',
             f"tokenizer = AutoTokenizer.from_pretrained(model_path{_remote(cfg)})",
             "if tokenizer.pad_token is None:  # decoders (GPT-2, Llama) pad with their EOS token, as the "
             "trial did",
             "    tokenizer.pad_token = tokenizer.eos_token",
             f"torch.manual_seed({cfg.seed})  # the trial's seed: the new head's init and LoRA's",
             *_load_lines(cfg, kind, auto),
             *_lora_lines(cfg, kind), *_trained_in_full(kind),
             *(["model.to(device)"] if cfg.quantize == "none" else []), "",
             *_optimizer_lines(cfg, kind), "", *_schedule_lines(best), "", *_step_lines(best, kind), "",
             *_loop_lines(best, kind)]
    return "\n".join(lines)


def _remote(cfg: TrialConfig) -> str:
    return ", trust_remote_code=True" if cfg.trust_remote_code else ""


def _labels(cfg: TrialConfig) -> tuple[int, tuple[str, ...] | None, bool]:
    """(num_labels, label names or None for regression, whether the task could be read here): the
    head's size is the task's, which the trial does not store."""
    from sweep.data.tasks import Columns, load_task

    try:
        task = load_task(cfg.task, Columns(cfg.text_column, cfg.text_pair_column, cfg.label_column))
    except (SweepError, OSError, ValueError):
        return 2, ("0", "1"), False
    return task.num_labels, task.label_names, True


def _load_lines(cfg: TrialConfig, kind: str, auto: str) -> list[str]:
    """from_pretrained as the trial called it: its base's dtype or quantization, a classifier's head
    sized for the task."""
    from sweep.engine.base import BF16_FROM_PARAMS

    dtype = {"bf16": "torch.bfloat16", "fp16": "torch.float16"}.get(cfg.base_dtype, "torch.float32")
    form = [f"dtype={dtype}"]
    if cfg.quantize != "none":
        form.append('quantization_config=quantization_config, device_map={"": device}')
    notes = []
    if cfg.base_dtype == "auto":
        notes += _wrapped([f"base_dtype auto: fp32, unless the model has {BF16_FROM_PARAMS:,} parameters or "
                           "more and the device computes bf16 natively (then torch.bfloat16)"])
    if kind == "causal-lm":
        return [*notes, f"model = {auto}.from_pretrained(model_path, {', '.join(form)}{_remote(cfg)})",
                "model.config.use_cache = False  # training reads whole sequences",
                "model.config.pad_token_id = tokenizer.pad_token_id"]
    n, names, known = _labels(cfg)
    if not known:
        notes += _wrapped([_comment(f"{cfg.task} could not be read here: set num_labels and the label names "
                                    "to your task's")])
    head = ('num_labels=1, problem_type="regression"' if names is None else
            f"num_labels={n}, id2label={dict(enumerate(names))!r},\n    "
            f"label2id={ {v: i for i, v in enumerate(names)}!r}")
    return [*notes,
            f"model, loading = {auto}.from_pretrained(",
            f"    model_path, {head},",
            f"    {', '.join(form)}, output_loading_info=True{_remote(cfg)})",
            "model.config.pad_token_id = tokenizer.pad_token_id"]


def _lora_lines(cfg: TrialConfig, kind: str) -> list[str]:
    task_type = "CAUSAL_LM" if kind == "causal-lm" else "SEQ_CLS"
    head = "" if kind == "causal-lm" else "  # SEQ_CLS: the head (classifier or score) trains in full"
    return ["model = get_peft_model(model, LoraConfig(",
            f"    r={cfg.rank}, lora_alpha={cfg.lora_alpha:g}, lora_dropout={cfg.dropout:g},",
            f"    target_modules={targets(cfg, kind)!r}, use_dora={cfg.use_dora}, "
            f'use_rslora={cfg.use_rslora}, task_type="{task_type}",',
            f")){head}"]


def _trained_in_full(kind: str) -> list[str]:
    """The weights a classifier's checkpoint lacks besides the head (a new pooler) start random: the
    trial trained them in full (sweep.engine.models.load_model), and, like the head, in fp32."""
    if kind == "causal-lm":
        return []
    return ["new = set(loading[\"missing_keys\"])  # what the checkpoint lacks (a pooler) trains in full too",
            "for name, p in model.named_parameters():",
            '    if name.removeprefix("base_model.model.") in new:',
            "        p.requires_grad_(True)",
            "    if p.requires_grad:",
            "        p.data = p.data.float()  # what trains stays fp32 whatever the base's dtype"]


def _optimizer_lines(cfg: TrialConfig, kind: str) -> list[str]:
    """AdamW over sweep.engine.optim.loraplus_param_groups' groups: PEFT's create_loraplus_optimizer would
    give 1-D parameters (the head's bias, DoRA's magnitude) lambda * eta_A, which the trial did not."""
    head_lr = "eta_a" if cfg.head_lr is None else f"{cfg.head_lr:.6g}"
    wd = f"{cfg.weight_decay:g}"
    other = ('        group = "head" if p.ndim >= 2 else "head_no_decay"  # the head, new weights'
             if kind == "classification" else
             '        raise ValueError(f"{name}: not a LoRA factor; the trial trained nothing else")')
    return [
        "# The trial's LoRA+ parameter groups (AdamW): A at eta_A, B at lambda * eta_A. PEFT's",
        f"# create_loraplus_optimizer(model, torch.optim.AdamW, lr={cfg.eta_a:.4g}, "
        f"loraplus_lr_ratio={cfg.lam:.4g}) builds",
        "# nearly these, but gives 1-D parameters (the head's bias, DoRA's magnitude) lambda * eta_A.",
        f"eta_a, lam = {cfg.eta_a:.6g}, {cfg.lam:.6g}",
        "groups = {  # name: (learning rate, weight decay)",
        f'    "lora_A": (eta_a, {wd}),',
        f'    "lora_B": (lam * eta_a, {wd}),',
        '    "magnitude": (eta_a, 0.0),  # DoRA\'s magnitude vectors',
        f'    "embedding": ({cfg.embedding_lr:g}, {wd}),  # both LoRA factors of an embedding layer',
        *([f'    "head": ({head_lr}, {wd}),', f'    "head_no_decay": ({head_lr}, 0.0),  # biases, norms']
          if kind == "classification" else []),
        "}",
        "members = {group: [] for group in groups}",
        "for name, p in model.named_parameters():",
        "    if not p.requires_grad:",
        "        continue",
        '    if ".lora_embedding_A." in name or ".lora_embedding_B." in name:',
        '        group = "embedding"',
        '    elif ".lora_A." in name:',
        '        group = "lora_A"',
        '    elif ".lora_B." in name:',
        '        group = "lora_B"',
        '    elif ".lora_magnitude_vector." in name:',
        '        group = "magnitude"',
        "    else:",
        other,
        "    members[group].append(p)",
        "optimizer = torch.optim.AdamW(",
        '    [{"name": g, "params": ps, "lr": groups[g][0], "weight_decay": groups[g][1]}',
        "     for g, ps in members.items() if ps],",
        f"    lr=eta_a, betas={tuple(cfg.betas)!r}, eps=1e-8,",
        ")",
    ]


def _schedule_lines(best: BestTrial) -> list[str]:
    """sweep.engine.train.lr_factor over the trial's steps."""
    cfg = best.config
    if cfg.max_steps is not None:
        length = [f"total_steps = {cfg.max_steps}  # the trial's step budget"]
    else:
        formula = f"math.ceil({cfg.epochs:g} * math.ceil(len(your_training_set) / {cfg.batch_size}))"
        if best.steps is not None:
            length = [f"# The trial's {best.steps} steps: {cfg.epochs:g} epochs at batch {cfg.batch_size}. "
                      "For your data:",
                      f"# total_steps = {formula}",
                      f"total_steps = {best.steps}"]
        else:
            length = ["your_training_set = range(1000)  # stands for your data: its length sets the steps",
                      f"total_steps = {formula}  # {cfg.epochs:g} epochs at batch {cfg.batch_size}"]
    decay = {"linear": ["    return max(0.0, 1.0 - progress)"],
             "cosine": ["    return 0.5 * (1.0 + math.cos(math.pi * progress))"],
             "constant": ["    return 1.0"]}[cfg.schedule]
    after = {"linear": "linear decay to zero", "cosine": "cosine decay to zero",
             "constant": "a constant rate"}
    return [*length,
            f"warmup_steps = math.ceil({cfg.warmup_ratio:g} * total_steps)",
            "",
            "",
            "def lr_factor(step):",
            f'    """The trial\'s schedule: linear warmup, then {after[cfg.schedule]}."""',
            "    if step < warmup_steps:",
            "        return (step + 1) / warmup_steps",
            *(["    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)"]
              if cfg.schedule != "constant" else []),
            *decay,
            "",
            "",
            "scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)"]


def _ran_in(best: BestTrial) -> str:
    """fp32, bf16 or fp16: what the trial's forward passes ran in, where it stored it."""
    if best.precision in ("fp32", "bf16", "fp16"):
        return best.precision
    if best.config.base_dtype in ("bf16", "fp16"):
        return best.config.base_dtype
    return "bf16" if best.config.precision == "bf16" else "fp32"


def _step_lines(best: BestTrial, kind: str) -> list[str]:
    """One optimizer step as sweep.engine.train.run_trial takes it: the batch's mean loss (per example, or per
    trained token of a causal LM) in micro-batches, clipping, the scheduler's step."""
    cfg, ran = best.config, _ran_in(best)
    pieces = cfg.micro_batches
    count = ('(part["labels"][:, 1:] != -100).sum()' if kind == "causal-lm" else 'len(part["labels"])')
    what = "trained tokens" if kind == "causal-lm" else "examples"
    autocast = {"fp32": "torch.autocast(device, enabled=False)",
                "bf16": "torch.autocast(device, dtype=torch.bfloat16)",
                "fp16": "torch.autocast(device, dtype=torch.float16)"}[ran]
    fp16 = ran == "fp16"
    clip = ([*(["    scaler.unscale_(optimizer)"] if fp16 else []),
             f"    torch.nn.utils.clip_grad_norm_(model.parameters(), {cfg.max_grad_norm:g})"]
            if cfg.max_grad_norm is not None else [])
    return [*(["scaler = torch.amp.GradScaler(device)  # fp16's narrow range: the trial scaled its loss"]
              if fp16 else []),
            "",
            "def train_step(batch):",
            f'    """One optimizer step on a batch of {cfg.batch_size} examples (tensors, labels included), '
            f'in {pieces} forward pass{"es" if pieces > 1 else ""}',
            f'    as the trial took it ({ran}); the loss is the mean over its {what}."""',
            "    model.train()",
            f"    parts = [dict(zip(batch, values)) for values in zip(*(v.tensor_split({pieces}) "
            "for v in batch.values()))]",
            f"    count = sum({count} for part in parts)",
            "    total = 0.0",
            "    for part in parts:",
            '        if len(part["labels"]) == 0:',
            "            continue",
            "        part = {k: v.to(device) for k, v in part.items()}",
            f"        with {autocast}:",
            f"            loss = model(**part).loss * {count} / max(int(count), 1)",
            f"        {'scaler.scale(loss)' if fp16 else 'loss'}.backward()",
            "        total += loss.item()",
            *clip,
            f"    {'scaler.step(optimizer)' if fp16 else 'optimizer.step()'}",
            *(["    scaler.update()"] if fp16 else []),
            "    scheduler.step()",
            "    optimizer.zero_grad(set_to_none=True)",
            "    return total"]


def _loop_lines(best: BestTrial, kind: str) -> list[str]:
    cfg = best.config
    from sweep.core.outfiles import safe_name

    if kind == "causal-lm":
        labels = ['#     batch = tokenizer(texts, truncation=True, max_length='
                  f'{cfg.max_length}, padding=True, return_tensors="pt")',
                  '#     batch["labels"] = ...  # input_ids, -100 where no loss is taken (prompt, padding)']
    else:
        labels = ['#     batch = tokenizer(texts, truncation=True, max_length='
                  f'{cfg.max_length}, padding=True, return_tensors="pt")',
                  '#     batch["labels"] = torch.tensor(labels)']
    shape = "a causal-LM task" if kind == "causal-lm" else "a classification task"
    return ["", *_wrapped([_comment(f"Your data goes here: the trial trained on {cfg.task} ({shape}), "
                              f"total_steps batches of {cfg.batch_size} examples, each cut to "
                              f"{cfg.max_length} tokens, in a shuffled order. For example:")]),
        "# for step in range(total_steps):",
        "#     texts, labels = ...  # the next batch of your training set",
        *labels,
        "#     loss = train_step(batch)",
        f'# model.save_pretrained("saves/{safe_name(best.study)}-trial-{best.trial}")  # the adapter'
        + ("" if kind == "causal-lm" else " and the head"),
    ]


@dataclass(frozen=True)
class Key:
    """One key of a YAML config with the comment lines above it; `key` None: the comment alone."""

    key: str | None
    value: Any = None
    notes: tuple[str, ...] = ()


ALL_LINEAR = "every linear layer but the output layer, as the trial's PEFT all-linear"
UNREAD_TARGETS = "the architecture's default query and value projections (their names could not be read here)"


def axolotl_yaml(best: BestTrial) -> str:
    """The best trial's settings as an axolotl config (`axolotl train FILE` once the data is named)."""
    cfg, kind = best.config, trial_kind(best.config)
    micro, accum, batch_note = _batches(cfg, "micro_batch_size * gradient_accumulation_steps")
    target = targets(cfg, kind)
    if target == "all-linear":
        lora_target = Key("lora_target_linear", True, (ALL_LINEAR,))
    else:
        lora_target = Key("lora_target_modules", target) if target else Key(None, notes=(
            f"lora_target_modules: {UNREAD_TARGETS}",))
    sections = {
        "model": [_base(cfg, "base_model"), *_load_in(cfg)],
        "LoRA": [
            Key("adapter", "qlora" if cfg.quantize == "4bit" else "lora"),
            Key("lora_r", cfg.rank),
            _alpha(cfg, "lora_alpha", "axolotl"),
            Key("lora_dropout", cfg.dropout),
            lora_target,
            Key("peft_use_dora", cfg.use_dora),
            Key("peft_use_rslora", cfg.use_rslora),
        ],
        "LoRA+ (eta_B = learning_rate * loraplus_lr_ratio)": [
            Key("learning_rate", cfg.eta_a, ("eta_A",)),
            Key("loraplus_lr_ratio", cfg.lam, ("lambda",)),
            Key("loraplus_lr_embedding", cfg.embedding_lr),
        ],
        "optimizer": [
            Key("optimizer", "adamw_torch"),
            Key("adam_beta1", cfg.betas[0]),
            Key("adam_beta2", cfg.betas[1]),
            Key("weight_decay", cfg.weight_decay),
            _clip(cfg),
            Key("lr_scheduler", SCHEDULERS[cfg.schedule]),
            Key("warmup_ratio", cfg.warmup_ratio),
        ],
        "batches (per GPU)": [
            Key("micro_batch_size", micro, batch_note),
            Key("gradient_accumulation_steps", accum),
            _length(cfg, "num_epochs"),
        ],
        "data": [
            Key("sequence_len", cfg.max_length),
            _data(cfg, kind, ("datasets:",
                              "  - path: <your data>",
                              "    type: <its format: chat_template, completion, ...; see axolotl's dataset "
                              "formats>")),
        ],
        "run": [Key("seed", cfg.seed), _precision(best), _output_dir(best, "axolotl", "")],
    }
    return _yaml("axolotl", best, kind, sections)


def llama_factory_yaml(best: BestTrial) -> str:
    """The best trial's settings as a LLaMA-Factory config (`llamafactory-cli train FILE` once the data
    is named)."""
    cfg, kind = best.config, trial_kind(best.config)
    micro, accum, batch_note = _batches(cfg, "per_device_train_batch_size * gradient_accumulation_steps")
    target = targets(cfg, kind)
    if target == "all-linear":
        lora_target = Key("lora_target", "all", (ALL_LINEAR,))
    else:
        lora_target = Key("lora_target", ",".join(target)) if target else Key(None, notes=(
            f"lora_target: {UNREAD_TARGETS}",))
    sections = {
        "model": [_base(cfg, "model_name_or_path"), *_quantization_bit(cfg)],
        "method": [
            Key("stage", "sft", ("sft: the loss on completions and assistant turns; pt for plain text",)),
            Key("do_train", True),
            Key("finetuning_type", "lora"),
            Key("lora_rank", cfg.rank),
            _alpha(cfg, "lora_alpha", "LLaMA-Factory"),
            Key("lora_dropout", cfg.dropout),
            lora_target,
            Key("use_dora", cfg.use_dora),
            Key("use_rslora", cfg.use_rslora),
            Key("loraplus_lr_ratio", cfg.lam, ("lambda; eta_B = learning_rate * loraplus_lr_ratio",)),
            Key("loraplus_lr_embedding", cfg.embedding_lr),
        ],
        "dataset": [
            _data(cfg, kind, ("dataset: <your data, as named in data/dataset_info.json>",
                              "template: <the chat template of the model>")),
            Key("cutoff_len", cfg.max_length),
        ],
        "train": [
            Key("per_device_train_batch_size", micro, batch_note),
            Key("gradient_accumulation_steps", accum),
            Key("learning_rate", cfg.eta_a, ("eta_A",)),
            _length(cfg, "num_train_epochs"),
            Key("lr_scheduler_type", SCHEDULERS[cfg.schedule]),
            Key("warmup_ratio", cfg.warmup_ratio),
            Key("weight_decay", cfg.weight_decay),
            Key("adam_beta1", cfg.betas[0]),
            Key("adam_beta2", cfg.betas[1]),
            _clip(cfg),
            Key("seed", cfg.seed),
            _precision(best),
            _output_dir(best, "LLaMA-Factory", "resumes from a checkpoint it finds there, so two configs "
                        "sharing one resume each other's, and "),
        ],
    }
    return _yaml("LLaMA-Factory", best, kind, sections)


RENDERERS: dict[str, Callable[[BestTrial], str]] = {
    "peft": lambda best: peft_program(best) + "\n",
    "axolotl": axolotl_yaml,
    "llama-factory": llama_factory_yaml,
}


def render(best: BestTrial, fmt: str) -> str:
    """The best trial in one of FORMATS."""
    if fmt not in RENDERERS:
        raise SweepError(f"--format must be one of {', '.join(FORMATS)}; got {short(fmt)}")
    return RENDERERS[fmt](best)


def _yaml(tool: str, best: BestTrial, kind: str, sections: dict[str, list[Key]]) -> str:
    cfg = best.config
    lines = [f"# {_comment(tool + ' config of ' + best.describe())}",
             f"# {_comment(f'written by loraplus-sweep export: {cfg.model} on {cfg.task}')}",
             *_wrapped([CHECKED[tool]])]
    if kind == "classification":
        lines += [f"# This trial trained a sequence classifier (LoRA and a new head), which {tool} does not",
                  "# fine-tune: the settings below are the trial's, the task is not. For the classifier",
                  "# itself use `export --format peft` or `export --adapter DIR`."]
    lines += _wrapped(_not_expressed(cfg, kind, tool))
    for title, keys in sections.items():
        lines += ["", f"### {title}"]
        for k in keys:
            lines += _wrapped(_comment(n) for n in k.notes)
            if k.key is not None:
                lines.append(yaml.safe_dump({k.key: k.value}, sort_keys=False, allow_unicode=True,
                                            width=2**16).rstrip("\n"))
    return "\n".join(lines) + "\n"


def _wrapped(notes: Iterable[str]) -> list[str]:
    """Notes as comment lines of at most about 100 characters (a wrapped line is indented)."""
    wrap = textwrap.TextWrapper(98, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    return [f"# {line}" for n in notes for line in wrap.wrap(n)]


def _comment(text: str) -> str:
    """A comment that stays one comment: YAML ends a comment at \\r, \\n, \\x85, \\u2028 or \\u2029 and
    refuses a file with control characters, and a model or task name may hold any of them."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _not_expressed(cfg: TrialConfig, kind: str, tool: str) -> list[str]:
    """Comments on the trial's settings that `tool` has no setting for."""
    notes = []
    if cfg.init == "reversed":
        notes.append(f"init: the trial started LoRA with B random and A zero (reversed); {tool} has no such "
                     "init: it starts A random and B zero")
    if kind == "classification" and cfg.head_lr is not None and tool != "PEFT":  # (its code sets it)
        notes.append(f"head_lr: the trial trained the classifier head at {cfg.head_lr:g}; {tool} has no "
                     "learning rate of its own for the head")
    if cfg.use_dora and tool != "PEFT":  # (PEFT's code builds the trial's groups)
        notes.append(f"DoRA: {tool}'s LoRA+ gives the magnitude vectors learning_rate * loraplus_lr_ratio; "
                     "the trial kept them at eta_A")
    return [_comment(n) for n in notes]


def _base(cfg: TrialConfig, key: str) -> Key:
    from sweep.engine.models import EMBEDDED_GGUF, EMBEDDED_MODELS, resolve_model_path

    if cfg.model not in EMBEDDED_MODELS and cfg.model not in EMBEDDED_GGUF:
        return Key(key, cfg.model)
    try:
        path = resolve_model_path(cfg.model)
    except SweepError as e:
        return Key(key, cfg.model, (f"{cfg.model!r} is a model embedded in loraplus-sweep: {e}",))
    return Key(key, path, (f"the model {cfg.model!r} embedded in loraplus-sweep, where it is installed on "
                           "this machine",))


QUANTIZED = "the trial's base, quantized by bitsandbytes"


def _quantized_base(cfg: TrialConfig, loads: bool = False) -> list[str]:
    """The PEFT code's BitsAndBytesConfig of a quantized trial (sweep.engine.base.quantization_config);
    `loads`: the code's own from_pretrained passes it (and the base's dtype)."""
    if cfg.quantize == "none":
        dtype = {"bf16": "torch.bfloat16", "fp16": "torch.float16"}.get(cfg.base_dtype)
        if dtype is None or loads:
            return []
        return [f"# The trial loaded its base in {cfg.base_dtype}: from_pretrained(..., dtype={dtype}).", ""]
    config = ('load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,\n'
              "    bnb_4bit_compute_dtype=torch.bfloat16" if cfg.quantize == "4bit" else "load_in_8bit=True")
    if trial_kind(cfg) == "classification":  # the head and weights new to the model train: never quantized
        from sweep.engine.models import FULL_MODULES

        config += f",\n    llm_int8_skip_modules={list(FULL_MODULES)!r}"
    how = ([f"# The trial's base, quantized by bitsandbytes ({cfg.quantize})."] if loads else
           [f"# The trial's base, quantized by bitsandbytes ({cfg.quantize}): load `model` with",
            "# from_pretrained(..., quantization_config=quantization_config)."])
    return [*how,
            "from transformers import BitsAndBytesConfig",
            "",
            f"quantization_config = BitsAndBytesConfig({config})", ""]


def _load_in(cfg: TrialConfig) -> list[Key]:
    """axolotl's quantized base: load_in_4bit with adapter qlora (NF4, double quantization), or
    load_in_8bit."""
    if cfg.quantize == "none":
        return []
    return [Key(f"load_in_{cfg.quantize}", True, (f"{QUANTIZED} ({cfg.quantize})",))]


def _quantization_bit(cfg: TrialConfig) -> list[Key]:
    """LLaMA-Factory's quantized base: bitsandbytes by default, NF4 with double quantization at 4 bits."""
    if cfg.quantize == "none":
        return []
    return [Key("quantization_bit", int(cfg.quantize.removesuffix("bit")), (QUANTIZED,))]


def _alpha(cfg: TrialConfig, key: str, tool: str) -> Key:
    if cfg.lora_alpha.is_integer():
        return Key(key, int(cfg.lora_alpha))
    return Key(None, notes=(f"{key}: {cfg.lora_alpha:g}  (the trial's; {tool} takes an integer: pick one "
                            f"and keep the scaling alpha / r = {cfg.lora_alpha / cfg.rank:g} in mind)",))


def _batches(cfg: TrialConfig, product: str) -> tuple[int, int, tuple[str, ...]]:
    """(examples per forward pass, passes per step, a note where they do not multiply to the batch)."""
    micro = min(cfg.micro_batch_size or cfg.batch_size, cfg.batch_size)
    accum = -(-cfg.batch_size // micro)
    note = ()
    if micro * accum != cfg.batch_size:
        note = (f"the trial's step was {cfg.batch_size} examples in {accum} forward passes; here a step "
                f"is {product} = {micro * accum}",)
    return micro, accum, note


def _length(cfg: TrialConfig, epochs_key: str) -> Key:
    notes = [f"the trial trained on a fixed sample of {cfg.train_limit} examples"] if cfg.train_limit else []
    if cfg.max_steps is not None:
        notes.insert(0, f"the trial's step budget (it overrides {epochs_key})")
        return Key("max_steps", cfg.max_steps, tuple(notes))
    return Key(epochs_key, cfg.epochs, tuple(notes))


def _clip(cfg: TrialConfig) -> Key:
    if cfg.max_grad_norm is None:
        return Key("max_grad_norm", 0.0, ("0: no clipping, as in the trial",))
    return Key("max_grad_norm", cfg.max_grad_norm)


def _precision(best: BestTrial) -> Key:
    """The precision the trial ran in, where it stored it: `auto` is bf16 on a CPU with native bf16
    and fp32 elsewhere, so the setting alone does not say."""
    cfg, ran = best.config, best.precision
    if ran not in ("fp32", "bf16", "fp16"):
        return _bf16(cfg)
    how = "" if cfg.precision == ran else f" (precision {cfg.precision} on the machine it ran on)"
    if ran == "fp16":
        return Key("fp16", True, (f"the trial ran in fp16 autocast{how}",))
    return Key("bf16", ran == "bf16", (f"the trial ran in {ran}{' autocast' if ran == 'bf16' else ''}{how}",))


def _output_dir(best: BestTrial, tool: str, resumes: str) -> Key:
    """A folder of the config's own, named after the study and trial: a shared default folder mixes
    the checkpoints and adapters of every config run in it."""
    from sweep.core.outfiles import safe_name

    return Key("output_dir", f"saves/{safe_name(best.study)}-trial-{best.trial}",
               (f"a folder of this config's own: {tool} {resumes}writes the adapter there",))


def _bf16(cfg: TrialConfig) -> Key:
    if cfg.precision == "fp32":
        return Key("bf16", False, ("the trial ran in fp32",))
    if cfg.precision == "bf16":
        return Key("bf16", True)
    return Key("bf16", False, ("precision auto: fp32, as a trial runs on a GPU (bf16 autocast only on a "
                               "CPU with native bf16)",))


def _data(cfg: TrialConfig, kind: str, placeholder: tuple[str, ...]) -> Key:
    """The comment where the user's data goes: never a data set of ours, or a guessed path."""
    shape = "a causal-LM task" if kind == "causal-lm" else "a classification task"
    evaluated = (f"; it was evaluated on a fixed sample of {cfg.eval_limit} validation examples"
                 if cfg.eval_limit is not None else "")
    return Key(None, notes=(f"your data goes here: the trial trained on {cfg.task} ({shape}){evaluated}",
                            *placeholder))
