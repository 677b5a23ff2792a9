"""Challenger against champion (models.comparison, models.offpolicy.paired_snips_difference): paired
intervals of a difference, the unpaired fallback, and what "worse beyond the interval" means."""
from __future__ import annotations

import math

import numpy as np
import pytest

from atende.models import comparison
from atende.models.offpolicy import paired_snips_difference


def test_a_paired_interval_is_the_difference_s_own_and_far_narrower():
    rng = np.random.default_rng(1)
    unit = rng.normal(0.0, 3.0, 2_000)           # what differs between units, shared by both models
    champion = unit + rng.normal(0.0, 0.1, 2_000)
    challenger = unit + 0.05 + rng.normal(0.0, 0.1, 2_000)

    value, low, high = comparison.paired_mean_difference(challenger, champion, seed=3)

    assert value == pytest.approx(float(np.mean(challenger - champion)))
    assert 0 < low < 0.05 < high < 0.1  # the 0.05 shift is found, and the interval excludes 0
    # unpaired, the units' own spread (sd 3) swamps it: the challenger's mean's interval is ~30 times wider
    own_width = 2 * 1.96 * challenger.std() / np.sqrt(len(challenger))
    assert own_width > 15 * (high - low)
    # lower is better: the sign flips, the interval with it
    flipped = comparison.paired_mean_difference(challenger, champion, higher_is_better=False, seed=3)
    assert flipped == pytest.approx((-value, -high, -low), abs=1e-3)


def test_a_worse_challenger_is_worse_only_beyond_its_interval():
    clear = comparison.Improvement("m", -0.3, -0.5, -0.1, paired=True)
    noise = comparison.Improvement("m", -0.3, -0.7, 0.1, paired=True)
    assert clear.worse and not noise.worse
    assert "worse beyond its interval" in clear.sentence() and "not worse" in noise.sentence()


def test_improvements_read_from_run_metrics_paired_first_then_unpaired():
    paired = {**comparison.paired_metrics("ndcg", -0.02, -0.05, 0.01), "ndcg": 0.2, "ndcg_low": 0.1, "ndcg_high": 0.3}
    got = comparison.from_metrics("ndcg", True, paired, {"ndcg": 0.5})
    assert got == comparison.Improvement("ndcg", -0.02, -0.05, 0.01, paired=True)
    # unpaired: the challenger's own interval against the champion's logged value
    got = comparison.from_metrics("ndcg", True, {"ndcg": 0.2, "ndcg_low": 0.1, "ndcg_high": 0.3}, {"ndcg": 0.35})
    assert (got.value, got.low, got.high, got.paired) == pytest.approx((-0.15, -0.25, -0.05, False))
    assert got.worse
    # lower is better (an error): a lower value is an improvement
    got = comparison.from_metrics("rmse", False, {"rmse": 0.30, "rmse_low": 0.28, "rmse_high": 0.33}, {"rmse": 0.32})
    assert (got.value, got.low, got.high) == pytest.approx((0.02, -0.01, 0.04)) and not got.worse
    # nothing to judge with: no interval, no champion value, or not a number
    assert comparison.from_metrics("ndcg", True, {"ndcg": 0.2}, {"ndcg": 0.1}) is None
    assert comparison.from_metrics("ndcg", True, {"ndcg": 0.2, "ndcg_low": 0.1, "ndcg_high": 0.3}, {}) is None
    assert comparison.from_metrics("ndcg", True, {"ndcg": 0.2, "ndcg_low": 0.1, "ndcg_high": 0.3},
                                   {"ndcg": math.nan}) is None


def test_rmse_interval_holds_the_rmse():
    errors = np.random.default_rng(2).normal(0.0, 0.4, 1_500)
    rmse, low, high = comparison.rmse_interval(errors, seed=5)
    assert rmse == pytest.approx(float(np.sqrt(np.mean(errors**2))))
    assert low < rmse < high and 0.37 < low and high < 0.43
    assert all(math.isnan(v) for v in comparison.rmse_interval(np.array([])))


def test_paired_snips_of_two_policies_on_the_same_log():
    rng = np.random.default_rng(4)
    n = 6_000
    logged = rng.integers(0, 3, n)                    # uniform logging over three actions: propensity 1/3
    x = rng.random(n)
    # action 0 converts for x > 0.5, action 1 for x <= 0.5, action 2 rarely
    p_convert = np.where(logged == 0, np.where(x > 0.5, 0.6, 0.1), np.where(logged == 1, np.where(x <= 0.5, 0.6, 0.1), 0.05))
    reward = (rng.random(n) < p_convert).astype(float)
    smart = np.where(x > 0.5, 0, 1)                   # picks the action that converts
    blunt = np.zeros(n, dtype=int)                    # always action 0
    propensity = np.full(n, 1 / 3)

    same = paired_snips_difference(reward, propensity, smart == logged, smart == logged, seed=2)
    assert same["improvement"] == same["improvement_low"] == same["improvement_high"] == 0.0

    got = paired_snips_difference(reward, propensity, smart == logged, blunt == logged, seed=2)
    assert got["challenger"] == pytest.approx(0.6, abs=0.03) and got["champion"] == pytest.approx(0.35, abs=0.03)
    assert got["improvement"] == pytest.approx(got["challenger"] - got["champion"])
    assert 0 < got["improvement_low"] < got["improvement"] < got["improvement_high"]
    # the other way round: worse beyond the interval
    back = paired_snips_difference(reward, propensity, blunt == logged, smart == logged, seed=2)
    assert back["improvement_high"] < 0
    # a policy that never agrees with the log has no estimate, and nothing is compared
    never = paired_snips_difference(reward, propensity, np.zeros(n, bool), smart == logged)
    assert "challenger" not in never and "improvement" not in never and "champion" in never
