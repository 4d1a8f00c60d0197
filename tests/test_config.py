"""TrialConfig: exact serialisation and one clear error per bad value."""

import pytest

from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig


def test_round_trips_through_dict_and_json_exactly():
    cfg = TrialConfig(eta_a=3.1e-4, lam=2**4.5, rank=16, alpha=32.0, target_modules="query, value",
                      init="reversed", head_lr=1e-3, betas=(0.9, 0.99), max_steps=77, seed=5)
    assert cfg.target_modules == ("query", "value")
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert TrialConfig.from_json(cfg.to_json()) == cfg
    assert cfg.to_dict()["lambda"] == 2**4.5 and "lam" not in cfg.to_dict()


def test_derived_values():
    cfg = TrialConfig(eta_a=1e-4, lam=16, rank=8)
    assert cfg.eta_b == pytest.approx(1.6e-3)
    assert cfg.lora_alpha == 8  # alpha defaults to the rank
    assert TrialConfig(rank=8, alpha=16).lora_alpha == 16


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eta_a": 0.0}, "eta_a must be a finite number > 0"),
        ({"eta_a": -1e-4}, "eta_a must be a finite number > 0"),
        ({"eta_a": float("nan")}, "eta_a must be a finite number > 0"),
        ({"lam": 0.0}, "lambda must be a finite number > 0"),
        ({"lam": -2.0}, "lambda must be a finite number > 0"),
        ({"rank": 0}, "rank must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"init": "gaussian"}, "init must be one of standard, reversed"),
        ({"schedule": "step"}, "schedule must be one of linear, cosine, constant"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_values_are_named_in_the_error(changes, message):
    with pytest.raises(SweepError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        TrialConfig(**changes)


def test_unknown_key_is_an_error():
    with pytest.raises(SweepError, match="unknown trial setting 'learning_rate'"):
        TrialConfig.from_dict({"learning_rate": 1e-3})
