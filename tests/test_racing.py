"""Racing a study's contenders on fresh seeds (sweep.analysis.report.race, a pure function of the trials), and
the report reading replicates as means over seeds."""

import pandas as pd
import pytest

from sweep.analysis import report

# (number, lambda, value) of the search trials: plain LoRA, and the best of bins 2, 3 and 4
SEARCH = [(0, 1.0, 0.80), (1, 4.0, 0.85), (2, 8.0, 0.70), (3, 16.0, 0.845), (4, 4.0, 0.60)]
SEED = 42


def frame(replicates: dict[int, list[float]], se: float = 0.004) -> pd.DataFrame:
    """A study's trials: the search trials at seed 42 and, per search trial, its replicates' values
    at seeds 43, 44, ... (replicate_of its number); every value with the standard error `se`."""
    rows = [{"number": n, "lambda": lam, "value": v, "seed": SEED} for n, lam, v in SEARCH]
    number = len(rows)
    for of, values in replicates.items():
        lam = next(lam for n, lam, _ in SEARCH if n == of)
        for i, v in enumerate(values):
            rows.append({"number": number, "lambda": lam, "value": v, "seed": SEED + 1 + i,
                         "replicate_of": of})
            number += 1
    df = pd.DataFrame(rows)
    return df.assign(study="s", model="m", task="t", definition="d", metric_name="accuracy", state="COMPLETE",
                     eta_a=1e-3, rank=8, metric_se=se, init="standard", tokens=100,
                     wall_time_s=1.0)


def test_before_any_replicate_every_bins_best_is_in_and_nothing_is_dropped():
    r = report.race(frame({}))
    assert r.trials == {0: 0, 2: 1, 3: 2, 4: 3}  # trial 4 is not its bin's best
    assert r.rounds == 0 and set(r.alive) == {0, 2, 3, 4} and r.dropped == {} and r.leader is None


def test_a_truly_worse_bin_is_dropped_and_a_tied_one_kept():
    spread = [0.004, -0.003, 0.001]  # the seed-to-seed spread, alike in every configuration
    reps = {0: [0.80 + d for d in spread], 1: [0.85 + d for d in spread], 2: [0.70 + d for d in spread],
            3: [0.848 - d for d in spread]}
    r = report.race(frame(reps))
    assert r.rounds == 3 and r.leader == 2 and r.alive[0] == 2
    assert set(r.dropped) == {0, 3}  # plain LoRA and bin 3 trail by 0.05 and 0.15: far past the noise
    assert 4 in r.survivors and r.means[4] == pytest.approx(0.848 - sum(spread) / 3)
    assert all(p < report.RACE_LEVEL for p in r.dropped.values())


def test_a_gap_within_the_seed_spread_drops_nothing():
    wide = [0.03, -0.03, 0.0]  # seeds spread 0.03: a gap of 0.01 is noise
    reps = {0: [0.84 + d for d in wide], 1: [0.85 + d for d in wide], 2: [0.84 + d for d in wide],
            3: [0.845 + d for d in wide]}
    r = report.race(frame(reps))
    assert r.dropped == {} and set(r.survivors) == {0, 2, 3, 4}


def test_a_bin_dropped_in_an_earlier_round_stays_out():
    reps = {0: [0.80], 1: [0.85, 0.851], 2: [0.70], 3: [0.848, 0.846]}  # bins 0 and 3 left after round 1
    r = report.race(frame(reps))
    assert r.rounds == 2 and set(r.alive) == {2, 4}


def test_holm_rejects_step_down_and_stops_at_the_first_it_keeps():
    assert report.holm({1: 0.01, 2: 0.02, 3: 0.04}, 0.05) == {1: 0.03, 2: 0.04, 3: 0.04}
    assert report.holm({1: 0.02, 2: 0.06, 3: 0.001}, 0.05) == {3: 0.003, 1: 0.04}  # 0.06 stops it
    assert report.holm({1: 0.03, 2: 0.001}, 0.05) == {2: 0.002, 1: 0.03}
    assert report.holm({1: 0.2}, 0.05) == {}


def test_the_report_reads_a_replicated_trial_at_its_mean_over_seeds():
    # trial 1 (bin 2) was lucky: its replicates average 0.80, below trial 3's 0.845 unreplicated
    df = frame({1: [0.79, 0.81, 0.75]})
    folded = report.completed(df)
    assert len(folded) == len(SEARCH)  # the replicates are folded into their trial
    row = folded.set_index("number").loc[1]
    assert row["value"] == pytest.approx((0.85 + 0.79 + 0.81 + 0.75) / 4) and row["seeds"] == 4
    best = report.best_configs(df).iloc[0]
    assert best["number"] == 3
    var, dof = report.seed_noise(folded)
    assert dof == 3 and var == pytest.approx(pd.Series([0.85, 0.79, 0.81, 0.75]).var())
    # the seed part of a difference's SE shrinks with the seeds a mean holds
    a, b = folded.set_index("number").loc[1].to_dict(), folded.set_index("number").loc[3].to_dict()
    a["number"], b["number"] = 1, 3
    assert report.diff_se(a, b, var) ** 2 == pytest.approx(2 * 0.004**2 + var * (1 / 4 + 1))
    assert report.default_lambda(df)["m"].lambda_bin == 4
    # parameter importance counts a replicated trial once (5 trials, not 5 and 3 replicates)
    shares = report.tables(df)["importance"]
    assert shares.loc[shares["among"] == "all", "trials"].tolist() == [len(SEARCH)] * 2


def test_the_summary_says_where_the_race_ended():
    spread = [0.004, -0.003, 0.001]
    tied = {0: [0.80 + d for d in spread], 1: [0.85 + d for d in spread], 2: [0.70 + d for d in spread],
            3: [0.848 - d for d in spread]}
    notes = report.summary(frame(tied))["notes"].item()
    assert "race over 3 fresh seed(s): a tie among lambda 4, lambda 16" in notes
    alone = {k: v for k, v in tied.items() if k != 3}  # bin 16 dropped in the first round
    assert "lambda 4 left" in report.summary(frame(alone))["notes"].item()
    assert "race" not in report.summary(frame({}))["notes"].item()
