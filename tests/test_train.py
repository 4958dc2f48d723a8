"""Training one trial with either engine: the network's shape, reproducibility from the seed, learning."""

import numpy as np
import pytest

from schemas.study import TrialSpec
from tasks import fused, train

pytestmark = pytest.mark.slow


def spec(**kw) -> TrialSpec:
    base = dict(experiment="toy", dataset="boston", task="regression", hidden_layers=2, units=16,
                activation="relu", epochs=30, batch_size=32, seed=0)
    return TrialSpec(**{**base, **kw})


def fit(engine: str, data: dict, cell: TrialSpec, **kwargs) -> dict:
    """One trial's outcome from the Keras engine, or from the fused engine as a group of one."""
    if engine == "keras":
        return train.fit_and_evaluate(data, cell, **kwargs)
    return fused.train_group(data, [cell], **kwargs)[cell.digest()]


ENGINES = pytest.mark.parametrize("engine", ["keras", "fused"])


def linear_data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = 20 + x @ np.array([3.0, -2.0, 1.0, 0.0, 0.5]) + rng.normal(0, 0.1, 300)
    return {"x_train": x[:200], "y_train": y[:200], "x_test": x[200:], "y_test": y[200:]}


def test_model_has_the_cells_layers_units_and_output():
    model = train.build_mlp(7, spec(hidden_layers=3, units=8, activation="sigmoid"), None)
    dense = [layer for layer in model.layers]
    assert [d.units for d in dense] == [8, 8, 8, 1]
    assert [d.activation.__name__ for d in dense] == ["sigmoid"] * 3 + ["linear"]
    assert train.output_layer("classification", 10) == (10, "softmax", "sparse_categorical_crossentropy")
    assert train.output_layer("classification", 2) == (1, "sigmoid", "binary_crossentropy")


@ENGINES
def test_same_seed_gives_identical_metrics_and_another_seed_differs(engine):
    data = linear_data()
    args = dict(n_classes=None, target_mean=float(data["y_train"].mean()), target_std=float(data["y_train"].std()))
    first = fit(engine, data, spec(epochs=5), **args)
    second = fit(engine, data, spec(epochs=5), **args)
    other = fit(engine, data, spec(epochs=5, seed=1), **args)
    assert first["loss_curve"] == second["loss_curve"]
    regression = ["mae", "mape", "rmse", "r2"]
    for split in ("train", "test"):
        assert [first["metrics"][split][m] for m in regression] == [second["metrics"][split][m] for m in regression]
        assert first["metrics"][split]["rmse"] != other["metrics"][split]["rmse"]


@ENGINES
def test_regression_learns_a_linear_target_in_original_units(engine):
    data = linear_data()
    out = fit(engine, data, spec(), n_classes=None, target_mean=float(data["y_train"].mean()),
              target_std=float(data["y_train"].std()))
    assert out["metrics"]["test"]["r2"] > 0.9
    assert out["metrics"]["test"]["mae"] < 1.5
    assert np.isnan(out["metrics"]["test"]["f1"])
    assert out["train_seconds"] > 0 and out["n_rows"] == {"train": 200, "test": 100}
    # One loss per epoch on each split, on the standardised target: it falls from about 1 towards 0.
    for split in ("train", "test"):
        curve = out["loss_curve"][split]
        assert len(curve) == 30 and curve[-1] < 0.1 * curve[0]
    assert out["loss_curve"]["test"][-1] == pytest.approx(
        (out["metrics"]["test"]["rmse"] / data["y_train"].std()) ** 2, rel=1e-3)


@ENGINES
def test_classification_learns_separable_classes(engine):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    data = {"x_train": x[:300], "y_train": y[:300], "x_test": x[300:], "y_test": y[300:]}
    out = fit(engine, data, spec(task="classification", epochs=20), n_classes=2, target_mean=None,
              target_std=None)
    assert out["metrics"]["test"]["f1"] > 0.85
    assert np.isnan(out["metrics"]["test"]["rmse"])


def test_two_fresh_processes_give_identical_metrics(tmp_path):
    # Within one process a rerun could share state with the first fit; separate processes cannot.
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = ("import json, sys\nfrom tests.test_train import linear_data, spec\nfrom tasks import train\n"
              "data = linear_data()\n"
              "out = train.fit_and_evaluate(data, spec(epochs=5), n_classes=None, "
              "target_mean=float(data['y_train'].mean()), target_std=float(data['y_train'].std()))\n"
              "print(json.dumps(out['metrics']))")
    root = Path(__file__).parents[1]
    runs = [subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr[-2000:]
    first, second = (json.loads(run.stdout.strip().splitlines()[-1]) for run in runs)
    regression = ["mae", "mape", "rmse", "r2"]
    for split in ("train", "test"):
        assert [first[split][m] for m in regression] == [second[split][m] for m in regression]
