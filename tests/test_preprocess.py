"""Preprocessing: splits, missing values, encoding fitted on train only, and the Parquet cache."""


import numpy as np
import pandas as pd
import pytest

from nnstudy.errors import DataIntegrityError
from tasks import preprocess as pp


def adult_like(n: int, seed: int, scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": (rng.integers(17, 90, n) * scale).astype("int64"),
        "workclass": pd.array(rng.choice(["Private", "State-gov", "?"], n), dtype="string"),
        "hours-per-week": rng.integers(1, 99, n).astype("int64"),
        "income": pd.array(rng.choice(["<=50K", ">50K"], n), dtype="string"),
    })


def settings(**kw) -> pp.PreprocessSettings:
    base = dict(experiment="adult-income", dataset="adult", task="classification", target="income",
                positive_label=">50K")
    return pp.PreprocessSettings(**{**base, **kw})


def test_keras_boston_split_matches_keras_algorithm():
    train, test = pp.keras_boston_split(506)
    expected = np.arange(506)
    np.random.RandomState(113).shuffle(expected)
    assert len(train) == 404 and len(test) == 102
    assert np.array_equal(train, expected[:404]) and np.array_equal(test, expected[404:])
    assert set(train).isdisjoint(test)


def test_scaler_is_fitted_on_training_rows_only():
    train, test = adult_like(200, 1), adult_like(100, 2, scale=100.0)
    prepared = pp.prepare_tabular(train, test, settings())
    scaled_train_age = prepared.train["age"].to_numpy()
    # Fitted on train: train ages have mean 0 and std 1 whatever the (huge) test ages are.
    assert scaled_train_age.mean() == pytest.approx(0, abs=1e-6)
    assert scaled_train_age.std() == pytest.approx(1, abs=1e-4)
    expected_test = (test["age"] - train["age"].mean()) / train["age"].std(ddof=0)
    assert np.allclose(prepared.test["age"], expected_test, rtol=1e-5)


def test_one_hot_categories_come_from_train_and_missing_is_its_own_category():
    train = adult_like(50, 3)
    test = adult_like(20, 4)
    test.loc[0, "workclass"] = "Never-seen"
    prepared = pp.prepare_tabular(train, test, settings())
    onehot = [c for c in prepared.train.columns if c.startswith("workclass=")]
    assert sorted(onehot) == ["workclass=Private", "workclass=State-gov", "workclass=Unknown"]
    assert prepared.test.loc[0, onehot].sum() == 0  # unseen category: all zeros, no error
    assert prepared.missing["workclass"] == {"train": int((train["workclass"] == "?").sum()),
                                             "test": int((test["workclass"] == "?").sum())}


def test_inputs_are_not_mutated_and_targets_are_encoded():
    train, test = adult_like(30, 5), adult_like(10, 6)
    before = train.copy()
    prepared = pp.prepare_tabular(train, test, settings())
    pd.testing.assert_frame_equal(train, before)
    assert prepared.train[pp.TARGET_COLUMN].tolist() == (train["income"] == ">50K").astype(int).tolist()
    assert pp.TARGET_COLUMN not in [c for c in prepared.train.columns if c.startswith("income")]
    assert not any(c.startswith("income") for c in prepared.train.columns)


def test_regression_records_target_scaling_from_train():
    train, test = adult_like(40, 7), adult_like(10, 8)
    prepared = pp.prepare_tabular(train, test, settings(experiment="adult-hours", task="regression",
                                                        target="hours-per-week", positive_label=None))
    assert prepared.target_mean == pytest.approx(train["hours-per-week"].mean())
    assert prepared.target_std == pytest.approx(train["hours-per-week"].std(ddof=0))
    assert prepared.train[pp.TARGET_COLUMN].tolist() == train["hours-per-week"].astype(float).tolist()


def test_row_limits_take_a_seeded_subset():
    train, test = adult_like(100, 9), adult_like(100, 10)
    a = pp.prepare_tabular(train, test, settings(max_train_rows=30, max_test_rows=20))
    b = pp.prepare_tabular(train, test, settings(max_train_rows=30, max_test_rows=20))
    assert len(a.train) == 30 and len(a.test) == 20
    pd.testing.assert_frame_equal(a.train, b.train)


def test_mnist_pixels_are_flattened_and_scaled():
    arrays = {"x_train": np.full((4, 28, 28), 255, np.uint8), "y_train": np.arange(4, dtype=np.uint8),
              "x_test": np.zeros((2, 28, 28), np.uint8), "y_test": np.array([1, 2], np.uint8)}
    prepared = pp.prepare_mnist(arrays, settings(experiment="mnist", dataset="mnist", target="digit",
                                                 positive_label=None))
    assert prepared.train.shape == (4, 785) and prepared.n_classes == 10
    assert prepared.train.drop(columns=pp.TARGET_COLUMN).to_numpy().max() == 1.0


def test_cache_key_changes_with_inputs_and_settings():
    key = pp.cache_key(settings(), {"train": "aa"})
    assert key == pp.cache_key(settings(), {"train": "aa"})
    assert key != pp.cache_key(settings(), {"train": "ab"})
    assert key != pp.cache_key(settings(max_train_rows=10), {"train": "aa"})


def test_cache_roundtrip_is_atomic_and_verified(tmp_path):
    prepared = pp.prepare_tabular(adult_like(30, 11), adult_like(10, 12), settings())
    key = pp.cache_key(settings(), {"train": "x"})
    directory = pp.cache_dir_for(tmp_path, settings(), key)
    manifest = pp.write_prepared(prepared, directory, key)
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "test.parquet", "train.parquet"]
    assert [p.name for p in directory.parent.iterdir()] == [directory.name]  # no staging left
    ref = pp.ref_from_manifest("adult-income", directory, manifest, cache_hit=False)
    arrays = pp.load_arrays(ref.path, ref.digest)
    assert arrays["x_train"].shape == (30, ref.n_features) and arrays["x_train"].dtype == np.float32
    # Writing the same entry again (a concurrent run) keeps the existing one.
    assert pp.write_prepared(prepared, directory, key)["key"] == key


def test_tampered_cache_is_refused(tmp_path):
    prepared = pp.prepare_tabular(adult_like(30, 13), adult_like(10, 14), settings())
    directory = tmp_path / "entry"
    pp.write_prepared(prepared, directory, "k" * 64)
    prepared.train.iloc[:5].to_parquet(directory / "train.parquet")
    with pytest.raises(DataIntegrityError, match="train.parquet was modified"):
        pp.load_arrays(str(directory), "k" * 64)
    assert pp.read_manifest(tmp_path / "absent") is None
    (directory / "manifest.json").write_text("{not json")
    assert pp.read_manifest(directory) is None
