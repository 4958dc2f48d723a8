"""Hyperparameter effects: known synthetic effects are found, null effects are called noise."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from tasks.stats import factor_effects, mean_confidence_interval, paired_differences, seed_spread


def synthetic(effects: dict[str, float], noise: float, seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    """A Boston-like grid where each factor's top level shifts the test RMSE by a known amount, plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for layers, units, activation, epochs, batch, s in itertools.product(
            [1, 2], [32, 64], ["relu", "sigmoid"], [50, 100], [16, 32], range(seeds)):
        value = 4.0 + effects.get("hidden_layers", 0) * (layers == 2) + effects.get("units", 0) * (units == 64) \
            + effects.get("activation", 0) * (activation == "sigmoid") + effects.get("epochs", 0) * (epochs == 100) \
            + effects.get("batch_size", 0) * (batch == 32) + rng.normal(0, noise)
        rows.append({"experiment": "boston", "split": "test", "hidden_layers": layers, "units": units,
                     "activation": activation, "epochs": epochs, "batch_size": batch, "seed": s, "rmse": value})
    return pd.DataFrame(rows)


def by_factor(frame: pd.DataFrame) -> dict:
    return {e.factor: e for e in factor_effects(frame, "boston", "rmse", higher_is_better=False)}


def test_known_effects_are_found_with_their_sign_and_size():
    effects = by_factor(synthetic({"activation": 1.5, "epochs": -0.8}, noise=0.2))
    sigmoid, epochs = effects["activation"], effects["epochs"]
    assert (sigmoid.baseline, sigmoid.level) == ("relu", "sigmoid")
    assert sigmoid.low <= 1.5 <= sigmoid.high and sigmoid.verdict == "worse"
    assert epochs.low <= -0.8 <= epochs.high and epochs.verdict == "better" and epochs.improves
    assert sigmoid.n_pairs == 16 * 3  # every other-factor combination, every seed


def test_null_effects_are_called_noise():
    effects = by_factor(synthetic({"activation": 1.5}, noise=0.3, seed=3))
    for factor in ("hidden_layers", "units", "epochs", "batch_size"):
        assert effects[factor].within_noise, factor
        assert effects[factor].verdict == "within noise"
    assert not effects["activation"].within_noise


def test_null_effects_are_mostly_noise_over_many_draws():
    # With a 95% interval, a true null effect is called real in about 5% of draws; allow generous slack.
    false_alarms = sum(not by_factor(synthetic({}, noise=0.5, seed=s))["units"].within_noise for s in range(40))
    assert false_alarms <= 6


def test_higher_is_better_flips_the_verdict():
    frame = synthetic({"units": 0.5}, noise=0.05).rename(columns={"rmse": "f1"})
    effect = next(e for e in factor_effects(frame, "boston", "f1", higher_is_better=True) if e.factor == "units")
    assert effect.verdict == "better"


def test_pairs_match_on_every_other_factor_and_the_seed():
    frame = synthetic({"units": 1.0}, noise=0.0)
    differences = paired_differences(frame, "units", 32, 64, "rmse")
    assert len(differences) == 48 and np.allclose(differences, 1.0)


def test_interval_matches_the_t_formula_and_needs_two_values():
    mean, low, high = mean_confidence_interval(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
    mean, low, high = mean_confidence_interval(np.array([1.0]))
    assert mean == 1.0 and np.isnan(low) and np.isnan(high)
    single = by_factor(synthetic({}, noise=0.1, seeds=1)[lambda f: (f["units"] == 32) | (f["hidden_layers"] == 2)])
    assert all(e.n_pairs >= 1 for e in single.values())


def test_seed_spread_recovers_the_noise_level():
    assert seed_spread(synthetic({}, noise=0.5, seeds=5), "boston", "rmse") == pytest.approx(0.5, rel=0.2)
    assert np.isnan(seed_spread(synthetic({}, noise=0.5, seeds=1), "boston", "rmse"))
