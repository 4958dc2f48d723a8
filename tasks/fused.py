"""The fused engine: the models of a grid slice trained together as one stacked computation.

A grid study trains many tiny MLPs whose time goes to per-step framework overhead, not arithmetic.
Cells of one experiment that share a batch size take the same number of steps of the same shapes, so
they train as one model with a leading *model axis*:

- every Dense kernel is stacked to ``[M, in, out]`` and applied with ``einsum``; narrower models are
  padded to the widest and masked, so padded units stay exactly zero (zero weights, masked activations,
  masked gradients), and shallower models get frozen identity layers;
- each model keeps its own activation, its own initialisation seed and its own shuffled batch order per
  epoch, drawn from its seed alone, so a model trains the same whichever group it is in;
- the loss is the sum of the models' mean losses, so each model's gradient is what it would be alone,
  and Adam (element-wise) gives each model the update it would get alone;
- cells that differ only in epochs share one run: it trains to the largest count and is scored after each
  requested count (the first ``e`` epochs of a longer run are exactly an ``e``-epoch run).

One epoch is one compiled TensorFlow function (XLA where available); Python only loops over epochs.
A process keeps one model per group structure and restarts it for the next group of that structure, so
each structure is traced and compiled once per process.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from schemas.study import TrialSpec
from tasks.train import output_layer, score

# Bump when fused training changes what it records (results, train_seconds), so cached groups are not reused.
FUSED_VERSION = "2"
# Rows scored per forward pass when evaluating (bounds memory on the full MNIST training set).
EVAL_CHUNK = 16384
# XLA compiles an epoch in a few seconds and then runs its steps several times faster than the plain
# graph: worth it only for groups with many steps (measured in benchmarks/vs_plain_keras.py).
JIT_MIN_STEPS = 2500


def group_key(spec: TrialSpec) -> tuple:
    """Cells with the same key take the same steps of the same shapes, so they can train as one.

    Depth is not part of the key: a shallower model is padded with identity layers (linear activation,
    identity kernel, gradients masked to zero), which leave its outputs and gradients exactly unchanged.
    """
    return (spec.experiment, spec.batch_size)


def fusion_groups(trials: Sequence[TrialSpec]) -> list[list[TrialSpec]]:
    """Trials split into fusion groups, in the order their keys first appear."""
    groups: dict[tuple, list[TrialSpec]] = {}
    for trial in trials:
        groups.setdefault(group_key(trial), []).append(trial)
    return list(groups.values())


def _span(values: Sequence) -> str:
    values = sorted(set(values), key=lambda v: (isinstance(v, str), v))
    if len(values) > 2 and all(isinstance(v, int) for v in values) and values == list(
            range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(v) for v in values)


def group_label(trials: Sequence[TrialSpec]) -> str:
    """Short name of a fusion group listing what it holds, e.g. `boston b16 [L1,2 U32,64 relu,sigmoid e50,100,150 s0-2]`."""
    first = trials[0]
    inner = " ".join([f"L{_span([t.hidden_layers for t in trials])}", f"U{_span([t.units for t in trials])}",
                      _span([t.activation for t in trials]), f"e{_span([t.epochs for t in trials])}",
                      f"s{_span([t.seed for t in trials])}"])
    return f"{first.experiment} b{first.batch_size} [{inner}]"


def model_seed(spec: TrialSpec) -> int:
    """A model's own random seed: from its cell (epochs aside, which share one run) and its seed only."""
    params = spec.model_dump(exclude={"epochs"})
    return int.from_bytes(hashlib.sha256(json.dumps(params, sort_keys=True).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class Member:
    """One model of a group: a grid cell without its epoch count, and the epoch counts scored."""

    hidden_layers: int
    units: int
    activation: str
    seed: int
    rng_seed: int


def _members(trials: Sequence[TrialSpec]) -> tuple[list[Member], dict[str, tuple[int, int]]]:
    """The distinct models of a group and, per trial digest, (model index, epochs)."""
    members: dict[tuple, int] = {}
    ordered: list[Member] = []
    where: dict[str, tuple[int, int]] = {}
    for trial in trials:
        key = (trial.hidden_layers, trial.units, trial.activation, trial.seed)
        if key not in members:
            members[key] = len(ordered)
            ordered.append(Member(trial.hidden_layers, trial.units, trial.activation, trial.seed,
                                  model_seed(trial)))
        where[trial.digest()] = (members[key], trial.epochs)
    return ordered, where


def initial_weights(members: Sequence[Member], n_features: int, n_out: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stacked (kernel, bias) per layer for a group: Glorot-uniform kernels and zero biases as Keras' Dense
    starts them, each model from its own seed; padded units are zero and a shallower model's extra layers
    are identities.
    """
    depth, width = max(m.hidden_layers for m in members), max(m.units for m in members)
    dims = [n_features] + [width] * depth + [n_out]
    stacked = [(np.zeros((len(members), dims[i], dims[i + 1]), np.float32),
                np.zeros((len(members), dims[i + 1]), np.float32)) for i in range(depth + 1)]
    for m, member in enumerate(members):
        rng = np.random.default_rng(member.rng_seed)
        true = [n_features] + [member.units] * member.hidden_layers + [n_out]
        layers = list(range(member.hidden_layers)) + [depth]
        for step, i in enumerate(layers):
            fan_in, fan_out = true[step], true[step + 1]
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            stacked[i][0][m, :fan_in, :fan_out] = rng.uniform(-limit, limit, (fan_in, fan_out))
        for i in range(member.hidden_layers, depth):
            stacked[i][0][m, :member.units, :member.units] = np.eye(member.units, dtype=np.float32)
    return stacked


class FusedMLP:
    """M stacked MLPs trained together; padded units and a shallower model's extra layers are frozen.

    Built from Keras 3 pieces on the TensorFlow backend: weights are `keras.Variable`s, Adam takes
    `keras.optimizers.Adam`'s settings and update rule, and the epoch loop is one `tf.function`
    (XLA-compiled for groups with many steps).
    """

    def __init__(self, *, n_features: int, depths: Sequence[int], units: Sequence[int],
                 activations: Sequence[str], task: str, n_classes: int | None, batch_size: int,
                 jit_compile: bool = True):
        import keras
        import tensorflow as tf

        self.task, self.n_classes, self.batch_size = task, n_classes, batch_size
        self.n_models, self.depth, self.width = len(units), max(depths), max(units)
        self.n_out = output_layer(task, n_classes)[0]
        self.dims = [n_features] + [self.width] * self.depth + [self.n_out]
        depths, units = np.asarray(depths), np.asarray(units)
        unit_mask = (np.arange(self.width)[None, :] < units[:, None]).astype("float32")     # [M, width]
        self.unit_mask = tf.constant(unit_mask)
        # Per hidden layer, which activation each model applies; a model's layers past its depth are linear.
        per_layer = [[a if i < d else "linear" for a, d in zip(activations, depths)] for i in range(self.depth)]
        self.activation_names = sorted({a for layer in per_layer for a in layer})
        self.activation_select = tf.constant(np.array(
            [[[a == name for a in layer] for name in self.activation_names] for layer in per_layer],
            dtype="float32"))                                                                   # [depth, A, M]
        self.kernels, self.biases, self.kernel_masks, self.bias_masks = [], [], [], []
        for i in range(self.depth + 1):
            rows, cols = self.dims[i], self.dims[i + 1]
            live = (depths > i) if i < self.depth else np.ones(self.n_models, bool)   # trainable for model m
            row_mask = unit_mask if i > 0 else np.ones((self.n_models, rows), "float32")
            col_mask = unit_mask if i < self.depth else np.ones((self.n_models, cols), "float32")
            self.kernels.append(keras.Variable(np.zeros((self.n_models, rows, cols), "float32"), name=f"kernel_{i}"))
            self.biases.append(keras.Variable(np.zeros((self.n_models, cols), "float32"), name=f"bias_{i}"))
            self.kernel_masks.append(tf.constant(row_mask[:, :, None] * col_mask[:, None, :] * live[:, None, None]))
            self.bias_masks.append(tf.constant(col_mask * live[:, None]))
        self.variables = self.kernels + self.biases
        self.masks = self.kernel_masks + self.bias_masks
        # Adam as keras.optimizers.Adam() computes it (same defaults and update formula), written out on the
        # stacked variables: element-wise, so each model's update is the one it would get alone. Keras'
        # own optimizer works too but adds about a second of compilation per group and a quarter per step.
        defaults = keras.optimizers.Adam()
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = (
            float(defaults.learning_rate), defaults.beta_1, defaults.beta_2, defaults.epsilon)
        self.momentums = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.velocities = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.iterations = tf.Variable(0.0, trainable=False)
        self.jit_compile = jit_compile
        self._epoch_fns: dict = {}

    # -- weights ---------------------------------------------------------------------------------------

    def set_weights(self, layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Stacked (kernel, bias) per layer, as `initial_weights` gives them."""
        for i, (kernel, bias) in enumerate(layers):
            self.kernels[i].assign(np.asarray(kernel, "float32"))
            self.biases[i].assign(np.asarray(bias, "float32"))

    def restart(self, layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Start training anew from these weights: Adam's moments and step count back to zero.

        A restarted model trains exactly as a new one with the same structure, and reuses the epoch
        functions it compiled before.
        """
        self.set_weights(layers)
        for slot in self.momentums + self.velocities:
            slot.assign(np.zeros(slot.shape, "float32"))
        self.iterations.assign(0.0)

    def model_weights(self, m: int, hidden_layers: int, units: int) -> list[np.ndarray]:
        """Model `m`'s own weights in Keras' order (kernel, bias per layer), padding and identities removed."""
        layers = list(range(hidden_layers)) + [self.depth]
        true = [self.dims[0]] + [units] * hidden_layers + [self.n_out]
        out = []
        for step, i in enumerate(layers):
            out += [self.kernels[i].numpy()[m, :true[step], :true[step + 1]],
                    self.biases[i].numpy()[m, :true[step + 1]]]
        return out

    # -- computation -------------------------------------------------------------------------------------

    def _activate(self, z, layer: int):
        import tensorflow as tf

        functions = {"relu": tf.nn.relu, "sigmoid": tf.sigmoid, "tanh": tf.tanh, "linear": tf.identity}
        if len(self.activation_names) == 1:
            return functions[self.activation_names[0]](z)
        out = 0.0
        for a, name in enumerate(self.activation_names):
            out += self.activation_select[layer, a][:, None, None] * functions[name](z)
        return out

    def forward(self, x, shared_input: bool):
        """Outputs [M, rows, n_out] (logits for classification, standardised target for regression).

        `x` is [rows, features] shared by all models, or [M, rows, features] (each model its own batch).
        """
        import tensorflow as tf

        h = x
        for i in range(self.depth + 1):
            spec = "nf,mfo->mno" if (i == 0 and shared_input) else "mnf,mfo->mno"
            z = tf.einsum(spec, h, self.kernels[i]) + self.biases[i][:, None, :]
            h = self._activate(z, i) * self.unit_mask[:, None, :] if i < self.depth else z
        return h

    def losses(self, outputs, y):
        """Mean loss per model, [M]; `y` is [M, rows] (or [rows], broadcast)."""
        import tensorflow as tf

        if self.task == "regression":
            y = tf.broadcast_to(tf.cast(y, tf.float32), tf.shape(outputs)[:2])
            return tf.reduce_mean(tf.square(outputs[..., 0] - y), axis=1)
        if self.n_out == 1:
            y = tf.broadcast_to(tf.cast(y, tf.float32), tf.shape(outputs)[:2])
            return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=outputs[..., 0]), axis=1)
        y = tf.broadcast_to(tf.cast(y, tf.int32), tf.shape(outputs)[:2])
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=outputs), axis=1)

    def _step(self, x_batch, y_batch):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            per_model = self.losses(self.forward(x_batch, shared_input=False), y_batch)
            total = tf.reduce_sum(per_model)
        grads = tape.gradient(total, self.variables)
        self._adam([g * mask for g, mask in zip(grads, self.masks)])
        return per_model

    def _adam(self, grads) -> None:
        import tensorflow as tf

        self.iterations.assign_add(1.0)
        step = self.iterations
        alpha = (self.learning_rate * tf.sqrt(1 - tf.pow(self.beta_2, step)) / (1 - tf.pow(self.beta_1, step)))
        for grad, var, m, v in zip(grads, self.variables, self.momentums, self.velocities):
            m.assign_add((grad - m) * (1 - self.beta_1))
            v.assign_add((tf.square(grad) - v) * (1 - self.beta_2))
            var.assign_sub(m * alpha / (tf.sqrt(v) + self.epsilon))

    def _epoch_fn(self, n_rows: int, batch_size: int):
        """The compiled epoch: every full batch in a graph loop, then the short last batch (static shapes)."""
        import tensorflow as tf

        key = (n_rows, batch_size)
        if key in self._epoch_fns:
            return self._epoch_fns[key]
        full, rest = divmod(n_rows, batch_size)

        def epoch(x, y, order, x_test, y_test):
            # order: [M, n_rows] row indices, each model's own permutation for this epoch.
            weighted = tf.zeros([self.n_models], tf.float32)
            for_batches = tf.reshape(order[:, :full * batch_size], [self.n_models, full, batch_size])
            for step in tf.range(full):
                index = for_batches[:, step, :]
                weighted += self._step(tf.gather(x, index), tf.gather(y, index)) * batch_size
            if rest:
                index = order[:, full * batch_size:]
                weighted += self._step(tf.gather(x, index), tf.gather(y, index)) * rest
            test_loss = self.losses(self.forward(x_test, shared_input=True), y_test)
            return weighted / n_rows, test_loss

        compiled = tf.function(epoch, jit_compile=self.jit_compile, reduce_retracing=True)
        self._epoch_fns[key] = compiled
        return compiled

    def train_epoch(self, x, y, order: np.ndarray, x_test, y_test) -> tuple[np.ndarray, np.ndarray]:
        """One epoch over the given per-model row orders; returns (train loss, test loss) per model."""
        train_loss, test_loss = self._epoch_fn(int(order.shape[1]), self.batch_size)(
            x, y, order.astype("int32"), x_test, y_test)
        return train_loss.numpy(), test_loss.numpy()

    def predict(self, x: np.ndarray, target_mean: float | None, target_std: float | None) -> np.ndarray:
        """[M, rows] class labels or targets in original units, for all models at once."""
        import tensorflow as tf

        parts = [self.forward(tf.constant(x[i:i + EVAL_CHUNK]), shared_input=True).numpy()
                 for i in range(0, len(x), EVAL_CHUNK)]
        raw = np.concatenate(parts, axis=1)
        if self.task == "regression":
            return raw[..., 0] * (target_std or 1.0) + (target_mean or 0.0)
        if self.n_out == 1:
            return (raw[..., 0] >= 0.0).astype("int64")
        return raw.argmax(axis=2)


# One model per group structure, kept for the process's lifetime and restarted for each group of that
# structure. XLA keeps every executable it compiles until the process ends, even once its function is gone,
# so a new model per group grew a long-lived worker by about 13 MiB per XLA-compiled group; a kept model
# compiles once per structure (and skips tracing its epoch again).
_MODELS: dict[tuple, FusedMLP] = {}
_MODELS_IN_USE: set[tuple] = set()
_MODELS_LOCK = threading.Lock()


@contextmanager
def model_for(**structure) -> Iterator[FusedMLP]:
    """The kept `FusedMLP` of this structure (FusedMLP's keyword arguments), or a new one that is then kept.

    While one thread trains a kept model, another asking for the same structure gets a model of its own.
    """
    key = tuple(sorted((name, tuple(value) if isinstance(value, (list, tuple)) else value)
                       for name, value in structure.items()))
    with _MODELS_LOCK:
        shared = key not in _MODELS_IN_USE
        if shared:
            _MODELS_IN_USE.add(key)
    try:
        if not shared:
            yield FusedMLP(**structure)
            return
        if key not in _MODELS:
            _MODELS[key] = FusedMLP(**structure)
        yield _MODELS[key]
    finally:
        if shared:
            with _MODELS_LOCK:
                _MODELS_IN_USE.discard(key)


def kept_models() -> int:
    """How many group structures have a kept model in this process."""
    return len(_MODELS)


def epoch_orders(members: Sequence[Member], n_rows: int, epochs: int):
    """Each model's row permutation per epoch, drawn from its own seed: yields [M, n_rows] per epoch."""
    generators = [np.random.default_rng([member.rng_seed, 1]) for member in members]
    for _ in range(epochs):
        yield np.stack([g.permutation(n_rows) for g in generators])


def train_group(arrays: dict[str, np.ndarray], trials: Sequence[TrialSpec], *, n_classes: int | None,
                target_mean: float | None, target_std: float | None, jit_compile: bool | None = None,
                return_predictions: bool = False) -> dict[str, dict]:
    """Train a fusion group; returns, per trial digest, the same outcome dict as the Keras engine.

    Each outcome holds metrics per split after the trial's own epoch count, `train_seconds` (its share
    of the group's training time: split evenly over the models, then over each model's trials in
    proportion to their epochs, so the shares add up to the group's time),
    `n_rows`, and `loss_curve` per split (one loss per epoch up to the trial's epochs); with
    `return_predictions`, also `test_predictions`.
    """
    import keras

    first = trials[0]
    if any(group_key(t) != group_key(first) for t in trials):
        raise ValueError(f"trials of different fusion groups given to one group: {group_label(trials)}")
    keras.backend.clear_session(free_memory=False)  # the last group collected its garbage when it ended
    members, where = _members(trials)
    max_epochs = max(epochs for _, epochs in where.values())

    y_train = arrays["y_train"]
    y_test = arrays["y_test"]
    if first.task == "regression" and target_std:
        y_train = ((y_train - target_mean) / target_std).astype("float32")
        y_test = ((y_test - target_mean) / target_std).astype("float32")
    if jit_compile is None:
        jit_compile = max_epochs * -(-len(y_train) // first.batch_size) >= JIT_MIN_STEPS
    with model_for(n_features=arrays["x_train"].shape[1], depths=[m.hidden_layers for m in members],
                   units=[m.units for m in members], activations=[m.activation for m in members],
                   task=first.task, n_classes=n_classes, batch_size=first.batch_size,
                   jit_compile=jit_compile) as model:
        model.restart(initial_weights(members, model.dims[0], model.n_out))
        outcomes = _train(model, arrays, trials, members, where, y_train, y_test, n_classes=n_classes,
                          target_mean=target_mean, target_std=target_std, return_predictions=return_predictions)
    keras.backend.clear_session()  # and gc.collect(): this group's tensors and arrays go now
    return outcomes


def _train(model: FusedMLP, arrays: dict[str, np.ndarray], trials: Sequence[TrialSpec], members: list[Member],
           where: dict[str, tuple[int, int]], y_train: np.ndarray, y_test: np.ndarray, *, n_classes: int | None,
           target_mean: float | None, target_std: float | None, return_predictions: bool) -> dict[str, dict]:
    """Train a restarted model on a group's trials and score each trial at its epoch count."""
    import tensorflow as tf

    max_epochs = max(epochs for _, epochs in where.values())
    checkpoints = sorted({epochs for _, epochs in where.values()})
    x, y = tf.constant(arrays["x_train"]), tf.constant(y_train)
    x_test, y_test_t = tf.constant(arrays["x_test"]), tf.constant(y_test)

    curves = {"train": [], "test": []}
    scored: dict[int, dict[str, np.ndarray]] = {}
    started = time.perf_counter()
    for epoch, order in enumerate(epoch_orders(members, len(y_train), max_epochs), start=1):
        train_loss, test_loss = model.train_epoch(x, y, order, x_test, y_test_t)
        curves["train"].append(train_loss)
        curves["test"].append(test_loss)
        if epoch in checkpoints:
            scored[epoch] = {split: model.predict(arrays[f"x_{split}"], target_mean, target_std)
                             for split in ("train", "test")}
    seconds = time.perf_counter() - started

    n_rows = {split: int(len(arrays[f"y_{split}"])) for split in ("train", "test")}
    epoch_totals = [0] * len(members)  # per model, the epochs of all its trials: the weights of their shares
    for m, epochs in where.values():
        epoch_totals[m] += epochs
    outcomes = {}
    for trial in trials:
        m, epochs = where[trial.digest()]
        metrics = {split: score(arrays[f"y_{split}"], scored[epochs][split][m], trial.task, n_classes)
                   for split in ("train", "test")}
        outcomes[trial.digest()] = {
            "metrics": metrics, "n_rows": n_rows,
            "train_seconds": seconds / len(members) * epochs / epoch_totals[m],
            "loss_curve": {split: [float(curves[split][e][m]) for e in range(epochs)] for split in ("train", "test")}}
        if return_predictions:
            outcomes[trial.digest()]["test_predictions"] = scored[epochs]["test"][m]
    return outcomes
