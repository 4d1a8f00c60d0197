"""export: the best trial of a study's trials frame, the JSON that `trial --config` reads back, and
PEFT code that builds the same LoRA+ optimizer."""

import math

import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from sweep.config import TrialConfig
from sweep.errors import SweepError
from sweep.export import best_trial, peft_snippet


def trials(*rows: tuple) -> pd.DataFrame:
    """A trials frame (the columns sweep.report and export read) from (number, state, value, config)."""
    return pd.DataFrame([
        {"study": "s", "model": "m", "task": "t", "metric_name": "accuracy", "number": n, "state": state,
         "value": value, "eta_a": 1e-3, "lambda": 4.0, "rank": 8, "init": "standard",
         "config": TrialConfig(eta_a=1e-3 * (n + 1)).to_dict() if config is True else config}
        for n, state, value, config in rows
    ])


def test_the_best_is_the_highest_finite_complete_value_and_ties_go_to_the_earlier_trial():
    frame = trials((0, "COMPLETE", 0.7, True), (1, "PRUNED", 0.95, True), (2, "COMPLETE", math.inf, True),
                   (3, "COMPLETE", 0.8, True), (4, "COMPLETE", 0.8, True), (5, "FAIL", math.nan, None))
    best = best_trial(frame, "s")
    assert (best.trial, best.value, best.metric_name) == (3, 0.8, "accuracy")
    assert best.config == TrialConfig(eta_a=4e-3)


def test_a_study_without_a_complete_trial_has_nothing_to_export():
    with pytest.raises(SweepError, match="study 's' has no complete trial yet"):
        best_trial(trials((0, "PRUNED", 0.9, True), (1, "FAIL", math.nan, None)), "s")


def test_a_best_trial_without_a_config_is_another_tools_study():
    with pytest.raises(SweepError, match=r"was not written by loraplus-sweep: its best trial \(#1\)"):
        best_trial(trials((0, "COMPLETE", 0.5, True), (1, "COMPLETE", 0.9, None)), "s")


def test_a_damaged_stored_config_is_named_with_its_trial():
    with pytest.raises(SweepError, match=r"stored config of trial #0 of 's': rank must be an integer >= 1"):
        best_trial(trials((0, "COMPLETE", 0.5, {"rank": 0})), "s")


def test_the_exported_json_is_a_config_that_trial_reads_back(tmp_path):
    best = best_trial(trials((0, "COMPLETE", 0.5, True), (1, "COMPLETE", 0.6, True)), "s")
    path = tmp_path / "best.json"
    path.write_text(best.to_json())
    assert TrialConfig.from_file(path) == best.config == TrialConfig(eta_a=2e-3)
    assert '"trial": 1' in best.to_json() and '"metric_name": "accuracy"' in best.to_json()


def test_peft_snippet_builds_the_lora_plus_optimizer_of_the_config(tiny_model):
    cfg = TrialConfig(eta_a=2e-4, lam=8.0, rank=4, alpha=8.0, target_modules="query,value", weight_decay=0.01)
    scope = {"model": AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)}
    exec(peft_snippet(cfg), scope)
    names = {id(p): n for n, p in scope["model"].named_parameters()}
    lrs = {names[id(p)]: g["lr"] for g in scope["optimizer"].param_groups for p in g["params"]}
    assert isinstance(scope["optimizer"], torch.optim.AdamW)
    a = [lr for n, lr in lrs.items() if "lora_A" in n]
    b = [lr for n, lr in lrs.items() if "lora_B" in n]
    assert a and a == pytest.approx([2e-4] * len(a)) and b and b == pytest.approx([1.6e-3] * len(b))
    module = scope["model"].base_model.model.bert.encoder.layer[0].attention.self.query
    assert module.r["default"] == 4 and module.scaling["default"] == 2.0


def test_peft_snippet_names_the_modules_a_trial_without_target_modules_trained(tiny_model):
    """The architecture's default (query, value for BERT) as a list PEFT takes, never a placeholder."""
    cfg = TrialConfig(model=tiny_model, rank=4)
    scope = {"model": AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)}
    exec(peft_snippet(cfg), scope)
    lora = {n.split(".")[-4] for n, _ in scope["model"].named_parameters() if "lora_A" in n}
    assert lora == {"query", "value"}
    assert "target_modules=['query', 'value']" in peft_snippet(cfg)
    assert "target_modules=None" in peft_snippet(cfg.replace(model="/nonexistent/model"))
