"""Metrics agree with scikit-learn's definitions."""

import numpy as np
import pytest
from sklearn import metrics as skm

from tasks.metrics import classification_metrics, regression_metrics

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("n_classes", [3, 10])
def test_macro_classification_metrics_match_sklearn(n_classes):
    y_true = RNG.integers(0, n_classes, 500)
    y_pred = np.where(RNG.random(500) < 0.7, y_true, RNG.integers(0, n_classes, 500))
    got = classification_metrics(y_true, y_pred, labels=list(range(n_classes)))
    assert got["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, average="macro"))
    assert got["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, average="macro"))
    assert got["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))


def test_binary_metrics_are_those_of_the_positive_class():
    y_true = RNG.integers(0, 2, 400)
    y_pred = np.where(RNG.random(400) < 0.8, y_true, 1 - y_true)
    got = classification_metrics(y_true, y_pred, labels=[0, 1], positive_label=1)
    assert got["precision"] == pytest.approx(skm.precision_score(y_true, y_pred))
    assert got["recall"] == pytest.approx(skm.recall_score(y_true, y_pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y_true, y_pred))


def test_class_never_predicted_counts_as_zero_precision_like_sklearn():
    y_true, y_pred = np.array([0, 1, 2, 2]), np.array([0, 0, 0, 0])
    got = classification_metrics(y_true, y_pred, labels=[0, 1, 2])
    expected = skm.precision_score(y_true, y_pred, average="macro", zero_division=0)
    assert got["precision"] == pytest.approx(expected)
    assert got["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_regression_metrics_match_sklearn():
    y_true = RNG.uniform(5, 50, 300)
    y_pred = y_true + RNG.normal(0, 3, 300)
    got = regression_metrics(y_true, y_pred)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred))
    assert got["mape"] == pytest.approx(100 * skm.mean_absolute_percentage_error(y_true, y_pred))
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y_true, y_pred)))
    assert got["r2"] == pytest.approx(skm.r2_score(y_true, y_pred))


def test_mae_is_not_mse():
    got = regression_metrics(np.array([0.0, 0.0]), np.array([3.0, 3.0]))
    assert got["mae"] == 3.0 and got["rmse"] == 3.0
    got = regression_metrics(np.array([0.0, 0.0]), np.array([1.0, 5.0]))
    assert got["mae"] == 3.0 and got["rmse"] == pytest.approx(np.sqrt(13))


def test_constant_prediction_has_zero_r2_and_predicting_zero_gives_mape_100():
    y = np.array([20.0, 40.0, 60.0])
    assert regression_metrics(y, np.full(3, y.mean()))["r2"] == pytest.approx(0.0)
    assert regression_metrics(y, np.zeros(3))["mape"] == pytest.approx(100.0)
