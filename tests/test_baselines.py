"""The reference models the report sets beside the networks."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge

from tasks import baselines


def _split(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    half = len(y) // 2
    return {"x_train": x[:half], "y_train": y[:half], "x_test": x[half:], "y_test": y[half:]}


def test_regression_baselines_score_every_model_on_both_splits():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype("float32")
    y = (3 * x[:, 0] - 2 * x[:, 1] + 50 + rng.normal(scale=0.1, size=600)).astype("float32")
    rows = pd.DataFrame(baselines.fit_baselines(_split(x, y), "regression", None))
    assert set(rows["model"]) == {baselines.MEAN, baselines.MEDIAN, baselines.ZERO, "Ridge (alpha=1)",
                                  "HistGradientBoosting"}
    assert sorted(rows.groupby("model").size().unique()) == [2]  # train and test for each
    test = rows[rows["split"] == "test"].set_index("model")
    assert test.loc[baselines.ZERO, "mape"] == 100.0           # predicting 0 misses by 100 %
    assert test.loc["Ridge (alpha=1)", "rmse"] < 0.2           # the target is linear in x
    assert test.loc["HistGradientBoosting", "rmse"] < test.loc[baselines.MEAN, "rmse"] / 2


def test_classification_baselines_beat_the_majority_class():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0.8).astype("int64")
    rows = pd.DataFrame(baselines.fit_baselines(_split(x, y), "classification", 2))
    test = rows[rows["split"] == "test"].set_index("model")
    assert test.loc[baselines.MAJORITY, "f1"] == 0.0  # the majority class is the negative one
    assert test.loc["LogisticRegression", "f1"] > 0.9


def test_boosting_fits_on_every_core_and_linear_models_on_one():
    cores = len(os.sched_getaffinity(0))
    assert baselines.native_threads(HistGradientBoostingRegressor()) == cores
    assert baselines.native_threads(Ridge()) == 1
    assert baselines.native_threads(LogisticRegression()) == 1
