"""Reference models on the same preprocessed splits and metrics as the networks, cached per data digest."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits

from tasks.preprocess import PreparedRef, load_arrays
from tasks.results import write_text_atomic
from tasks.train import score

logger = logging.getLogger(__name__)

# Bump when a baseline's definition or settings change, so cached baseline results are recomputed.
BASELINES_VERSION = "1"
# Boosting rounds; wide data (MNIST: 784 features, 10 trees per round) gets fewer so that it stays
# around a minute on two cores. Cached per data digest, so this is paid once per preprocessed entry.
BOOSTING_MAX_ITER = 100
WIDE_BOOSTING_MAX_ITER = 20
WIDE_FEATURES = 200
LOGISTIC_MAX_ITER = 500
SEED = 0
MEAN, MEDIAN, ZERO, MAJORITY = ("constant: training mean", "constant: training median", "constant: zero",
                                "constant: majority class")


class _Constant:
    """Predicts one value for every row."""

    def __init__(self, value: float):
        self.value = value

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Constant:
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.value)


def candidate_models(task: str, y_train: np.ndarray, n_features: int) -> dict[str, object]:
    """The baselines of a task, unfitted (constants already know their value)."""
    rounds = WIDE_BOOSTING_MAX_ITER if n_features > WIDE_FEATURES else BOOSTING_MAX_ITER
    if task == "regression":
        return {MEAN: _Constant(float(np.mean(y_train))), MEDIAN: _Constant(float(np.median(y_train))),
                ZERO: _Constant(0.0), "Ridge (alpha=1)": Ridge(alpha=1.0),
                "HistGradientBoosting": HistGradientBoostingRegressor(max_iter=rounds, random_state=SEED)}
    labels, counts = np.unique(y_train, return_counts=True)
    return {MAJORITY: _Constant(labels[np.argmax(counts)]),
            "LogisticRegression": LogisticRegression(max_iter=LOGISTIC_MAX_ITER),
            "HistGradientBoosting": HistGradientBoostingClassifier(max_iter=rounds, random_state=SEED)}


def native_threads(model: object) -> int:
    """Native threads to fit a baseline with: every core this process may use for the boosting models, whose
    OpenMP histogram building scales (MNIST's fit takes 10.0 s on one core, 5.6 s on two), and one for
    the linear models, whose BLAS calls on these sizes only slow down with more (0.6 s against 1.4 s).
    The baselines are fitted in the report step, after training, when nothing else runs in the process.
    """
    if isinstance(model, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1


def fit_baselines(arrays: dict[str, np.ndarray], task: str, n_classes: int | None) -> list[dict]:
    """Fit each baseline on the training split; one row per model and split with every metric."""
    rows = []
    for name, model in candidate_models(task, arrays["y_train"], arrays["x_train"].shape[1]).items():
        started = time.perf_counter()
        with threadpool_limits(native_threads(model)):
            model.fit(arrays["x_train"], arrays["y_train"])
        seconds = time.perf_counter() - started
        for split in ("train", "test"):
            predicted = np.asarray(model.predict(arrays[f"x_{split}"]))
            if task == "classification":
                predicted = predicted.astype("int64")
            rows.append({"model": name, "split": split, "fit_seconds": seconds,
                         **score(arrays[f"y_{split}"], predicted, task, n_classes)})
    return rows


def cache_path(ref: PreparedRef) -> Path:
    """Beside the preprocessed cache entry, named by it: a new entry means new baselines."""
    entry = Path(ref.path)
    return entry.with_name(f"{entry.name}.baselines-v{BASELINES_VERSION}.json")


def baselines_for(ref: PreparedRef, task: str) -> pd.DataFrame:
    """Baseline rows of one experiment, read from the cache or fitted and cached."""
    path = cache_path(ref)
    try:
        cached = json.loads(path.read_text())
        if cached.get("digest") == ref.digest:
            logger.info("%s: baselines cache hit (%s)", ref.experiment, path)
            return pd.DataFrame(cached["rows"]).assign(experiment=ref.experiment)
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        pass
    logger.info("%s: fitting baselines (cache miss)", ref.experiment)
    rows = fit_baselines(load_arrays(ref.path, ref.digest), task, ref.n_classes)
    write_text_atomic(path, json.dumps({"digest": ref.digest, "rows": rows}, indent=1))
    return pd.DataFrame(rows).assign(experiment=ref.experiment)


def all_baselines(prepared: dict[str, PreparedRef], tasks: dict[str, str]) -> pd.DataFrame:
    """Baselines of every prepared experiment (experiment -> task), one frame."""
    frames = [baselines_for(ref, tasks[name]) for name, ref in prepared.items() if name in tasks]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
