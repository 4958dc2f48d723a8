"""Tests for tasks.validate: real files pass the suites, broken copies fail with actionable messages."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnstudy.errors import NnstudyError, ValidationFailed
from tasks.validate import (
    SuiteError,
    ValidationReport,
    load_suite,
    raise_if_failed,
    validate_frame,
    validate_mnist,
)
from tests.helpers import MIRROR, MIRROR_MISSING

needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason=MIRROR_MISSING)

ADULT_COLS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
              "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income"]
BOSTON_COLS = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT", "MEDV"]
ADULT_TRAIN_ROWS, ADULT_TEST_ROWS, BOSTON_ROWS = 32_561, 16_281, 506


def read_adult(name: str) -> pd.DataFrame:
    """Same frame as tasks.ingest's reader: stripped text, '?' kept, test labels without their dot."""
    df = pd.read_csv(MIRROR / "adult" / name, header=None, names=ADULT_COLS, skipinitialspace=True,
                     skiprows=1 if name == "adult.test" else 0)
    df["income"] = df["income"].str.rstrip(".")
    return df


def read_idx(name: str, header: int) -> np.ndarray:
    """Raw bytes of a gzipped IDX file after its header."""
    with gzip.open(MIRROR / "mnist-5k" / name) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


@pytest.fixture(scope="module")
def adult_train() -> pd.DataFrame:
    return read_adult("adult.data")


@pytest.fixture(scope="module")
def boston() -> pd.DataFrame:
    return pd.read_csv(MIRROR / "boston" / "housing.data", sep=r"\s+", header=None, names=BOSTON_COLS)


@pytest.fixture(scope="module")
def mnist_small() -> dict[str, np.ndarray]:
    """Synthetic, valid MNIST-shaped arrays: 1,000 train and 500 test images, balanced labels."""
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (1000, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(1000) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (500, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(500) % 10).astype(np.uint8),
    }


# --------------------------------------------------------------------------- suites


def test_packaged_suites_load_with_expected_counts() -> None:
    assert len(load_suite("adult").expectations) == 47
    assert len(load_suite("boston").expectations) == 44


def test_suite_with_unknown_expectation_type_is_refused(tmp_path: Path) -> None:
    raw = json.loads(load_suite_path("boston").read_text())
    raw["expectations"][5]["type"] = "expect_column_values_to_be_betwen"
    (tmp_path / "typo.json").write_text(json.dumps(raw))
    with pytest.raises(SuiteError) as info:
        load_suite("typo", directory=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "typo.json") in message
    assert "lists 44 expectations but GX built only 43" in message
    assert "dropped types: ['expect_column_values_to_be_betwen']" in message
    assert isinstance(info.value, NnstudyError)


def test_suite_with_bad_kwarg_or_missing_file_is_refused(tmp_path: Path) -> None:
    raw = {"name": "bad", "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"colum": "a"}}]}
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(SuiteError, match=r"bad\.json is invalid: .*colum"):
        load_suite("bad", directory=tmp_path)
    with pytest.raises(SuiteError, match=r"absent\.json does not exist; suites in .*\['bad'\]"):
        load_suite("absent", directory=tmp_path)


def test_missing_suite_parameter_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"needs parameters \['row_count'\]"):
        validate_frame(pd.DataFrame({"CRIM": [0.1]}), "boston", file_label="x", parameters={})


def load_suite_path(name: str) -> Path:
    import schemas

    return Path(schemas.__file__).parent / "expectations" / f"{name}.json"


# --------------------------------------------------------------------------- real files pass


@needs_mirror
@pytest.mark.mirror
@pytest.mark.parametrize("name, rows", [("adult.data", ADULT_TRAIN_ROWS), ("adult.test", ADULT_TEST_ROWS)])
def test_real_adult_files_pass(name: str, rows: int, adult_train: pd.DataFrame, capfd: pytest.CaptureFixture[str],
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    df = adult_train if name == "adult.data" else read_adult(name)
    report = validate_frame(df, "adult", file_label=name, parameters={"row_count": rows})
    assert report.success, report.summary()
    assert report.summary() == f"{name}: all 47 expectations passed."
    assert (report.dataset, report.suite, report.evaluated, report.failed, report.failures) == ("adult", "adult", 47, 0, [])
    json.dumps(report.result)
    assert "Calculating Metrics" not in capfd.readouterr().err  # progress bars are off
    assert not [r for r in caplog.records if r.name.startswith("great_expectations")]  # no INFO noise


@needs_mirror
@pytest.mark.mirror
def test_real_boston_file_passes(boston: pd.DataFrame) -> None:
    report = validate_frame(boston, "boston", file_label="housing.data", parameters={"row_count": BOSTON_ROWS})
    assert report.summary() == "housing.data: all 44 expectations passed."


@needs_mirror
@pytest.mark.mirror
def test_real_mnist_subsample_passes() -> None:
    arrays = {
        "x_train": read_idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "y_train": read_idx("train-labels-idx1-ubyte.gz", 8),
        "x_test": read_idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "y_test": read_idx("t10k-labels-idx1-ubyte.gz", 8),
    }
    report = validate_mnist(arrays, file_label="mnist-5k", expected_train_rows=5000, expected_test_rows=10_000)
    assert report.summary() == "mnist-5k: all 20 expectations passed."


# --------------------------------------------------------------------------- broken copies fail


def with_value(column: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A mutation that sets one cell of a copy."""
    def mutate(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out.loc[row, column] = value
        return out
    return mutate


def non_numeric_age(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["age"] = out["age"].astype("str")
    out.loc[3, "age"] = "forty"
    return out


ADULT_CASES = [
    pytest.param(with_value("age", 3, 150), 1,
                 ["expect_column_values_to_be_between[age]: 1 of 32,561 values (0.00307%) unexpected, e.g. [150] at rows [3] "
                  "(expected min_value=17.0, max_value=90.0)"], id="age-150"),
    pytest.param(with_value("sex", 10, "M"), 1,
                 ["expect_column_values_to_be_in_set[sex]: 1 of 32,561 values (0.00307%) unexpected, e.g. ['M'] at rows [10] "
                  "(expected value_set=['Female', 'Male'])"], id="sex-M"),
    pytest.param(with_value("income", 0, "unknown"), 1,
                 ["expect_column_values_to_be_in_set[income]: 1 of 32,561 values (0.00307%) unexpected, e.g. ['unknown']"],
                 id="income-unknown"),
    pytest.param(lambda df: df.drop(columns="fnlwgt"), 4,
                 ["expect_table_columns_to_match_ordered_list: observed 14 columns, expected 15: missing ['fnlwgt']",
                  "expect_column_values_to_be_of_type[fnlwgt] could not be evaluated (column 'fnlwgt' is missing from the data)",
                  "expect_column_values_to_be_between[fnlwgt] could not be evaluated (column 'fnlwgt' is missing"],
                 id="fnlwgt-dropped"),
    pytest.param(non_numeric_age, 2,
                 ["expect_column_values_to_be_of_type[age]: observed 'str', expected type_='int64'",
                  "expect_column_values_to_be_between[age] could not be evaluated (Column values, min_value, and max_value"],
                 id="age-not-numeric"),
    pytest.param(lambda df: df.head(13_032), 1,
                 ["expect_table_row_count_to_equal: observed 13032, expected value=32561"], id="truncated"),
]


@needs_mirror
@pytest.mark.mirror
@pytest.mark.parametrize("mutate, n_failed, fragments", ADULT_CASES)
def test_broken_adult_copy_fails(adult_train: pd.DataFrame, mutate: Callable[[pd.DataFrame], pd.DataFrame],
                                 n_failed: int, fragments: list[str]) -> None:
    report = validate_frame(mutate(adult_train), "adult", file_label="adult.data",
                            parameters={"row_count": ADULT_TRAIN_ROWS})
    assert not report.success
    assert report.failed == n_failed == len(report.failures), report.failures
    summary = report.summary()
    assert summary.startswith(f"adult.data failed {n_failed} of 47 expectations: ")
    for fragment in fragments:
        assert fragment in summary
    json.dumps(report.result)


BOSTON_CASES = [
    pytest.param(with_value("MEDV", 4, 60.0),
                 "expect_column_values_to_be_between[MEDV]: 1 of 506 values (0.198%) unexpected, e.g. [60.0]", id="MEDV-60"),
    pytest.param(with_value("CHAS", 7, 2),
                 "expect_column_values_to_be_in_set[CHAS]: 1 of 506 values (0.198%) unexpected, e.g. [2] at rows [7] "
                 "(expected value_set=[0, 1])", id="CHAS-2"),
    pytest.param(lambda df: df.assign(EXTRA=1.0),
                 "expect_table_columns_to_match_ordered_list: observed 15 columns, expected 14: unexpected ['EXTRA']",
                 id="extra-column"),
]


@needs_mirror
@pytest.mark.mirror
@pytest.mark.parametrize("mutate, fragment", BOSTON_CASES)
def test_broken_boston_copy_fails(boston: pd.DataFrame, mutate: Callable[[pd.DataFrame], pd.DataFrame], fragment: str) -> None:
    report = validate_frame(mutate(boston), "boston", file_label="housing.data", parameters={"row_count": BOSTON_ROWS})
    assert report.failed == 1 and fragment in report.failures[0], report.failures


# --------------------------------------------------------------------------- MNIST


def test_synthetic_mnist_passes(mnist_small: dict[str, np.ndarray]) -> None:
    report = validate_mnist(mnist_small, file_label="mnist", expected_train_rows=1000, expected_test_rows=500)
    assert report.success and report.evaluated == 20 and report.suite == "mnist-checks"
    checks = report.result["results"]
    assert all({"check", "array", "observed", "expected", "success"} <= c.keys() for c in checks)
    json.dumps(report.result)


def replaced(key: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A mutation that replaces one array of a copy of the dict."""
    return lambda arrays: {**arrays, key: fn(arrays[key])}


def label_11(y: np.ndarray) -> np.ndarray:
    out = y.copy()
    out[7] = 11
    return out


MNIST_CASES = [
    pytest.param(replaced("x_train", lambda x: x.reshape(len(x), 784)), {},
                 "images_shape[x_train]: observed [1000, 784], expected (N, 28, 28)", id="wrong-shape"),
    pytest.param(replaced("y_train", label_11), {},
                 "label_range[y_train]: 1 of 1,000 values (0.1%) unexpected, e.g. [11] (expected 0..9)", id="label-11"),
    pytest.param(replaced("x_train", lambda x: x.astype(np.float32) / 255), {},
                 "images_dtype[x_train]: observed 'float32', expected uint8", id="float-dtype"),
    pytest.param(replaced("y_test", lambda y: np.where(y == 3, 4, y).astype(np.uint8)), {},
                 "class_counts[y_test]: digits [3] have too few images {3: 0}, expected >= 25 per digit (5% of 500)",
                 id="missing-class"),
    pytest.param(lambda a: a, {"expected_train_rows": 60_000},
                 "row_count[x_train]: observed 1000, expected 60000", id="row-count"),
    pytest.param(replaced("y_train", lambda y: y[:-1]), {},
                 "labels_length[y_train]: observed 999, expected 1000", id="labels-shorter"),
    pytest.param(lambda a: {k: v for k, v in a.items() if k != "y_test"}, {},
                 "array_present[y_test] could not be evaluated (array 'y_test' is missing", id="array-missing"),
]


@pytest.mark.parametrize("mutate, overrides, fragment", MNIST_CASES)
def test_broken_mnist_fails(mnist_small: dict[str, np.ndarray], mutate: Callable, overrides: dict, fragment: str) -> None:
    expected = {"expected_train_rows": 1000, "expected_test_rows": 500, **overrides}
    report = validate_mnist(mutate(mnist_small), file_label="mnist", **expected)
    assert not report.success
    assert report.failed == 1, report.failures
    assert fragment in report.failures[0]
    assert report.summary().startswith(f"mnist failed 1 of {report.evaluated} expectations: {fragment}")


def test_mnist_rejects_nonsense_class_fraction(mnist_small: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="min_per_class_fraction"):
        validate_mnist(mnist_small, file_label="m", expected_train_rows=1000, expected_test_rows=500,
                       min_per_class_fraction=0.5)


# --------------------------------------------------------------------------- raise_if_failed


@needs_mirror
@pytest.mark.mirror
def test_raise_if_failed_names_file_expectation_count_and_example(adult_train: pd.DataFrame, boston: pd.DataFrame) -> None:
    broken = with_value("age", 3, 150)(adult_train)
    reports = [
        validate_frame(broken, "adult", file_label="adult.data", parameters={"row_count": ADULT_TRAIN_ROWS}),
        validate_frame(boston, "boston", file_label="housing.data", parameters={"row_count": BOSTON_ROWS}),
    ]
    with pytest.raises(ValidationFailed) as info:
        raise_if_failed(reports)
    message = str(info.value)
    assert message.startswith("Data validation failed for 1 of 2 files (adult.data). adult.data failed 1 of 47")
    assert "expect_column_values_to_be_between[age]: 1 of 32,561 values (0.00307%) unexpected, e.g. [150] at rows [3]" in message
    assert "housing.data" not in message
    assert "compare it with the canonical source" in message and "re-download" in message
    assert "\n" not in message
    assert info.value.reports == [reports[0]]


def report_with(file: str, n_failures: int) -> ValidationReport:
    failures = [f"expect_column_values_to_not_be_null[c{i}]: 1 of 10 values (10%) unexpected, e.g. [nan]" for i in range(n_failures)]
    return ValidationReport(dataset="d", file=file, suite="d", success=not failures, evaluated=20,
                            failed=n_failures, failures=failures, result={})


def test_raise_if_failed_caps_failures_per_file() -> None:
    with pytest.raises(ValidationFailed) as info:
        raise_if_failed([report_with("a.csv", 8), report_with("b.csv", 1), report_with("c.csv", 0)])
    message = str(info.value)
    assert "for 2 of 3 files (a.csv, b.csv)" in message
    assert "a.csv failed 8 of 20 expectations:" in message and "[c4]" in message and "[c5]" not in message
    assert "; and 3 more." in message
    assert "These data files are probably altered or truncated: compare each with" in message


def test_raise_if_failed_is_silent_when_all_passed() -> None:
    assert raise_if_failed([report_with("a.csv", 0)]) is None
    assert raise_if_failed([]) is None
