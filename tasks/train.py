"""One trial: build a Keras MLP for a grid cell, train it with its seed, and score it on train and test."""

from __future__ import annotations

import gc
import time

import numpy as np

from schemas.study import TrialSpec
from tasks.metrics import ALL_METRICS, classification_metrics, regression_metrics

# Bump when training changes in a way that changes results, so cached trials are not reused.
TRAINER_VERSION = "3"


def output_layer(task: str, n_classes: int | None) -> tuple[int, str, str]:
    """Units, activation and loss of the output layer for a task."""
    if task == "regression":
        return 1, "linear", "mean_squared_error"
    if n_classes == 2:
        return 1, "sigmoid", "binary_crossentropy"
    return int(n_classes), "softmax", "sparse_categorical_crossentropy"


def build_mlp(n_features: int, spec: TrialSpec, n_classes: int | None, steps_per_execution: int = 1):
    """`hidden_layers` Dense layers of `units` with the cell's activation, then the task's output layer.

    Tiny MLPs spend most of a step in Python/TF dispatch, so training runs a whole epoch per compiled
    call (`steps_per_execution` = steps per epoch).
    """
    import keras

    units, activation, loss = output_layer(spec.task, n_classes)
    # Each layer's initialiser is seeded from the trial's seed: Keras' unseeded default draws from
    # Python's process-wide `random`, which other threads (Prefect, Dask) also draw from.
    def glorot(layer: int):
        return keras.initializers.GlorotUniform(seed=spec.seed * 100 + layer)

    layers = [keras.Input(shape=(n_features,))]
    layers += [keras.layers.Dense(spec.units, activation=spec.activation, kernel_initializer=glorot(i))
               for i in range(spec.hidden_layers)]
    layers.append(keras.layers.Dense(units, activation=activation, kernel_initializer=glorot(spec.hidden_layers)))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(), loss=loss, steps_per_execution=steps_per_execution)
    return model


def predict(model, x: np.ndarray, task: str, n_classes: int | None,
            target_mean: float | None, target_std: float | None) -> np.ndarray:
    """Model outputs as class labels or as targets in their original units."""
    # A direct call avoids building (and retracing) a predict function per model.
    raw = np.concatenate([np.asarray(model(x[i:i + 16384], training=False)) for i in range(0, len(x), 16384)])
    if task == "regression":
        return raw.ravel() * (target_std or 1.0) + (target_mean or 0.0)
    if n_classes == 2:
        return (raw.ravel() >= 0.5).astype("int64")
    return raw.argmax(axis=1)


def score(y_true: np.ndarray, y_pred: np.ndarray, task: str, n_classes: int | None) -> dict[str, float]:
    """All metric columns; those that do not apply to the task are NaN."""
    if task == "regression":
        found = regression_metrics(y_true, y_pred)
    elif n_classes == 2:
        found = classification_metrics(y_true, y_pred, labels=[0, 1], positive_label=1)
    else:
        found = classification_metrics(y_true, y_pred, labels=list(range(int(n_classes))))
    return {name: found.get(name, float("nan")) for name in ALL_METRICS}


def epoch_batches(x: np.ndarray, y: np.ndarray, spec: TrialSpec):
    """All epochs' mini-batches as one pipeline, reshuffled every epoch from the trial's seed.

    Same batches as `fit(x, y, epochs=E, shuffle=True)`; one iterator over all epochs (with
    `steps_per_epoch`) avoids Keras rebuilding its input pipeline every epoch.
    """
    import tensorflow as tf

    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=spec.seed, reshuffle_each_iteration=True)
            .batch(spec.batch_size).repeat(spec.epochs).prefetch(2))


def split_loss(model, x: np.ndarray, y: np.ndarray) -> float:
    """The model's training loss on a whole split (the loss it minimises, on the same target scale)."""
    import keras

    outputs = model(x, training=False)
    if outputs.shape[-1] == 1:
        y = np.reshape(y, (-1, 1)).astype("float32")
    return float(keras.ops.mean(keras.losses.get(model.loss)(y, outputs)))


def fit_and_evaluate(arrays: dict[str, np.ndarray], spec: TrialSpec, *, n_classes: int | None,
                     target_mean: float | None, target_std: float | None) -> dict:
    """Train one model from its seed; return metrics per split, training seconds and loss per epoch."""
    import keras

    # A fresh graph per trial keeps memory flat over hundreds of trials in one worker.
    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(spec.seed)
    steps = -(-len(arrays["y_train"]) // spec.batch_size)
    model = build_mlp(arrays["x_train"].shape[1], spec, n_classes, steps_per_execution=steps)
    y_fit, y_test = arrays["y_train"], arrays["y_test"]
    if spec.task == "regression" and target_std:
        y_fit = ((y_fit - target_mean) / target_std).astype("float32")
        y_test = ((y_test - target_mean) / target_std).astype("float32")
    test_curve: list[float] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: test_curve.append(split_loss(model, arrays["x_test"], y_test)))
    started = time.perf_counter()
    history = model.fit(epoch_batches(arrays["x_train"], y_fit, spec), epochs=spec.epochs, steps_per_epoch=steps,
                        shuffle=False, verbose=0, callbacks=[record])
    seconds = time.perf_counter() - started
    metrics = {split: score(arrays[f"y_{split}"],
                            predict(model, arrays[f"x_{split}"], spec.task, n_classes, target_mean, target_std),
                            spec.task, n_classes)
               for split in ("train", "test")}
    return {"metrics": metrics, "train_seconds": seconds,
            "n_rows": {split: int(len(arrays[f"y_{split}"])) for split in ("train", "test")},
            "loss_curve": {"train": [float(v) for v in history.history["loss"]], "test": test_curve}}
