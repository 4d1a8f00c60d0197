"""The precision benchmark (benchmarks/precision.py): every trial it times is the same trial but for
its precision, so the rounds of one precision agree exactly and the two precisions differ only by
bf16 autocast."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from sweep.config import TrialConfig

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
