"""Engine equivalence: the statistics on synthetic data, then the fused and Keras engines on real slices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.equivalence import compare, holm
from tasks.preprocess import prepare_local


def frame(means: list[float], seeds: int, noise: float, seed: int) -> pd.DataFrame:
    """Results rows of cells with the given true means, `seeds` noisy draws each."""
    rng = np.random.default_rng(seed)
    rows = [dict(experiment="toy", hidden_layers=1, units=32, activation="relu", epochs=10 * (c + 1),
                 batch_size=16, seed=s, split="test", rmse=mean + noise * rng.normal())
            for c, mean in enumerate(means) for s in range(seeds)]
    return pd.DataFrame(rows)


def test_holm_adjustment_matches_the_step_down_definition():
    assert holm(np.array([0.01, 0.04, 0.03, 0.2])).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.2])


def test_same_distribution_is_indistinguishable():
    means = [3.0, 3.5, 4.0, 4.5, 5.0, 5.5]
    result = compare(frame(means, 8, 0.2, seed=1), frame(means, 8, 0.2, seed=2), "rmse")
    assert result.n_different == 0 and result.indistinguishable
    assert result.ci_low < 0 < result.ci_high
    assert "statistically indistinguishable" in result.summary()


def test_a_shift_is_detected_per_cell_and_in_the_mean_difference():
    means = [3.0, 3.5, 4.0, 4.5, 5.0, 5.5]
    result = compare(frame([m + 1.0 for m in means], 8, 0.2, seed=1), frame(means, 8, 0.2, seed=2), "rmse")
    assert result.n_different == len(means) and not result.indistinguishable
    assert 0.8 < result.ci_low < result.mean_difference < result.ci_high < 1.2
    assert "DIFFERENT" in result.summary()


def test_frames_without_common_cells_are_refused():
    with pytest.raises(ValueError, match="share no grid cell"):
        compare(frame([1.0], 3, 0.1, 0), frame([1.0], 3, 0.1, 0).assign(units=64), "rmse")


def engine_frames(arrays, kwargs, trials, target):
    from tasks import fused, results, train

    keras_rows, fused_rows = [], []
    for spec in trials:
        outcome = train.fit_and_evaluate(arrays, spec, **kwargs)
        keras_rows += results.trial_rows(spec, outcome, target=target, data_digest="-", engine="keras")
    for group in fused.fusion_groups(trials):
        outcomes = fused.train_group(arrays, group, **kwargs)
        for spec in group:
            fused_rows += results.trial_rows(spec, outcomes[spec.digest()], target=target, data_digest="-",
                                             engine="fused")
    return pd.DataFrame(fused_rows), pd.DataFrame(keras_rows)


@pytest.mark.slow
@pytest.mark.parametrize("experiment,metric,grid,rows", [
    ("boston", "rmse", dict(hidden_layers=[1, 2], units=[32], activation=["relu", "sigmoid"], epochs=[30],
                            batch_size=[32]), (None, None)),
    ("mnist", "f1", dict(hidden_layers=[1], units=[32, 64], activation=["relu"], epochs=[2], batch_size=[128]),
     (2000, 1000)),
])
def test_fused_engine_is_statistically_indistinguishable_from_keras(mirror_dir, experiment, metric,
                                                                     grid, rows):
    """Per cell, the test metric over 5 seeds: Welch t-test, Holm-corrected; and the mean difference's CI."""
    import itertools

    from schemas.study import TrialSpec

    arrays, kwargs = prepare_local(experiment, mirror_dir, max_train_rows=rows[0], max_test_rows=rows[1])
    task = "regression" if experiment == "boston" else "classification"
    trials = [TrialSpec(experiment=experiment, dataset=experiment, task=task, hidden_layers=h, units=u,
                        activation=a, epochs=e, batch_size=b, seed=s)
              for h, u, a, e, b in itertools.product(*grid.values()) for s in range(5)]
    fused_frame, keras_frame = engine_frames(arrays, kwargs, trials, target="y")
    result = compare(fused_frame, keras_frame, metric)
    assert result.indistinguishable, result.summary() + "\n" + result.cells.to_string()
