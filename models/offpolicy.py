"""Off-policy evaluation: what a new policy would have earned, estimated from the log of an old one.

The action log records, per action sent, the action the logging policy chose, the probability it had of
choosing it (`propensity`), and the outcome. A deterministic target policy (the next best action) is
judged on the rows where it would have chosen the logged action, re-weighted by 1 / propensity:

* IPS, inverse propensity scoring: mean of w·r, w = 1[target = logged] / p. Unbiased when p is the true
  logging probability and positive wherever the target acts; high variance when matches are rare.
* SNIPS, self-normalised IPS: sum(w·r) / sum(w). Slightly biased, far less variance; the headline.
* DR, doubly robust: mean of q̂(x, target) + w·(r − q̂(x, logged)), with q̂ the reward model's prediction.
  Unbiased if either the propensities or the reward model are right.

Intervals are percentile bootstrap intervals (Poisson weights, the rows resampled together, so the ratio
of the target's value to the logged one carries their correlation). Overlap is the share of rows where
the target agrees with the log, with the effective sample size of the weights (sum w)² / sum w².

References: Dudík, Langford & Li, "Doubly Robust Policy Evaluation and Learning" (ICML 2011); Swaminathan &
Joachims, "The Self-Normalized Estimator for Counterfactual Learning" (NeurIPS 2015).
"""
from __future__ import annotations

import numpy as np

from atende.models.bootstrap import percentile_interval, poisson_weights


def off_policy_estimates(
    reward: np.ndarray,
    propensity: np.ndarray,
    match: np.ndarray,
    reward_hat_logged: np.ndarray,
    reward_hat_target: np.ndarray,
    *,
    replicates: int = 400,
    level: float = 0.95,
    seed: int = 7,
    propensity_floor: float = 0.01,
) -> dict[str, float]:
    """Estimates per logged row (means over the rows), with bootstrap intervals.

    `reward`: the outcome of the logged action (a number: 1/0 for a conversion, BRL for value);
    `propensity`: the logging policy's probability of the logged action (floored at `propensity_floor`);
    `match`: whether the target policy picks the logged action for that row's context;
    `reward_hat_logged` / `reward_hat_target`: the reward model's expectation for the logged action and
    for the target's action, in the reward's unit.

    Returns `logged`, `ips`, `snips`, `dr`, each with `_low`/`_high` (the `level` interval); `snips_lift`
    and `dr_lift` (target / logged, with intervals); `rows`, `match_rate`, `effective_rows`. An estimate
    that is not defined (SNIPS with no matching row, a lift over a logged value of 0) is left out."""
    r = np.asarray(reward, dtype=float)
    n = len(r)
    if n == 0:
        return {"rows": 0.0}
    p = np.maximum(np.asarray(propensity, dtype=float), propensity_floor)
    w = np.asarray(match, dtype=bool) / p
    dr_terms = np.asarray(reward_hat_target, dtype=float) + w * (r - np.asarray(reward_hat_logged, dtype=float))

    def estimate(k: np.ndarray) -> dict[str, np.ndarray]:
        """Every estimator under row weights k (shape (B, n)); the plain estimate is k = 1."""
        total = k.sum(axis=1)
        # a replicate whose Poisson weights are all 0 (likely when there are few rows) resampled nothing: its
        # estimates are NaN, and the percentile interval leaves them out
        with np.errstate(divide="ignore", invalid="ignore"):
            logged = (k * r).sum(axis=1) / total
            snips = _snips(k, w, r)
            dr = (k * dr_terms).sum(axis=1) / total
            return {"logged": logged, "ips": (k * w * r).sum(axis=1) / total, "snips": snips, "dr": dr,
                    "snips_lift": snips / logged, "dr_lift": dr / logged}

    point = {name: float(v[0]) for name, v in estimate(np.ones((1, n))).items()}
    draws: dict[str, list[np.ndarray]] = {name: [] for name in point}
    for weights in poisson_weights(n, replicates, seed):
        for name, values in estimate(weights).items():
            draws[name].append(values)
    out: dict[str, float] = {"rows": float(n), "match_rate": float(np.mean(match)),
                             "effective_rows": float(w.sum() ** 2 / (w**2).sum()) if w.any() else 0.0}
    for name, value in point.items():
        if not np.isfinite(value):  # no row matches (SNIPS), or nothing was logged to compare with (lifts)
            continue
        out[name] = value
        low, high = percentile_interval(np.concatenate(draws[name]), level)
        if np.isfinite(low):
            out[f"{name}_low"], out[f"{name}_high"] = low, high
    return out


def _snips(k: np.ndarray, w: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Self-normalised IPS under row weights k (B × n): sum(k·w·r) / sum(k·w), NaN where no weight is left."""
    weighted = (k * w).sum(axis=1)
    return np.divide((k * w * r).sum(axis=1), weighted, out=np.full(len(k), np.nan), where=weighted > 0)


def paired_snips_difference(
    reward: np.ndarray,
    propensity: np.ndarray,
    match_challenger: np.ndarray,
    match_champion: np.ndarray,
    *,
    replicates: int = 400,
    level: float = 0.95,
    seed: int = 7,
    propensity_floor: float = 0.01,
) -> dict[str, float]:
    """Two deterministic policies judged on the same logged rows: each one's SNIPS estimate and the
    difference (challenger − champion) with a percentile bootstrap interval, the rows resampled once for
    both (Poisson weights), so the interval is the difference's own. Returns `challenger`, `champion`,
    `improvement`, `improvement_low`, `improvement_high`; an estimate that is not defined (a policy that
    never picks the logged action) is left out, and so is the difference then."""
    r = np.asarray(reward, dtype=float)
    n = len(r)
    if n == 0:
        return {}
    p = np.maximum(np.asarray(propensity, dtype=float), propensity_floor)
    w_a = np.asarray(match_challenger, dtype=bool) / p
    w_b = np.asarray(match_champion, dtype=bool) / p
    ones = np.ones((1, n))
    a, b = float(_snips(ones, w_a, r)[0]), float(_snips(ones, w_b, r)[0])
    out: dict[str, float] = {}
    if np.isfinite(a):
        out["challenger"] = a
    if np.isfinite(b):
        out["champion"] = b
    if not (np.isfinite(a) and np.isfinite(b)):
        return out
    draws = [_snips(k, w_a, r) - _snips(k, w_b, r) for k in poisson_weights(n, replicates, seed)]
    low, high = percentile_interval(np.concatenate(draws), level)
    out.update({"improvement": a - b, "improvement_low": low, "improvement_high": high})
    return out
