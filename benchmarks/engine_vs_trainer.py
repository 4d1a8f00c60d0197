"""Side-by-side throughput and metric: this engine vs HF Trainer + PEFT's LoRA+ optimizer.

Same model, data, init and hyperparameters on each side, run one after the other in one process:
  (a) loraplus-sweep's own loop (length-grouped batches, dynamic padding),
  (b) HF Trainer with peft.optimizers.create_loraplus_optimizer and dynamic padding,
  (c) the same Trainer padding every example to max length, as the LoRA+ authors' GLUE script does.
Tokens/s counts real (non-padding) training tokens over the training wall time. Prints a table and
the machine. Usage: python benchmarks/engine_vs_trainer.py [--train N] [--epochs E] [--task T] [--eta-a X]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
import warnings

import numpy as np
import torch
from peft.optimizers import create_loraplus_optimizer
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
from transformers import logging as hf_logging

from sweep.batches import encode_task
from sweep.config import DEFAULT_MODEL, DEFAULT_TASK, TrialConfig
from sweep.metrics import compute
from sweep.models import load_model, load_tokenizer
from sweep.tasks import load_task
from sweep.train import run_trial


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _rows(enc, n: int, pad_to: int | None, pad_id: int):
    rows = []
    for i in range(min(n, len(enc))):
        ids = enc.input_ids[i].tolist()
        row = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(enc.labels[i])}
        if enc.token_type_ids is not None:
            row["token_type_ids"] = enc.token_type_ids[i].tolist()
        if pad_to is not None:  # what tokenizer(padding="max_length") produces
            extra = pad_to - len(ids)
            row["input_ids"] = ids + [pad_id] * extra
            row["attention_mask"] = row["attention_mask"] + [0] * extra
            if "token_type_ids" in row:
                row["token_type_ids"] = row["token_type_ids"] + [0] * extra
        rows.append(row)
    return rows


def run_trainer(cfg: TrialConfig, task, train_enc, val_enc, tokenizer, pad_to_max: bool):
    model = load_model(cfg, task.num_labels, task.label_names)
    optimizer = create_loraplus_optimizer(
        model, torch.optim.AdamW, lr=cfg.eta_a, loraplus_lr_ratio=cfg.lam,
        loraplus_weight_decay=cfg.weight_decay, betas=cfg.betas, eps=1e-8,
    )
    pad_to = cfg.max_length if pad_to_max else None
    pad_id = tokenizer.pad_token_id
    train_rows = _rows(train_enc, cfg.train_limit or len(train_enc), pad_to, pad_id)
    val_rows = _rows(val_enc, len(val_enc), pad_to, pad_id)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size * 2,
            num_train_epochs=cfg.epochs,
            learning_rate=cfg.eta_a,
            lr_scheduler_type=cfg.schedule,
            # Integer steps, computed as the engine does (transformers 4 and 5 read ratios differently).
            warmup_steps=math.ceil(
                cfg.warmup_ratio * math.ceil(len(train_rows) / cfg.batch_size) * cfg.epochs
            ),
            max_grad_norm=cfg.max_grad_norm,
            seed=cfg.seed,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=_Rows(train_rows),
            data_collator=None if pad_to_max else DataCollatorWithPadding(tokenizer),
            optimizers=(optimizer, None),
        )
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
        pred = trainer.predict(_Rows(val_rows))
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    metric = compute(task.metrics, np.argmax(logits, -1), val_enc.labels)[task.main_metric]
    tokens = int(sum(sum(r["attention_mask"]) for r in train_rows) * cfg.epochs)
    return tokens / train_s, metric, train_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--train", type=int, default=1024, help="training examples")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--eta-a", type=float, default=2e-3, help="high enough to learn in one short epoch")
    parser.add_argument("--lambda", dest="lam", type=float, default=8.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    cfg = TrialConfig(model=args.model, task=args.task, eta_a=args.eta_a, lam=args.lam, rank=8, batch_size=32,
                      max_length=128, epochs=args.epochs, warmup_ratio=0.06, train_limit=args.train,
                      device="auto", precision="fp32")
    task = load_task(cfg.task)
    tokenizer = load_tokenizer(cfg)
    train_enc, evals = encode_task(task, tokenizer, cfg.max_length)
    # The examples run_trial trains on: its fixed sample of train_limit.
    train_enc, val_enc = train_enc.sample(cfg.train_limit, not task.is_regression), evals["validation"]
    n = len(train_enc)
    lengths = train_enc.lengths[:n]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")
    print(f"task {task.name}: {n} training examples x {cfg.epochs:g} epochs, {len(val_enc)} validation; "
          f"tokens/example mean {lengths.mean():.1f}, max {lengths.max()} (max_length {cfg.max_length})")
    print(f"eta_A {cfg.eta_a:g}, lambda {cfg.lam:g}, rank {cfg.rank}, batch {cfg.batch_size}, fp32\n")

    rows = []
    r = run_trial(cfg, task=task)
    rows.append(("(a) loraplus-sweep engine", r.tokens_per_s, r.metric, r.train_time_s))
    rows.append(("(b) Trainer + create_loraplus_optimizer, dynamic padding",
                 *run_trainer(cfg, task, train_enc, val_enc, tokenizer, pad_to_max=False)))
    rows.append(("(c) Trainer + create_loraplus_optimizer, pad to max_length",
                 *run_trainer(cfg, task, train_enc, val_enc, tokenizer, pad_to_max=True)))

    base = rows[0][1]
    print(f"{'side':<62} {'tokens/s':>9} {'(a)/x':>6} {task.main_metric:>9} {'train s':>8}")
    for name, tps, metric, secs in rows:
        print(f"{name:<62} {tps:>9,.0f} {base / tps:>6.2f} {metric:>9.4f} {secs:>8.1f}")


if __name__ == "__main__":
    main()
