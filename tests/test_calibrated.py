"""Answers calibrated to their noise: per-example outcomes stored with a trial, the paired standard error
of two trials scored on the same examples, seed-to-seed noise from replicates, and the plateau's centre
recommended rather than its edge."""

import math

import numpy as np
import pandas as pd
import pytest

from sweep.core.outcomes import arrays
from sweep.data.spec import load_spec
from sweep.data.tasks import load_task
from sweep.engine.train import run_trial
from sweep.study.stored import StoredStudy, trials_frame


def test_a_real_trial_stores_its_per_example_outcomes(tiny_cfg, tmp_path):
    url = f"sqlite:///{tmp_path}/sweep.db"
    spec = load_spec(None, {"model": tiny_cfg.model, "task": tiny_cfg.task, "sampler": "random",
                            "storage": url, "max_steps": 3, "max_length": 32, "batch_size": 16,
                            "device": "cpu", "eval_limit": 40})
    store = StoredStudy.create_or_load(spec)
    running = store.ask(spec, draw=0)
    result = run_trial(running.config(spec))
    running.record(result)
    store.tell(running, "COMPLETE", result.metric)
    stored = trials_frame(url)["outcomes"].iloc[0]
    n = min(40, len(load_task(tiny_cfg.task).validation))
    assert stored["n"] == n
    correct = arrays(stored)["correct"]
    assert correct.shape == (n,) and correct.mean() == pytest.approx(result.metric)


def test_the_paired_standard_error_is_smaller_where_two_trials_agree_on_most_examples():
    from sweep.core import stats
    from sweep.core.metrics import bootstrap_se
    from sweep.core.outcomes import classification

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 400)
    a = np.where(rng.random(400) < 0.8, gold, 1 - gold)  # about 80 % right
    b = a.copy()
    flip = rng.choice(400, 12, replace=False)  # the two differ on 12 examples
    b[flip] = 1 - b[flip]
    ra, rb = classification("accuracy", a, gold, False), classification("accuracy", b, gold, False)
    paired = stats.paired_se("accuracy", ra, rb)
    unpaired = stats.unpaired_se(bootstrap_se("accuracy", a, gold), bootstrap_se("accuracy", b, gold))
    d = (a == gold).astype(float) - (b == gold).astype(float)
    assert paired == pytest.approx(d.std(ddof=1) / math.sqrt(400))
    assert paired < unpaired / 3
    # A metric that is no mean of per-example terms: a paired bootstrap, as much smaller.
    fa, fb = classification("f1", a, gold, False), classification("f1", b, gold, False)
    assert stats.paired_se("f1", fa, fb) < stats.unpaired_se(bootstrap_se("f1", a, gold),
                                                             bootstrap_se("f1", b, gold)) / 3
    # Other examples (another sample): not paired, so the caller falls back to the unpaired SE.
    other = classification("accuracy", b[:399], gold[:399], False)
    assert stats.paired_se("accuracy", ra, other) is None
    assert stats.paired_se("accuracy", ra, None) is None


def study(values: dict[float, list[float]], se: float = 0.005) -> pd.DataFrame:
    """Trials of one task: per lambda, one configuration at each seed (replicates), each scored with an
    evaluation standard error `se`."""
    rows = []
    for lam, seeds in values.items():
        for seed, value in enumerate(seeds):
            rows.append({"study": "s", "model": "m", "task": "t", "metric_name": "accuracy",
                         "state": "COMPLETE", "number": len(rows), "value": value, "metric_se": se,
                         "eta_a": 1e-3, "lambda": lam, "rank": 8, "init": "standard", "seed": seed,
                         "tokens": 0, "wall_time_s": 0.0})
    return pd.DataFrame(rows)


def test_two_lambda_bins_apart_by_less_than_the_seed_spread_tie():
    from sweep.analysis import report

    df = study({4.0: [0.80, 0.84, 0.88], 8.0: [0.79, 0.83, 0.86]})  # equal in truth, seeds spread 0.04
    curve = report.lambda_curve(df).set_index("lambda_bin")
    assert curve.loc[3, "within_noise"]  # 0.86 against 0.88: apart by 4 evaluation SEs, not by seeds
    assert curve.loc[3, "diff_se"] > 0.04
    assert "seed noise (replicates: 4 degree(s) of freedom)" in curve.loc[3, "noise"]
    d = report.default_lambda(df)["m"]
    assert d.lambda_bin == 2 and d.within_noise == (2, 3) and d.tied
    assert report.judged(df.assign(**{"lambda": df["lambda"].replace(8.0, 1.0)}))["gain_se"].iloc[0] > 0.04
    # Without replicates the same two trials are apart, and the report says what it judged them on.
    single = df[df["value"].isin([0.88, 0.86])]
    curve = report.lambda_curve(single).set_index("lambda_bin")
    assert not curve.loc[3, "within_noise"]
    assert "evaluation noise, unpaired only: no replicates" in curve.loc[3, "noise"]
    assert report.default_lambda(single)["m"].within_noise == (2,)


def test_the_centre_of_a_plateau_is_recommended_not_its_edge_next_to_a_cliff():
    from sweep.analysis import report
    from sweep.study import confirm

    # lambda 2 reached the top first, at the plateau's edge: lambda 16 beside it falls off a cliff.
    values = {2.0: 0.900, 4.0: 0.898, 8.0: 0.897, 16.0: 0.50, 1.0: 0.80}
    df = study({lam: [v] for lam, v in values.items()}, se=0.01)
    p = report.plateau(df)
    assert p.best["lambda"] == 2.0 and p.trials == 3 and p.lambda_bins == (1, 2, 3)
    assert (p.eta_b_low, p.eta_b_high) == pytest.approx((2e-3, 8e-3))
    assert p.recommended["lambda"] == 4.0
    row = report.summary(df).iloc[0]
    assert row["best_trial"] == 0 and row["recommended_trial"] == 1
    assert row["plateau_lambdas"] == "2, 4, 8"
    # confirm's LoRA+ arm is the same point
    spec = load_spec(None, {"model": "bert", "task": "sst2", "sampler": "random"})
    arms, best = confirm.candidates(df, spec)
    assert best == confirm.bin_arm_name(2) and arms[best].lam == 4.0


def test_a_causal_lm_trial_stores_each_examples_loss_and_two_trials_pair_on_them(llama, tmp_path):
    import json

    from sweep.core import stats
    from sweep.data.config import TrialConfig

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"w{i}:", "completion": "abc"[i % 3] * 3}) + "\n"
                            for i in range(40)))
    cfg = TrialConfig(model=llama, task=str(path), rank=4, eta_a=3e-3, lam=8.0, batch_size=8, max_steps=4,
                      max_length=32, device="cpu", warmup_ratio=0.0, precision="fp32")
    a, b = run_trial(cfg), run_trial(cfg.replace(lam=2.0))
    nll, tokens = arrays(a.outcomes)["nll"], arrays(a.outcomes)["tokens"]
    assert a.outcomes["n"] == len(nll) == len(tokens) > 0
    assert nll.sum() / tokens.sum() == pytest.approx(a.metric, rel=1e-5)  # the loss per token
    paired = stats.paired_se("loss", a.outcomes, b.outcomes)
    assert paired is not None and 0 < paired < stats.unpaired_se(a.metric_se, b.metric_se)


def test_the_grids_best_region_is_judged_paired_over_the_examples():
    from test_gridcheck import grid, row

    from sweep.analysis.gridcheck import sweep_vs_grid
    from sweep.core.outcomes import classification

    gold = np.zeros(414)
    best, other = gold.copy(), gold.copy()
    best[:21] = other[:25] = 1  # the second gets wrong the first's 21 misses and 4 more
    rows = grid({(1e-3, 16.0): 393 / 414, (1e-3, 4.0): 389 / 414})
    sweep = row(0, 389 / 414, 1e-3, 4.0, "tpe")  # the sweep found the second point
    for r, pred in ((rows[5], best), (rows[4], other), (sweep, other)):
        r["outcomes"] = classification("accuracy", pred, gold, False)
    frame = pd.DataFrame([*rows, sweep])
    (r,) = sweep_vs_grid(frame).to_dict("records")
    # 4 examples of 414 apart: within one unpaired SE (0.016), two paired SEs (0.0048)
    assert r["region_points"] == 1 and not r["sweep_within_noise"]
    (r,) = sweep_vs_grid(frame.drop(columns="outcomes")).to_dict("records")
    assert r["region_points"] == 2 and r["sweep_within_noise"]
