"""Test-split predictions of one trained configuration, for the confusion matrix of the best MNIST model.

Trials return metrics only, so the report step refits the single best configuration with its seed, with
the engine that trained it (the fused engine as a group of one, which trains a model exactly as its group
did), and caches the confusion matrix beside the preprocessed data.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import numpy as np

from schemas.study import TrialSpec
from tasks.preprocess import PreparedRef, load_arrays
from tasks.results import write_text_atomic
from tasks import fused
from tasks.train import TRAINER_VERSION, build_mlp, epoch_batches, predict, score

logger = logging.getLogger(__name__)


def refit_predictions(arrays: dict[str, np.ndarray], spec: TrialSpec, ref: PreparedRef,
                      engine: str = "keras") -> np.ndarray:
    """Train `spec` from its seed exactly as a trial does and return its test-split predictions."""
    import keras

    if engine == "fused":
        outcomes = fused.train_group(arrays, [spec], n_classes=ref.n_classes, target_mean=ref.target_mean,
                                     target_std=ref.target_std, return_predictions=True)
        return outcomes[spec.digest()]["test_predictions"]

    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(spec.seed)
    model = build_mlp(arrays["x_train"].shape[1], spec, ref.n_classes)
    y_fit = arrays["y_train"]
    if spec.task == "regression" and ref.target_std:
        y_fit = ((y_fit - ref.target_mean) / ref.target_std).astype("float32")
    model.fit(epoch_batches(arrays["x_train"], y_fit, spec), epochs=1, shuffle=False, verbose=0)
    return predict(model, arrays["x_test"], spec.task, ref.n_classes, ref.target_mean, ref.target_std)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def cache_path(ref: PreparedRef, spec: TrialSpec, engine: str = "keras") -> Path:
    """Beside the preprocessed entry, keyed by the trial and the engine's version."""
    entry = Path(ref.path)
    version = f"fused{fused.FUSED_VERSION}" if engine == "fused" else f"trainer{TRAINER_VERSION}"
    return entry.with_name(f"{entry.name}.confusion-{spec.digest()[:16]}-{version}.json")


def best_confusion(spec: TrialSpec, ref: PreparedRef, engine: str = "keras") -> dict:
    """Confusion matrix and refit test metrics of one classification trial, cached."""
    path = cache_path(ref, spec, engine)
    try:
        cached = json.loads(path.read_text())
        if cached.get("digest") == ref.digest:
            return cached
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        pass
    logger.info("%s: refitting %s for its confusion matrix", ref.experiment, spec.label)
    arrays = load_arrays(ref.path, ref.digest)
    predicted = refit_predictions(arrays, spec, ref, engine)
    outcome = {"digest": ref.digest, "label": spec.label,
               "matrix": confusion_matrix(arrays["y_test"], predicted, int(ref.n_classes)).tolist(),
               "metrics": score(arrays["y_test"], predicted, spec.task, ref.n_classes)}
    write_text_atomic(path, json.dumps(outcome))
    return outcome


def confusion_of_best(best: dict[str, dict], prepared: dict[str, PreparedRef], study) -> dict[str, dict]:
    """Per MNIST experiment with results: the confusion matrix of its best configuration (median seed)."""
    out = {}
    for name, cell in best.items():
        spec = study.experiments[name]
        if spec.dataset != "mnist" or name not in prepared:
            continue
        trial = TrialSpec(experiment=name, dataset=spec.dataset, task=spec.task, seed=cell["seed"],
                          **{axis: cell[axis] for axis in ("hidden_layers", "units", "activation", "epochs",
                                                           "batch_size")})
        out[name] = {**best_confusion(trial, prepared[name], cell.get("engine", "keras")), "recorded": cell}
    return out
