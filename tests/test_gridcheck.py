"""A sampled sweep against a full grid of the same trial definition: the grid's best region (the
points it cannot order), whether the sweep's best lies in it, and the share of the grid's compute
the sweep spent to get within noise of the grid's best."""

import math

import pandas as pd
import pytest

from sweep.analysis import report
from sweep.analysis.gridcheck import sweep_vs_grid

ETAS, LAMBDAS = (1e-4, 1e-3, 1e-2), (1.0, 4.0, 16.0)


def row(number, value, eta_a, lam, sampler, wall=100.0, state="COMPLETE", rank=8, tokens=1000):
    # A grid and a sweep of the same trials: two definitions (their spaces differ), one settings hash.
    return {"study": f"s-{sampler}", "model": "minilm-l6", "task": "bbc-news", "definition": f"d-{sampler}",
            "settings": "s1",
            "metric_name": "accuracy", "number": number, "state": state, "value": value, "eta_a": eta_a,
            "lambda": lam, "rank": rank, "init": "standard", "tokens": tokens, "wall_time_s": wall,
            "sampler": sampler, "stop_reason": None, "steps": 10,
            "config": {"task": "bbc-news", "eval_limit": None}}


def grid(values: dict) -> list[dict]:
    """Every (eta_A, lambda) point, its value from `values` or 0.5."""
    points = [(e, lam) for e in ETAS for lam in LAMBDAS]
    return [row(i, values.get(p, 0.5), *p, "grid") for i, p in enumerate(points)]


def test_the_sweep_finds_the_grids_best_region_at_a_share_of_its_compute():
    # Grid: best 0.95 at (1e-3, 16); 0.94 at (1e-3, 4) is within noise of it (414 examples: SE ~0.011).
    g = grid({(1e-3, 16.0): 0.95, (1e-3, 4.0): 0.94, (1e-2, 16.0): 0.80})
    # The sweep's trials took half the grid's wall time each (a quieter machine), the same tokens.
    sweep = [row(0, 0.60, 1e-4, 1.0, "tpe", wall=50), row(1, 0.85, 2e-3, 2.0, "tpe", wall=50),
             row(2, 0.945, 1.5e-3, 12.0, "tpe", wall=50), row(3, 0.90, 5e-3, 30.0, "tpe", wall=50),
             row(4, math.nan, 1e-2, 64.0, "tpe", wall=10, state="FAIL", tokens=100),
             row(5, math.nan, 1e-2, 32.0, "tpe", wall=0, state="RUNNING", tokens=0)]
    (r,) = sweep_vs_grid(pd.DataFrame(g + sweep)).to_dict("records")
    assert (r["grid_study"], r["sweep_study"], r["settings"]) == ("s-grid", "s-tpe", "s1")
    assert (r["grid_points"], r["grid_best"], r["grid_eta_a"], r["grid_lambda"]) == (9, 0.95, 1e-3, 16.0)
    assert r["grid_se"] == pytest.approx(math.sqrt(0.95 * 0.05 / 414))
    assert r["region_points"] == 2 and "lambda 4" in r["region"] and "lambda 16" in r["region"]
    assert (r["sweep_trials"], r["sweep_best"], r["sweep_lambda"]) == (6, 0.945, 12.0)
    assert r["nearest_grid_point"] == "eta_A 0.001, lambda 16, rank 8" and r["sweep_best_in_region"]
    assert r["sweep_within_noise"] and r["trials_to_noise"] == 3
    # Compute in tokens: three trials against nine, whatever their wall times; the failed trial's
    # tokens count, and a trial still running (no tokens yet) does not force wall time.
    assert r["compute_unit"] == "tokens" and r["compute_to_noise"] == pytest.approx(3 / 9)
    assert r["sweep_over_grid"] == pytest.approx(4.1 / 9)


def test_without_token_counts_compute_is_wall_time():
    g = [{**r, "tokens": 0} for r in grid({(1e-3, 16.0): 0.95})]
    sweep = [row(0, 0.60, 1e-4, 1.0, "tpe", wall=50, tokens=0),
             row(1, 0.95, 1e-3, 16.0, "tpe", wall=50, tokens=0)]
    (r,) = sweep_vs_grid(pd.DataFrame(g + sweep)).to_dict("records")
    assert r["compute_unit"] == "wall_time_s" and r["compute_to_noise"] == pytest.approx(100 / 900)


def test_a_sweep_that_stays_outside_the_region_says_so():
    g = grid({(1e-3, 16.0): 0.95})
    sweep = [row(0, 0.70, 1e-4, 1.0, "tpe"), row(1, 0.80, 1e-2, 1.5, "tpe")]
    (r,) = sweep_vs_grid(pd.DataFrame(g + sweep)).to_dict("records")
    assert r["region_points"] == 1 and r["nearest_grid_point"] == "eta_A 0.01, lambda 1, rank 8"
    assert not r["sweep_best_in_region"] and not r["sweep_within_noise"]
    assert r["trials_to_noise"] is None and math.isnan(r["compute_to_noise"])


def test_without_a_grid_study_of_the_same_trials_there_is_no_comparison():
    sweep = [row(0, 0.70, 1e-4, 1.0, "tpe"), row(1, 0.80, 1e-2, 1.5, "tpe")]
    other = [{**r, "settings": "s2"} for r in grid({})]
    assert sweep_vs_grid(pd.DataFrame(sweep + other)).empty
    assert not sweep_vs_grid(pd.DataFrame(sweep + grid({}))).empty
    # The budget table prices the sweep alone against a grid; the real grid is not part of the sweep.
    assert report.tables(pd.DataFrame(sweep + grid({})))["budget"]["trials"].tolist() == [2]


def test_the_rich_report_prints_the_comparison(capsys):
    from sweep.console.ui import print_report

    g = grid({(1e-3, 16.0): 0.95})
    df = pd.DataFrame(g + [row(0, 0.951, 1e-3, 14.0, "tpe", wall=90)])
    print_report({**report.tables(df), "sweep_vs_grid": sweep_vs_grid(df)})
    out = capsys.readouterr().out
    # One trial of nine, in tokens.
    assert "the sweep against a full grid" in out and "11 %" in out and "0.95" in out


def test_a_grid_and_a_sweep_of_the_same_trials_share_their_settings_hash_and_nothing_else_does():
    from sweep.data.spec import find_study_file, load_spec
    from sweep.study.stored import settings_hash

    def stored(name, **flags):
        spec = load_spec(find_study_file(name), flags).fixed_head().replace(data_fingerprint="f00d")
        return spec, spec.to_dict()

    sweep, sweep_dict = stored("evidence-minilm-bbc-news")
    grid, grid_dict = stored("evidence-minilm-bbc-news-grid")
    assert sweep.definition_hash() != grid.definition_hash()  # their spaces differ
    assert settings_hash(sweep_dict) == settings_hash(grid_dict)
    assert settings_hash(stored("evidence-minilm-bbc-news-grid", epochs=1.0)[1]) != settings_hash(grid_dict)
    assert settings_hash({**grid_dict, "data_fingerprint": "beef"}) != settings_hash(grid_dict)
    assert settings_hash(None) is None


def test_settings_added_later_at_their_defaults_leave_the_settings_hash_as_it_was():
    """A study stored before base_dtype, quantize and an unset gradient_checkpointing existed pools
    with the same settings stored after (as its name does: TrialConfig.identity)."""
    from sweep.data.config import TrialConfig
    from sweep.study.stored import settings_hash

    now = {"base": TrialConfig().to_dict(), "data_fingerprint": "f00d"}
    assert now["base"]["gradient_checkpointing"] is None and now["base"]["quantize"] == "none"
    before = {**now, "base": {k: v for k, v in now["base"].items() if k not in ("base_dtype", "quantize")}}
    before["base"]["gradient_checkpointing"] = False
    assert settings_hash(before) == settings_hash(now)
    quantized = {**now, "base": {**now["base"], "quantize": "4bit"}}
    assert settings_hash(quantized) != settings_hash(now)
    # unset checkpointing is on for a quantized base: the same trials as asking for it
    asked = {**quantized, "base": {**quantized["base"], "gradient_checkpointing": True}}
    assert settings_hash(asked) == settings_hash(quantized)
    off = {**quantized, "base": {**quantized["base"], "gradient_checkpointing": False}}
    assert settings_hash(off) != settings_hash(quantized)
