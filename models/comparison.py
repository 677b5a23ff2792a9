"""Challenger against champion: is a new model worse than the one serving, beyond the interval?

A retrained model replaces the champion unless it is worse on the measures its users judge it by, beyond
the uncertainty of the measurement. Each measure is an *improvement*: challenger − champion, signed so that
positive is better, with a percentile bootstrap interval.

* **Paired**, where both models can be judged on the same units (customers, logged actions) that neither
  was trained on: the bootstrap resamples the units once for both models, so the interval is that of the
  difference itself (far narrower than two separate intervals: the units' own noise cancels).
* **Unpaired**, where the champion cannot be judged fairly on the new data (it was trained on part of what
  the new model is tested on): the challenger's value and interval on its own test set against the value
  the champion's training run logged on its own. Only the challenger's uncertainty is in the interval.

A model is "worse beyond the interval" when the whole interval of its improvement lies below 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from atende.models.bootstrap import mean_draws, percentile_interval

#: the run metrics of a paired measure `m`: challenge_<m>_improvement, _low, _high
PAIRED_PREFIX = "challenge_"


@dataclass(frozen=True)
class Improvement:
    """challenger − champion on `measure`, signed so that positive is better, with its interval."""
    measure: str
    value: float
    low: float
    high: float
    paired: bool
    higher_is_better: bool = True

    @property
    def worse(self) -> bool:
        """Worse beyond the interval: the whole interval below 0."""
        return self.high < 0

    def sentence(self) -> str:
        how = "paired on the same held-out rows" if self.paired else "against the champion's logged value"
        verdict = "worse beyond its interval" if self.worse else "not worse beyond its interval"
        value, low, high = (v + 0.0 for v in (self.value, self.low, self.high))  # -0.0 reads as +0
        return (f"{self.measure} {verdict}: {value:+.4g} ({low:+.4g} to {high:+.4g}; {how}"
                f"{'' if self.higher_is_better else ', lower is better'})")


def paired_metrics(measure: str, value: float, low: float, high: float) -> dict[str, float]:
    """The run metrics of a paired improvement (read back by `from_metrics`)."""
    return {f"{PAIRED_PREFIX}{measure}_improvement": value, f"{PAIRED_PREFIX}{measure}_improvement_low": low,
            f"{PAIRED_PREFIX}{measure}_improvement_high": high}


def from_metrics(measure: str, higher_is_better: bool, metrics: dict[str, float],
                 champion_metrics: dict[str, float] | None) -> Improvement | None:
    """The improvement on `measure` from a challenger run's metrics: paired when the run logged
    `challenge_<measure>_improvement` (and its interval); else unpaired from the run's `<measure>`,
    `<measure>_low`, `<measure>_high` against the champion's logged `<measure>`; None when neither can be
    judged (no interval, no champion value, or a value that is not a number)."""
    key = f"{PAIRED_PREFIX}{measure}_improvement"
    paired = [metrics.get(k) for k in (key, f"{key}_low", f"{key}_high")]
    if all(v is not None and math.isfinite(v) for v in paired):
        value, low, high = (float(v) for v in paired)  # type: ignore[arg-type]
        return Improvement(measure, value, low, high, paired=True, higher_is_better=higher_is_better)
    own = [metrics.get(k) for k in (measure, f"{measure}_low", f"{measure}_high")]
    theirs = (champion_metrics or {}).get(measure)
    if theirs is None or not math.isfinite(theirs) or not all(v is not None and math.isfinite(v) for v in own):
        return None
    sign = 1.0 if higher_is_better else -1.0
    value, low, high = (sign * (float(v) - float(theirs)) for v in own)  # type: ignore[arg-type]
    low, high = min(low, high), max(low, high)
    return Improvement(measure, value, low, high, paired=False, higher_is_better=higher_is_better)


def paired_mean_difference(challenger: np.ndarray, champion: np.ndarray, *, higher_is_better: bool = True,
                           replicates: int = 400, level: float = 0.95, seed: int = 7) -> tuple[float, float, float]:
    """(improvement, low, high): the mean of challenger − champion over the same units (signed so that positive
    is better), with a percentile bootstrap interval that resamples the units once for both."""
    a, b = np.asarray(challenger, dtype=float), np.asarray(champion, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"one value per unit for both models: {a.shape} against {b.shape}")
    diff = (a - b) if higher_is_better else (b - a)
    keep = np.isfinite(diff)
    diff = diff[keep]
    if not len(diff):
        return math.nan, math.nan, math.nan
    low, high = percentile_interval(mean_draws({"diff": diff}, replicates, seed)["diff"], level)
    return float(diff.mean()), low, high


def rmse_interval(errors: np.ndarray, *, replicates: int = 400, level: float = 0.95,
                  seed: int = 7) -> tuple[float, float, float]:
    """(RMSE, low, high) of prediction errors, with a percentile bootstrap interval over the rows."""
    squared = np.asarray(errors, dtype=float) ** 2
    if not len(squared):
        return math.nan, math.nan, math.nan
    low, high = percentile_interval(np.sqrt(mean_draws({"squared": squared}, replicates, seed)["squared"]), level)
    return float(np.sqrt(squared.mean())), low, high
