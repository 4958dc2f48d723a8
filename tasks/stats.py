"""Hyperparameter effects with confidence intervals, from paired differences between grid cells."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

GRID_AXES = ["hidden_layers", "units", "activation", "epochs", "batch_size"]
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Effect:
    """Mean change of a metric when one factor moves from `baseline` to `level`, all else equal."""

    experiment: str
    factor: str
    baseline: str
    level: str
    metric: str
    higher_is_better: bool
    n_pairs: int
    mean: float
    low: float
    high: float

    @property
    def estimable(self) -> bool:
        """An interval needs at least two pairs."""
        return self.n_pairs >= 2 and np.isfinite(self.low) and np.isfinite(self.high)

    @property
    def within_noise(self) -> bool:
        """True when the interval contains 0 (or cannot be computed)."""
        return not self.estimable or self.low <= 0.0 <= self.high

    @property
    def improves(self) -> bool:
        """True when the interval excludes 0 on the side of a better metric."""
        if self.within_noise:
            return False
        return self.low > 0 if self.higher_is_better else self.high < 0

    @property
    def verdict(self) -> str:
        """'better', 'worse', 'within noise' or 'too few pairs'."""
        if not self.estimable:
            return "too few pairs"
        if self.within_noise:
            return "within noise"
        return "better" if self.improves else "worse"


def mean_confidence_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and t-based two-sided interval of the mean; NaN bounds with fewer than two values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    sem = float(values.std(ddof=1) / np.sqrt(len(values)))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=len(values) - 1)) * sem
    return mean, mean - half, mean + half


def _level_sort_key(value) -> tuple:
    """Numbers ascending, then names: the first level is the baseline."""
    return (0, float(value), "") if isinstance(value, (int, float, np.integer, np.floating)) else (1, 0.0, str(value))


def paired_differences(rows: pd.DataFrame, factor: str, baseline, level, metric: str) -> np.ndarray:
    """metric(level) − metric(baseline) for every pair of rows equal in all other axes and the seed."""
    others = [a for a in GRID_AXES if a != factor] + ["seed"]
    left = rows[rows[factor] == baseline][others + [metric]]
    right = rows[rows[factor] == level][others + [metric]]
    merged = left.merge(right, on=others, suffixes=("_base", "_level"))
    return (merged[f"{metric}_level"] - merged[f"{metric}_base"]).to_numpy(dtype=float)


def factor_effects(results: pd.DataFrame, experiment: str, metric: str, higher_is_better: bool,
                   split: str = "test") -> list[Effect]:
    """For each factor with several levels: each level against the first, as a mean paired difference and CI."""
    rows = results[(results["experiment"] == experiment) & (results["split"] == split)]
    rows = rows.dropna(subset=[metric])
    effects = []
    for factor in GRID_AXES:
        levels = sorted(rows[factor].unique(), key=_level_sort_key)
        for level in levels[1:]:
            differences = paired_differences(rows, factor, levels[0], level, metric)
            mean, low, high = mean_confidence_interval(differences)
            effects.append(Effect(experiment=experiment, factor=factor, baseline=str(levels[0]), level=str(level),
                                  metric=metric, higher_is_better=higher_is_better,
                                  n_pairs=int(np.isfinite(differences).sum()), mean=mean, low=low, high=high))
    return effects


def seed_spread(results: pd.DataFrame, experiment: str, metric: str, split: str = "test") -> float:
    """Pooled seed-to-seed standard deviation of a metric over the cells with several seeds; NaN if none."""
    rows = results[(results["experiment"] == experiment) & (results["split"] == split)].dropna(subset=[metric])
    groups = rows.groupby(GRID_AXES)[metric]
    variances, counts = groups.var(ddof=1), groups.count()
    usable = counts > 1
    if not usable.any():
        return float("nan")
    return float(np.sqrt(np.average(variances[usable], weights=counts[usable] - 1)))
