"""What differs between the kinds of trial: the data, the model, a batch's loss and the evaluation.

sweep.engine.train runs one loop over either kind:
- classification: a task of labelled texts (sweep.data.tasks), a fresh head on the model; metrics from the
  task (accuracy, F1, MCC, Pearson...), higher is better;
- causal-lm: rows of chat, prompt/completion or text (sweep.data.lm_tasks), the model's own LM head, the
  loss on completion and assistant tokens only; metrics loss and perplexity per trained token (lower
  is better), and accuracy by candidate likelihood where the rows have choices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sweep.core import outcomes
from sweep.core.dropout import numpy_dropout
from sweep.core.errors import SweepError
from sweep.core.metrics import MAIN_SPLIT, bootstrap_se, compute_splits, main_metric
from sweep.data.batches import collate, encode_task, eval_batches, sample_indices
from sweep.data.config import TrialConfig
from sweep.data.lm_batches import IGNORE, collate_lm, encode_choices, encode_lm, pack_lm
from sweep.data.lm_tasks import PACKING_NEEDS_LM, LMTask, load_lm_task, task_kind
from sweep.data.tasks import Columns, TaskData, load_task
from sweep.engine.lm_eval import nll_per_example, score_choices, token_loss
from sweep.engine.models import load_causal_lm, load_model, load_tokenizer, pad_token_id, place

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Prepared:
    """A trial's model and data, ready for the loop."""

    kind: str
    model: torch.nn.Module
    tokenizer: object
    lengths: np.ndarray  # tokens of each training example
    collate: Callable[[np.ndarray], Batch]  # a batch of training examples, on the CPU
    count: Callable[[Batch], int]  # what a batch's loss is averaged over: examples, or trained tokens
    loss_sum: Callable[[Batch], torch.Tensor]  # the batch's loss summed over what `count` counts
    evaluate: Callable[[Callable[[], contextlib.AbstractContextManager]], dict[str, float]]
    metrics: tuple[str, ...]  # every metric `evaluate` returns
    metric: str  # the one a trial is judged by
    worst: dict[str, float]  # the metrics of a run that diverged
    # The standard error of `metric` at the last evaluation (a bootstrap over its examples).
    standard_error: Callable[[], float] = lambda: float("nan")
    # The last evaluation's per-example outcomes for `metric` (sweep.core.outcomes); None where unknown.
    outcomes: Callable[[], dict | None] = lambda: None


def prepare(cfg: TrialConfig, device: torch.device, task: TaskData | LMTask | None = None) -> Prepared:
    """Load the task (unless `task` is it, loaded already) and the model for `cfg`'s kind; the model
    is on `device`."""
    kind = task_kind(cfg.task, cfg.kind, cfg.label_column)
    if kind == "causal-lm":
        work = _causal_lm(cfg, device, task if isinstance(task, LMTask) else None)
    elif cfg.packing:
        raise SweepError(PACKING_NEEDS_LM)
    else:
        work = _classification(cfg, device, task if isinstance(task, TaskData) else None)
    if device.type == "cpu" and not cfg.checkpointing:
        numpy_dropout(work.model, cfg.seed)
    return work


def _classification(cfg: TrialConfig, device: torch.device, task: TaskData | None) -> Prepared:
    if task is None:
        columns = Columns(cfg.text_column, cfg.text_pair_column, cfg.label_column)
        task = _load_once(("classification", cfg.task, columns), lambda: load_task(cfg.task, columns))
    tokenizer = load_tokenizer(cfg)
    # val_enc: every split evaluated, of cfg.eval_split (validation; test for confirm's final numbers)
    train_enc, val_enc = encode_task(task, tokenizer, cfg.max_length, cfg.eval_split)
    train_enc = train_enc.sample(cfg.train_limit, stratified=not task.is_regression)
    val_enc = {s: e.sample(cfg.eval_limit, stratified=not task.is_regression) for s, e in val_enc.items()}
    pad_id = pad_token_id(tokenizer)
    model = place(load_model(cfg, task.num_labels, task.label_names, pad_id, device), device)
    golds = {name: enc.labels for name, enc in val_enc.items()}

    def batch(idx: np.ndarray) -> Batch:
        return collate(train_enc, idx, pad_id, task.is_regression)

    def loss_sum(b: Batch) -> torch.Tensor:
        return model(**b).loss * len(b["labels"])  # the mean over the batch, times its examples

    metric = main_metric(task.metrics, cfg.metric, f"task {task.name}")
    last: dict[str, np.ndarray] = {}  # the last evaluation's predictions, for its standard error

    @torch.inference_mode()
    def evaluate(autocast) -> dict[str, float]:
        model.eval()
        preds = last  # kept for standard_error()
        for name, enc in val_enc.items():
            preds[name] = np.empty(len(enc), dtype=np.float64)
            for idx in eval_batches(enc.lengths, *_eval_batch(cfg)):
                b = {k: v.to(device) for k, v in collate(enc, idx, pad_id, task.is_regression).items()}
                b.pop("labels")
                with autocast():
                    logits = model(**b).logits.float()
                out = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)
                preds[name][idx] = out.cpu().numpy()
        model.train()
        return compute_splits(task.metrics, preds, golds)

    def standard_error() -> float:
        return bootstrap_se(metric, last[MAIN_SPLIT], golds[MAIN_SPLIT]) if last else float("nan")

    def per_example() -> dict | None:
        if not last:
            return None
        return outcomes.classification(metric, last[MAIN_SPLIT], golds[MAIN_SPLIT], task.is_regression)

    nan = {name: np.full(len(enc), np.nan) for name, enc in val_enc.items()}
    worst = compute_splits(task.metrics, nan, golds)
    return Prepared("classification", model, tokenizer, train_enc.lengths, batch,
                    lambda b: len(b["labels"]), loss_sum, evaluate, tuple(worst), metric, worst,
                    standard_error, per_example)


def _causal_lm(cfg: TrialConfig, device: torch.device, task: LMTask | None) -> Prepared:
    task = task or _load_once(("causal-lm", cfg.task), lambda: load_lm_task(cfg.task))
    tokenizer = load_tokenizer(cfg)
    pad_id = pad_token_id(tokenizer)  # the EOS where the tokenizer has no pad token
    train_rows = sample_rows(task.train, cfg.train_limit)
    val_rows = sample_rows(task.evaluated(cfg.eval_split), cfg.eval_limit)
    train_enc = encode_lm(train_rows, tokenizer, cfg.max_length)
    if train_enc.trained_tokens == 0:
        raise SweepError(f"no token of {task.name}'s training rows is trained on at max_length "
                         f"{cfg.max_length}; raise --max-length")
    val_enc = encode_lm(val_rows, tokenizer, cfg.max_length)
    choices = encode_choices(val_rows, tokenizer, cfg.max_length) if task.has_choices else None
    model = place(load_causal_lm(cfg, pad_id, device), device)
    batch_size = cfg.batch_size * 2

    def batch(idx: np.ndarray) -> Batch:
        if cfg.packing:
            return pack_lm(train_enc, idx, pad_id, cfg.max_length)
        return collate_lm(train_enc, idx, pad_id)

    def count(b: Batch) -> int:
        return int((b["labels"][:, 1:] != IGNORE).sum())

    def loss_sum(b: Batch) -> torch.Tensor:
        return nll_per_example(model, b)[0].sum()

    last: dict[str, Callable[[], float]] = {}  # the last evaluation's standard errors, by metric
    seen: dict[str, object] = {}  # and its per-example figures

    def evaluate(autocast) -> dict[str, float]:
        with autocast():
            loss = token_loss(model, val_enc, pad_id, batch_size, device)
            out = {"loss": loss.loss, "perplexity": loss.perplexity}
            last.update(loss=loss.standard_error, perplexity=lambda: loss.standard_error(perplexity=True))
            seen.update(nll=loss.example_nll, tokens=loss.example_tokens)
            if choices is not None:
                scores = score_choices(model, choices, pad_id, batch_size, device)
                out["accuracy"] = scores.accuracy
                last["accuracy"] = scores.standard_error
                seen.update(correct=scores.predicted == scores.answer, answers=scores.answer)
        return out

    metrics = task.metrics
    metric = main_metric(metrics, cfg.metric, f"causal-LM task {task.name}")
    worst = {"loss": float("inf"), "perplexity": float("inf"), "accuracy": 0.0}
    return Prepared("causal-lm", model, tokenizer, train_enc.lengths, batch, count, loss_sum, evaluate,
                    metrics, metric, {m: worst[m] for m in metrics},
                    lambda: last[metric]() if metric in last else float("nan"),
                    lambda: outcomes.causal_lm(metric, **seen) if seen else None)


# Evaluation batches: on a CPU a forward pass of 16 short examples runs well below the matmul peak,
# one of 64 near it. A batch holds up to EVAL_BATCH examples and EVAL_TOKENS padded tokens, but never
# fewer than training's two batches' worth, which any device that trains fits.
EVAL_BATCH, EVAL_TOKENS = 64, 8192


def _eval_batch(cfg: TrialConfig) -> tuple[int, int]:
    """(examples, padded tokens) at most in an evaluation batch."""
    at_least = cfg.batch_size * 2
    return max(EVAL_BATCH, at_least), max(EVAL_TOKENS, at_least * cfg.max_length)


# The last task this process loaded: a slot's process (sweep.engine.trial_process) serves many trials of one
# study, and reading, de-duplicating and splitting a task costs as much as a short trial's evaluation.
_task_cache: dict[tuple, object] = {}


def _load_once(key: tuple, load: Callable[[], object]):
    """load(), or what it returned for the same key and the same file on disk (size, mtime) before."""
    try:
        stat = Path(key[1]).stat()
        key = (*key, stat.st_size, stat.st_mtime_ns)
    except (OSError, ValueError):
        pass  # not a file: a named task
    if key not in _task_cache:
        _task_cache.clear()
        _task_cache[key] = load()
    return _task_cache[key]


def sample_rows(rows: tuple, n: int | None) -> tuple:
    """A fixed (seed 0) sample of n rows, the same for every trial; stratified by answer where rows
    have choices."""
    if n is None or n >= len(rows):
        return rows
    answers = np.array([r.answer for r in rows])
    return tuple(rows[i] for i in sample_indices(answers, n, stratified=bool(rows[0].choices)))
