"""Percentile bootstrap with Poisson weights: one home for the resampling the evaluations share.

Each replicate weighs every unit (customer, logged action, test row) by an independent Poisson(1) count
instead of drawing units with replacement: the same distribution for large n, and the replicates come as a
(replicates × n) weight matrix, so every estimator is a few matrix products (models.offpolicy,
models.comparison, models.products). Values computed from the same weights keep their correlation (a ratio
or a difference of two means carries it into its interval)."""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np


def poisson_weights(n: int, replicates: int, seed: int) -> Iterator[np.ndarray]:
    """Poisson(1) bootstrap weights for `n` units, (chunk × n) at a time (about 32 MB each), `replicates` rows
    in all, from one seeded generator."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(replicates, 4_000_000 // max(n, 1)))
    done = 0
    while done < replicates:
        size = min(chunk, replicates - done)
        yield rng.poisson(1.0, size=(size, n)).astype(float)
        done += size


def mean_draws(values: Mapping[str, np.ndarray], replicates: int, seed: int) -> dict[str, np.ndarray]:
    """Per name, the bootstrap replicates of the mean of its values (one per unit, every array in the same
    unit order, all resampled with the same weights)."""
    arrays = {name: np.asarray(v, dtype=float) for name, v in values.items()}
    n = len(next(iter(arrays.values()))) if arrays else 0
    means: dict[str, list[np.ndarray]] = {name: [] for name in arrays}
    for weights in poisson_weights(n, replicates, seed):
        total = np.maximum(weights.sum(axis=1), 1.0)
        for name, v in arrays.items():
            means[name].append(weights @ v / total)
    return {name: np.concatenate(m) if m else np.zeros(0) for name, m in means.items()}


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The `level` percentile interval of the finite draws; (nan, nan) when there is none."""
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))
