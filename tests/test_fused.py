"""The fused engine: grouping, exact masking, independence of group members, and agreement with Keras."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.study import TrialSpec
from tasks import fused, train


def spec(**overrides) -> TrialSpec:
    params = dict(experiment="toy", dataset="boston", task="regression", hidden_layers=1, units=8,
                  activation="relu", epochs=2, batch_size=16, seed=0)
    params.update(overrides)
    return TrialSpec(**params)


def toy_arrays(task: str, n_classes: int | None = None, rows: int = 70, features: int = 5) -> dict:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(rows + 30, features)).astype("float32")
    signal = x @ rng.normal(size=features)
    if task == "regression":
        y = (signal + 0.1 * rng.normal(size=len(x))).astype("float32")
    elif n_classes == 2:
        y = (signal > 0).astype("int64")
    else:
        y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1])).astype("int64")
    return {"x_train": x[:rows], "y_train": y[:rows], "x_test": x[rows:], "y_test": y[rows:]}


def test_groups_share_experiment_and_batch_size_and_labels_list_their_cells():
    trials = [spec(hidden_layers=h, units=u, epochs=e, batch_size=b, seed=s)
              for h in (1, 2) for u in (8, 16) for e in (2, 4) for b in (16, 32) for s in (0, 1, 2)]
    groups = fused.fusion_groups(trials)
    assert len(groups) == 2
    assert sorted(len(g) for g in groups) == [24, 24]
    assert all(len({(t.experiment, t.batch_size) for t in g}) == 1 for g in groups)
    assert fused.group_label(groups[0]) == "toy b16 [L1,2 U8,16 relu e2,4 s0-2]"


def test_initial_weights_pad_with_zeros_and_identities():
    members, _ = fused._members([spec(hidden_layers=1, units=4), spec(hidden_layers=3, units=6, seed=1)])
    layers = fused.initial_weights(members, n_features=5, n_out=1)
    assert [k.shape for k, _ in layers] == [(2, 5, 6), (2, 6, 6), (2, 6, 6), (2, 6, 1)]
    shallow_first = layers[0][0][0]
    assert np.all(shallow_first[:, 4:] == 0) and np.all(shallow_first[:, :4] != 0)
    for i in (1, 2):  # the one-layer model passes through the deeper model's extra layers unchanged
        assert np.array_equal(layers[i][0][0], np.pad(np.eye(4, dtype="float32"), ((0, 2), (0, 2))))
    assert np.all(layers[3][0][0, 4:] == 0)
    limit = np.sqrt(6 / (5 + 6))  # Glorot-uniform bound of the deeper model's first layer
    assert np.abs(layers[0][0][1]).max() <= limit and np.abs(layers[0][0][1]).max() > 0.8 * limit


def test_padded_units_stay_exactly_zero_and_identity_layers_stay_identities():
    arrays = toy_arrays("regression")
    trials = [spec(hidden_layers=1, units=4, activation="sigmoid"), spec(hidden_layers=2, units=8, seed=1)]
    members, _ = fused._members(trials)
    model = fused.FusedMLP(n_features=5, depths=[1, 2], units=[4, 8], activations=["sigmoid", "relu"],
                           task="regression", n_classes=None, batch_size=16, jit_compile=False)
    model.set_weights(fused.initial_weights(members, 5, 1))
    orders = list(fused.epoch_orders(members, 70, 3))
    for order in orders:
        model.train_epoch(arrays["x_train"], arrays["y_train"], order, arrays["x_test"], arrays["y_test"])
    first, second, out = (v.numpy() for v in model.kernels)
    assert np.all(first[0, :, 4:] == 0) and np.all(out[0, 4:, :] == 0)
    assert np.all(model.biases[0].numpy()[0, 4:] == 0)
    assert np.array_equal(second[0], np.pad(np.eye(4, dtype="float32"), ((0, 4), (0, 4))))
    assert np.all(model.biases[1].numpy()[0] == 0)
    assert not np.array_equal(second[1], fused.initial_weights(members, 5, 1)[1][0][1])  # the real layer trained


def test_a_model_trains_the_same_alone_or_in_a_group():
    arrays = toy_arrays("regression")
    alone = spec(hidden_layers=2, units=8, activation="sigmoid", epochs=3, seed=4)
    others = [spec(hidden_layers=1, units=16, epochs=3, seed=1), spec(hidden_layers=3, units=4, epochs=3, seed=2)]
    kwargs = dict(n_classes=None, target_mean=None, target_std=None, jit_compile=False)
    solo = fused.train_group(arrays, [alone], **kwargs)[alone.digest()]
    grouped = fused.train_group(arrays, [alone, *others], **kwargs)[alone.digest()]
    for split in ("train", "test"):
        np.testing.assert_allclose(grouped["loss_curve"][split], solo["loss_curve"][split], rtol=1e-5)
        np.testing.assert_allclose(grouped["metrics"][split]["rmse"], solo["metrics"][split]["rmse"], rtol=1e-5)


def test_cells_differing_only_in_epochs_share_one_run():
    arrays = toy_arrays("classification", n_classes=3)
    short, long = (spec(task="classification", dataset="mnist", epochs=e) for e in (2, 5))
    kwargs = dict(n_classes=3, target_mean=None, target_std=None, jit_compile=False)
    together = fused.train_group(arrays, [short, long], **kwargs)
    separate = fused.train_group(arrays, [short], **kwargs)[short.digest()]
    assert len(together[short.digest()]["loss_curve"]["train"]) == 2
    assert len(together[long.digest()]["loss_curve"]["train"]) == 5
    np.testing.assert_allclose(together[short.digest()]["loss_curve"]["test"], separate["loss_curve"]["test"], rtol=1e-5)
    assert together[short.digest()]["metrics"]["test"] == pytest.approx(separate["metrics"]["test"], nan_ok=True)
    np.testing.assert_allclose(together[long.digest()]["loss_curve"]["train"][:2],
                               separate["loss_curve"]["train"], rtol=1e-5)
    # One run, shared in proportion to the epochs: the 5-epoch cell is charged 5/7 of it, not all of it.
    shares = [together[t.digest()]["train_seconds"] for t in (short, long)]
    assert shares[1] == pytest.approx(shares[0] * 5 / 2)


def test_train_seconds_shares_split_evenly_over_models_then_by_epochs():
    arrays = toy_arrays("regression")
    cells = [spec(units=u, epochs=e) for u in (4, 8) for e in (1, 3)]
    outcomes = fused.train_group(arrays, cells, n_classes=None, target_mean=None, target_std=None,
                                 jit_compile=False)
    seconds = {(t.units, t.epochs): outcomes[t.digest()]["train_seconds"] for t in cells}
    assert seconds[4, 1] + seconds[4, 3] == pytest.approx(seconds[8, 1] + seconds[8, 3])
    assert seconds[4, 3] == pytest.approx(3 * seconds[4, 1]) and seconds[8, 3] == pytest.approx(3 * seconds[8, 1])


@pytest.mark.parametrize("task,n_classes", [("regression", None), ("classification", 2), ("classification", 4)])
@pytest.mark.parametrize("jit", [False, True])
def test_a_fused_group_of_one_matches_a_plain_keras_model(task, n_classes, jit):
    """Same initial weights and batch order: the fused model and Keras end at the same weights."""
    import keras

    arrays = toy_arrays(task, n_classes)
    cell = spec(task=task, hidden_layers=2, units=8, activation="sigmoid", batch_size=16)
    keras.utils.set_random_seed(3)
    reference = train.build_mlp(5, cell, n_classes)
    weights = reference.get_weights()
    model = fused.FusedMLP(n_features=5, depths=[2], units=[8], activations=["sigmoid"], task=task,
                           n_classes=n_classes, batch_size=16, jit_compile=jit)
    model.set_weights([(weights[i][None], weights[i + 1][None]) for i in range(0, len(weights), 2)])
    members, _ = fused._members([cell])
    x, y = arrays["x_train"], arrays["y_train"]
    for order in fused.epoch_orders(members, len(x), 2):  # 5 batches an epoch, the last one short
        model.train_epoch(x, y, order, arrays["x_test"], arrays["y_test"])
        for start in range(0, len(x), 16):
            rows = order[0, start:start + 16]
            reference.train_on_batch(x[rows], y[rows])
    for ours, theirs in zip(model.model_weights(0, 2, 8), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_kept_model_restarted_for_another_group_trains_it_exactly_as_a_new_model(monkeypatch, jit_compile):
    arrays = toy_arrays("regression")
    kwargs = dict(n_classes=None, target_mean=None, target_std=None, jit_compile=jit_compile)
    first = [spec(hidden_layers=h, units=u, epochs=3, seed=0) for h, u in ((1, 8), (2, 4))]
    second = [t.model_copy(update={"seed": 5}) for t in first]  # same structure, other weights and orders
    monkeypatch.setattr(fused, "_MODELS", {})
    fused.train_group(arrays, first, **kwargs)
    assert fused.kept_models() == 1
    reused = fused.train_group(arrays, second, **kwargs)
    assert fused.kept_models() == 1  # the second group restarted the first group's model
    monkeypatch.setattr(fused, "_MODELS", {})
    fresh = fused.train_group(arrays, second, **kwargs)
    for trial in second:
        for split in ("train", "test"):
            assert reused[trial.digest()]["loss_curve"][split] == fresh[trial.digest()]["loss_curve"][split]
            assert reused[trial.digest()]["metrics"][split] == pytest.approx(  # classification metrics are NaN
                fresh[trial.digest()]["metrics"][split], rel=0, abs=0, nan_ok=True)


def test_a_structure_in_use_is_not_shared_with_a_second_caller(monkeypatch):
    monkeypatch.setattr(fused, "_MODELS", {})
    structure = dict(n_features=5, depths=[1], units=[4], activations=["relu"], task="regression",
                     n_classes=None, batch_size=16, jit_compile=False)
    with fused.model_for(**structure) as kept:
        with fused.model_for(**structure) as other:
            assert other is not kept
    with fused.model_for(**structure) as again:
        assert again is kept
    assert fused.kept_models() == 1
