"""A study's best trial as a config to reuse: the JSON that `export` writes and the PEFT code for it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from sweep import report
from sweep.config import TrialConfig
from sweep.errors import SweepError
from sweep.schema import short


@dataclass(frozen=True)
class BestTrial:
    study: str
    trial: int
    value: float
    metric_name: str | None
    config: TrialConfig

    def to_json(self) -> str:
        """The exported file: `trial --config FILE` reads it back."""
        return json.dumps({"study": self.study, "trial": self.trial, "value": self.value,
                           "metric_name": self.metric_name, "config": self.config.to_dict()}, indent=2) + "\n"


def best_trial(trials: pd.DataFrame, study: str) -> BestTrial:
    """The best completed trial of a study's trials frame (sweep.report's rule: the highest finite value
    of a COMPLETE trial, ties to the earlier one) with the trial config it stored."""
    best = report.best_configs(trials)
    if best.empty:
        raise SweepError(f"study {short(study)} has no complete trial yet")
    row = best.iloc[0]
    number = int(row["number"])
    stored = trials.loc[trials["number"] == number, "config"].iloc[0]
    if not isinstance(stored, dict):
        raise SweepError(f"study {short(study)} was not written by loraplus-sweep: its best trial "
                         f"(#{number}) holds no trial config")
    try:
        cfg = TrialConfig.from_dict(stored)
    except SweepError as e:
        raise SweepError(f"the stored config of trial #{number} of {short(study)}: {e}") from e
    metric = row["metric_name"]
    return BestTrial(study, number, float(row["value"]), None if pd.isna(metric) else str(metric), cfg)


def default_targets(cfg: TrialConfig) -> list[str] | None:
    """The modules a trial without target_modules put LoRA on (its architecture's default); None
    (PEFT's own default for the architecture) where the model's config cannot be read here."""
    from sweep.models import default_target_modules, load_config

    try:
        return list(default_target_modules(load_config(cfg).model_type))
    except SweepError:
        return None


def peft_snippet(cfg: TrialConfig) -> str:
    """Python that builds the same LoRA and LoRA+ optimizer with PEFT, for a `model` already loaded."""
    targets = list(cfg.target_modules) if cfg.target_modules else default_targets(cfg)
    return f"""from peft import LoraConfig, get_peft_model
from peft.optimizers import create_loraplus_optimizer
import torch

model = get_peft_model(model, LoraConfig(
    r={cfg.rank}, lora_alpha={cfg.lora_alpha:g}, lora_dropout={cfg.dropout:g},
    target_modules={targets!r}, use_dora={cfg.use_dora}, use_rslora={cfg.use_rslora}, task_type="SEQ_CLS",
))
optimizer = create_loraplus_optimizer(
    model, torch.optim.AdamW, lr={cfg.eta_a:.4g}, loraplus_lr_ratio={cfg.lam:.4g},
    loraplus_weight_decay={cfg.weight_decay:g}, betas={tuple(cfg.betas)!r},
)
# Note: PEFT also gives 1-D trainable parameters (the classifier bias, DoRA's magnitude)
# lr * loraplus_lr_ratio."""
