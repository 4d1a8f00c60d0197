"""The precision benchmark (benchmarks/precision.py): every trial it times is the same trial but for
its precision, so the rounds of one precision agree exactly and the two precisions differ only by
bf16 autocast."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from sweep.data.config import TrialConfig

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("precision")


def test_rounds_repeat_one_trial_and_the_precisions_differ_by_autocast(bench, tiny_model, toy_csv):
    cfg = TrialConfig(model=tiny_model, task=toy_csv, max_length=32, batch_size=8, max_steps=4, eval_every=4,
                      eta_a=1e-2, lam=8.0, rank=4, device="cpu")
    first, runs = bench.compare(cfg, rounds=2)

    assert list(first) == list(runs) == ["fp32", "bf16"]
    for precision, results in runs.items():
        assert len(results) == 2
        for r in (first[precision], *results):
            assert r.precision == precision and r.steps == 4 and r.tokens_per_s > 0
            # Same seed, data and process: the first trial and each round are one trial, repeated.
            assert r.update_norms == first[precision].update_norms
            assert r.metric == first[precision].metric
    assert first["bf16"].update_norms != first["fp32"].update_norms  # autocast changed the arithmetic


def test_a_training_tokens_matmul_flops_are_those_of_its_forward_and_backward(bench, tiny_model, toy_csv):
    """The tiny BERT (2 layers, width 32, FFN 64, LoRA rank 4 on query and value): a token's linear
    layers take 2 * 2 * (4 * 32 * 32 + 2 * 32 * 64) = 32,768 FLOPs forward. Training adds their input
    gradients (all but the first layer's query, key and value, whose input needs none) and the
    attention's products, which grow with the length: between 1.5 and 3.5 times the forward's linear
    FLOPs. The evaluation counted in (its 64 examples are twice the 32 that the difference trains on)
    would leave that range."""
    cfg = TrialConfig(model=tiny_model, task=toy_csv, max_length=32, batch_size=8, eval_limit=64, eta_a=1e-2,
                      lam=8.0, rank=4, device="cpu")
    per_token = bench.train_flops_per_token(cfg)
    forward = 2 * 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert 1.5 * forward < per_token < 3.5 * forward, per_token / forward
