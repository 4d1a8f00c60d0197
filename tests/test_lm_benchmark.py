"""The causal-LM benchmark (benchmarks/lm_engine_vs_trainer.py) on a tiny random Llama: the engine and
the HF Trainer train on the same tokens for the same steps, and each reports a finite validation loss
computed the way a trial computes it."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

from sweep.data.config import TrialConfig

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "pearl", "amber", "lemon"]


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("lm_engine_vs_trainer")


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> str:
    """Prompts of varied length whose completion they decide (the word's first letter, three times)."""
    path = tmp_path_factory.mktemp("lm-bench") / "rows.jsonl"
    rows = [{"prompt": f"{'x' * (i % 13)}{WORDS[i % len(WORDS)]}{i % 7}:",
             "completion": WORDS[i % len(WORDS)][0] * 3, "split": "validation" if i % 5 == 0 else "train"}
            for i in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_sides_train_on_the_same_tokens_and_report_finite_losses(bench, rows_file, llama,
                                                                      precision):
    cfg = TrialConfig(model=llama, task=rows_file, kind="causal-lm", rank=4, eta_a=3e-3, lam=8.0,
                      batch_size=8, max_length=32, epochs=3, train_limit=40, eval_limit=10, device="cpu",
                      precision=precision)
    data = bench.lm_data(cfg)
    shown = []
    sides, result, before = bench.compare(cfg, data, shown.append)

    assert (len(data.train), len(data.val)) == (40, 10)
    assert shown == sides
    assert (result.steps, result.kind, result.precision) == (15, "causal-lm", precision)
    # Every epoch trains every row once, whole, on each side: the same real tokens.
    assert [s.tokens for s in sides] == [3 * int(data.train.lengths.sum())] * 2
    assert all(s.seconds > 0 and s.tokens_per_s > 0 for s in sides)
    for s in (before, *(side.loss for side in sides)):
        assert math.isfinite(s.loss) and s.tokens == data.val.trained_tokens
    # The engine's own evaluation is the same function on the same rows, in the same precision.
    assert sides[0].loss.loss == pytest.approx(result.metric, rel=1e-6)
    assert all(s.loss.loss < before.loss for s in sides)  # both learned from the same starting point
