"""Are two engines' results the same? Per-cell Welch t-tests over seeds, Holm-corrected, and the mean
difference across cells with a 95 % confidence interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CELL_COLUMNS = ["experiment", "hidden_layers", "units", "activation", "epochs", "batch_size"]


@dataclass(frozen=True)
class Equivalence:
    """The comparison of engine A with engine B on one metric."""

    metric: str
    cells: pd.DataFrame          # one row per grid cell: means, stds, seeds, Welch p, Holm-adjusted p
    mean_difference: float       # mean over cells of (mean A - mean B)
    ci_low: float
    ci_high: float
    alpha: float

    @property
    def n_different(self) -> int:
        """Cells whose difference is significant after the Holm correction."""
        return int((self.cells["p_holm"] < self.alpha).sum())

    @property
    def indistinguishable(self) -> bool:
        """No cell differs after correction, and the 95 % interval of the mean difference contains 0."""
        return self.n_different == 0 and self.ci_low <= 0 <= self.ci_high

    def summary(self) -> str:
        """One sentence with the test, its result and the interval."""
        verdict = "statistically indistinguishable" if self.indistinguishable else "DIFFERENT"
        return (f"{self.metric}: {len(self.cells)} cells, {self.n_different} differ at alpha={self.alpha} "
                f"(Welch t-test per cell over {int(self.cells['n_a'].min())}+ seeds, Holm-corrected); mean "
                f"difference A-B {self.mean_difference:+.4f}, 95% CI [{self.ci_low:+.4f}, {self.ci_high:+.4f}]: "
                f"{verdict}.")


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p_values = np.asarray(p_values, dtype=float)
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p_values[index])
        adjusted[index] = min(1.0, running)
    return adjusted


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-based confidence interval of a sample."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def compare(a: pd.DataFrame, b: pd.DataFrame, metric: str, *, alpha: float = 0.05,
            split: str = "test") -> Equivalence:
    """Compare two results frames (the results.parquet schema) cell by cell on `metric`."""
    cells = []
    for key, group_a in a[a["split"] == split].groupby(CELL_COLUMNS, sort=True):
        group_b = b[(b["split"] == split)
                    & np.logical_and.reduce([b[c] == v for c, v in zip(CELL_COLUMNS, key)])]
        if group_b.empty:
            continue
        x, y = group_a[metric].to_numpy(float), group_b[metric].to_numpy(float)
        if len(x) >= 2 and len(y) >= 2 and (x.std() > 0 or y.std() > 0):
            p = float(stats.ttest_ind(x, y, equal_var=False).pvalue)
        else:
            p = 1.0 if np.allclose(x.mean(), y.mean()) else 0.0
        cells.append(dict(zip(CELL_COLUMNS, key), mean_a=x.mean(), std_a=x.std(ddof=1) if len(x) > 1 else 0.0,
                          n_a=len(x), mean_b=y.mean(), std_b=y.std(ddof=1) if len(y) > 1 else 0.0, n_b=len(y),
                          difference=x.mean() - y.mean(), p=p))
    if not cells:
        raise ValueError("the two results frames share no grid cell")
    table = pd.DataFrame(cells)
    table["p_holm"] = holm(table["p"].to_numpy())
    mean, low, high = mean_ci(table["difference"].to_numpy())
    return Equivalence(metric=metric, cells=table, mean_difference=mean, ci_low=low, ci_high=high, alpha=alpha)
