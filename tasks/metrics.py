"""Evaluation metrics, computed with numpy so each definition is explicit."""

from __future__ import annotations

import numpy as np

CLASSIFICATION_METRICS = ("precision", "recall", "f1", "accuracy")
REGRESSION_METRICS = ("mae", "mape", "rmse", "r2")
ALL_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(numerator, dtype=float)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, labels: list[int],
                           positive_label: int | None = None) -> dict[str, float]:
    """Precision, recall and F1 (macro over `labels`, or of `positive_label` alone) and accuracy."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    classes = np.asarray([positive_label] if positive_label is not None else labels)
    true_pos = np.array([np.sum((y_pred == c) & (y_true == c)) for c in classes], dtype=float)
    predicted = np.array([np.sum(y_pred == c) for c in classes], dtype=float)
    actual = np.array([np.sum(y_true == c) for c in classes], dtype=float)
    precision = _safe_ratio(true_pos, predicted)
    recall = _safe_ratio(true_pos, actual)
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    return {"precision": float(precision.mean()), "recall": float(recall.mean()),
            "f1": float(f1.mean()), "accuracy": float(np.mean(y_true == y_pred))}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE (mean absolute error), MAPE in percent, RMSE and R²."""
    y_true = np.asarray(y_true, dtype=float).ravel()
    y_pred = np.asarray(y_pred, dtype=float).ravel()
    error = y_pred - y_true
    # Same guard as scikit-learn's mean_absolute_percentage_error for zero targets.
    scale = np.maximum(np.abs(y_true), np.finfo(float).eps)
    total = np.sum((y_true - y_true.mean()) ** 2)
    return {"mae": float(np.mean(np.abs(error))),
            "mape": float(100 * np.mean(np.abs(error) / scale)),
            "rmse": float(np.sqrt(np.mean(error ** 2))),
            "r2": float(1 - np.sum(error ** 2) / total) if total > 0 else float("nan")}
