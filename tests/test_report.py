"""The Markdown report builder, on small synthetic result frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from schemas.study import load_study
from tasks.report import (MAIN_METRIC, METRICS, aggregate_cells, build_report, data_section,
                          experiment_summary, experiment_table)

STUDY = load_study()
ALL_METRICS = METRICS["classification"] + METRICS["regression"]
HEADER_MNIST = ("| Hidden layers | Units | Activation | Epochs | Batch size "
                "| Precision | Recall | F1-score | Accuracy | Best |")


def trial(experiment: str, split: str, cell: tuple, seed: int, seconds: float = 2.0, **metrics: float) -> dict:
    """One results row; metrics not given are NaN."""
    spec = STUDY.experiments[experiment]
    layers, units, activation, epochs, batch = cell
    row = {"experiment": experiment, "dataset": spec.dataset, "task": spec.task, "target": spec.target,
           "split": split, "hidden_layers": layers, "units": units, "activation": activation,
           "epochs": epochs, "batch_size": batch, "seed": seed}
    row.update({m: metrics.get(m, np.nan) for m in ALL_METRICS})
    row.update({"train_seconds": seconds, "n_rows": 100, "data_digest": "d1",
                "trial_key": f"{experiment}|{cell}|{seed}"})
    return row


def cls(experiment: str, split: str, cell: tuple, seed: int, f1: float, seconds: float = 2.0) -> dict:
    """A classification row whose other metrics are fixed offsets from f1."""
    return trial(experiment, split, cell, seed, seconds, precision=f1 + 0.001, recall=f1 - 0.001, f1=f1,
                 accuracy=f1 + 0.002)


def reg(split: str, cell: tuple, seed: int, rmse: float) -> dict:
    """A Boston row whose other metrics are fixed functions of rmse."""
    return trial("boston", split, cell, seed, mae=rmse * 0.75, mape=rmse * 4, rmse=rmse, r2=1 - rmse / 10)


MNIST_CELLS = {(1, 32, "relu", 5, 64): [0.9600, 0.9650], (1, 32, "relu", 5, 128): [0.9500],
               (2, 32, "relu", 5, 64): [0.9700], (2, 32, "relu", 5, 128): [0.9400]}
BOSTON_CELLS = {(1, 32, "relu", 50, 16): [4.0, 5.0], (1, 32, "sigmoid", 50, 16): [3.25],
                (2, 32, "relu", 50, 16): [6.0]}
INCOME_CELLS = {(2, 64, "relu", 10, 64): 0.66, (2, 64, "relu", 5, 32): 0.67,
                (2, 64, "relu", 10, 32): 0.65, (2, 64, "relu", 5, 64): 0.64}


@pytest.fixture
def results() -> pd.DataFrame:
    """MNIST (two seeds in one cell), Boston (two seeds in one cell) and Adult income, both splits."""
    rows = []
    for cell, values in MNIST_CELLS.items():
        for seed, f1 in enumerate(values):
            rows.append(cls("mnist", "test", cell, seed, f1, seconds=2.0 + seed))
            rows.append(cls("mnist", "train", cell, seed, f1 + 0.02, seconds=2.0 + seed))
    for cell, values in BOSTON_CELLS.items():
        for seed, rmse in enumerate(values):
            rows += [reg("test", cell, seed, rmse), reg("train", cell, seed, rmse - 1)]
    for cell, f1 in INCOME_CELLS.items():
        rows += [cls("adult-income", "test", cell, 0, f1), cls("adult-income", "train", cell, 0, f1 + 0.05)]
    return pd.DataFrame(rows)


def table_lines(text: str) -> list[str]:
    """The Markdown table rows (header, rule and body) of a rendered table."""
    return [line for line in text.splitlines() if line.startswith("|")]


def cells_of(line: str) -> list[str]:
    """A Markdown row's cells, stripped."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_metric_mapping_is_the_single_source():
    assert METRICS == {"classification": ["precision", "recall", "f1", "accuracy"],
                       "regression": ["mae", "mape", "rmse", "r2"]}
    assert MAIN_METRIC == {"classification": ("f1", True), "regression": ("rmse", False)}


def test_aggregate_cells_matches_pandas_computed_independently(results):
    agg = aggregate_cells(results)
    assert len(agg) == 2 * (len(MNIST_CELLS) + len(BOSTON_CELLS) + len(INCOME_CELLS))
    for _, row in agg.iterrows():
        mask = ((results["experiment"] == row["experiment"]) & (results["split"] == row["split"])
                & (results["hidden_layers"] == row["hidden_layers"]) & (results["units"] == row["units"])
                & (results["activation"] == row["activation"]) & (results["epochs"] == row["epochs"])
                & (results["batch_size"] == row["batch_size"]))
        group = results[mask]
        assert row["n_seeds"] == group["seed"].nunique()
        for metric in ALL_METRICS:
            values = group[metric].to_numpy(dtype=float)
            expected_mean = np.mean(values)
            expected_std = np.std(values, ddof=1) if len(values) > 1 else np.nan
            assert row[f"{metric}_mean"] == pytest.approx(expected_mean, nan_ok=True)
            assert row[f"{metric}_std"] == pytest.approx(expected_std, nan_ok=True)


def test_aggregate_cells_std_is_nan_with_one_seed_and_sample_std_with_two(results):
    agg = aggregate_cells(results)
    mnist = agg[(agg["experiment"] == "mnist") & (agg["split"] == "test")].set_index("batch_size")
    one_layer = mnist[mnist["hidden_layers"] == 1]
    assert one_layer.loc[64, "n_seeds"] == 2
    assert one_layer.loc[64, "f1_std"] == pytest.approx(pd.Series([0.96, 0.965]).std())
    assert np.isnan(one_layer.loc[128, "f1_std"])
    assert one_layer.loc[128, "n_seeds"] == 1


def test_aggregate_cells_does_not_mutate_its_input(results):
    before = results.copy()
    aggregate_cells(results)
    experiment_table(results, "mnist", STUDY.experiments["mnist"], "test", 4)
    pd.testing.assert_frame_equal(results, before)


def test_mnist_table_groups_blank_repeated_values_and_marks_highest_f1(results):
    text = experiment_table(results, "mnist", STUDY.experiments["mnist"], "test", 4)
    assert table_lines(text) == [
        HEADER_MNIST,
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
        "| 1 | 32 | ReLU | 5 | 64 | 0.9635 ± 0.0035 | 0.9615 ± 0.0035 | 0.9625 ± 0.0035 | 0.9645 ± 0.0035 |  |",
        "|  |  |  |  | 128 | 0.9510 | 0.9490 | 0.9500 | 0.9520 |  |",
        "| 2 | 32 | ReLU | 5 | 64 | 0.9710 | 0.9690 | **0.9700** | 0.9720 | ★ best |",
        "|  |  |  |  | 128 | 0.9410 | 0.9390 | 0.9400 | 0.9420 |  |",
    ]


def test_group_value_reprinted_when_an_outer_group_changes(results):
    text = experiment_table(results, "boston", STUDY.experiments["boston"], "test", 6)
    axes = [cells_of(line)[:5] for line in table_lines(text)[2:]]
    assert axes == [["1", "32", "ReLU", "50", "16"],
                    ["", "", "Sigmoid", "50", "16"],
                    ["2", "32", "ReLU", "50", "16"]]


def test_boston_best_row_is_lowest_rmse_and_mape_header(results):
    text = experiment_table(results, "boston", STUDY.experiments["boston"], "test", 6)
    lines = table_lines(text)
    assert lines[0] == ("| Hidden layers | Units | Activation | Epochs | Batch size "
                        "| MAE | MAPE (%) | RMSE | R² | Best |")
    assert lines[2:] == [
        "| 1 | 32 | ReLU | 50 | 16 | 3.3750 ± 0.5303 | 18.0000 ± 2.8284 | 4.5000 ± 0.7071 | 0.5500 ± 0.0707 |  |",
        "|  |  | Sigmoid | 50 | 16 | 2.4375 | 13.0000 | **3.2500** | 0.6750 | ★ best |",
        "| 2 | 32 | ReLU | 50 | 16 | 4.5000 | 24.0000 | 6.0000 | 0.4000 |  |",
    ]
    assert sum("★ best" in line for line in lines) == 1


def test_best_row_follows_the_data_not_the_row_order(results):
    flipped = results.copy()
    flipped.loc[flipped["rmse"] == 3.25, "rmse"] = 9.0
    text = experiment_table(flipped, "boston", STUDY.experiments["boston"], "test", 6)
    best = [line for line in table_lines(text) if "★ best" in line]
    assert best == ["| 1 | 32 | ReLU | 50 | 16 | 3.3750 ± 0.5303 | 18.0000 ± 2.8284 "
                    "| **4.5000 ± 0.7071** | 0.5500 ± 0.0707 | ★ best |"]


def test_one_seed_values_are_plain_four_decimals(results):
    one_seed = results[results["seed"] == 0]
    text = experiment_table(one_seed, "mnist", STUDY.experiments["mnist"], "test", 4)
    assert "±" not in text
    assert cells_of(table_lines(text)[2])[5:9] == ["0.9610", "0.9590", "0.9600", "0.9620"]


def test_captions_name_table_experiment_split_and_metric_definitions(results):
    boston = experiment_table(results, "boston", STUDY.experiments["boston"], "train", 5)
    assert boston.splitlines()[0] == (
        "Table 5 — Boston Housing, regression of MEDV — training split "
        "(MAE = mean absolute error, not the MSE that the published Table 5 labels MAE; "
        "MAPE = mean absolute percentage error, in %; RMSE = root mean squared error; "
        "R² = coefficient of determination; ★ best = lowest RMSE; mean ± sample std over 1–2 seeds)")
    mnist = experiment_table(results[results["seed"] == 0], "mnist", STUDY.experiments["mnist"], "test", 4)
    assert mnist.splitlines()[0] == (
        "Table 4 — MNIST, classification of digit — test split (precision, recall and F1-score "
        "macro-averaged over the classes; accuracy = share of correct predictions; ★ best = highest F1-score)")


def test_table_9_rows_are_epoch_batch_pairs_with_architecture_in_caption(results):
    text = experiment_table(results, "adult-income", STUDY.experiments["adult-income"], "test", 9)
    assert text.splitlines()[0].startswith(
        "Table 9 — Adult, classification of income (2 hidden layers of 64 ReLU units) — test split "
        "(precision, recall and F1-score of the positive class >50K;")
    lines = table_lines(text)
    assert lines[0] == "| (Epoch, Batch_size) | Precision | Recall | F1-score | Accuracy | Best |"
    assert [cells_of(line)[0] for line in lines[2:]] == ["(5, 32)", "(5, 64)", "(10, 32)", "(10, 64)"]
    assert lines[2] == "| (5, 32) | 0.6710 | 0.6690 | **0.6700** | 0.6720 | ★ best |"


def test_table_9_falls_back_to_full_layout_when_data_has_several_architectures(results):
    extra = pd.DataFrame([cls("adult-income", "test", (1, 32, "relu", 5, 32), 0, 0.5)])
    text = experiment_table(pd.concat([results, extra], ignore_index=True), "adult-income",
                            STUDY.experiments["adult-income"], "test", 9)
    lines = table_lines(text)
    assert text.startswith("Table 9 — Adult, classification of income — test split (")
    assert lines[0].startswith("| Hidden layers | Units | Activation | Epochs | Batch size | Precision |")
    assert cells_of(lines[2])[:5] == ["1", "32", "ReLU", "5", "32"]
    assert cells_of(lines[3])[:5] == ["2", "64", "ReLU", "5", "32"]


def test_split_without_rows_says_so(results):
    text = experiment_table(results[results["split"] == "test"], "boston", STUDY.experiments["boston"],
                            "train", 5)
    assert text.startswith("Table 5 — Boston Housing, regression of MEDV — training split (")
    assert text.endswith("_No results for this split._")


def test_summary_reports_best_worst_spread_and_training_time(results):
    text = experiment_summary(results, "mnist", STUDY.experiments["mnist"])
    assert text == (
        "Best on the test split by F1-score: 2 hidden layers of 32 ReLU units, 5 epochs, batch size 64, "
        "F1-score 0.9700 on test (0.9900 on train). "
        "Worst: 2 hidden layers of 32 ReLU units, 5 epochs, batch size 128, F1-score 0.9400 on test "
        "(0.9600 on train). "
        "Over the 4 grid cells the test F1-score ranges from 0.9400 to 0.9700 (spread 0.0300). "
        "Values are means over 1–2 seeds. "
        "Training took 2.2 s per trial on average (5 trials).")


def test_summary_uses_lowest_rmse_as_best_for_regression(results):
    text = experiment_summary(results, "boston", STUDY.experiments["boston"])
    assert text.startswith("Best on the test split by RMSE: 1 hidden layer of 32 Sigmoid units, 50 epochs, "
                           "batch size 16, RMSE 3.2500 on test (2.2500 on train). Worst: 2 hidden layers")
    assert "ranges from 3.2500 to 6.0000 (spread 2.7500)" in text


DATASETS = [
    {"dataset": "mnist", "entry": "mnist-subsample", "source": "data-dir", "subsample": True,
     "description": "Handwritten digits.",
     "files": [{"role": "train", "path": "/x/mnist/train.csv", "rows": 5000, "md5": "m" * 32,
                "sha256": "0123456789abcdef" + "f" * 48, "bytes": 10, "verified": True},
               {"role": "test", "path": "/x/mnist/test.csv", "rows": 10000, "md5": "n" * 32,
                "sha256": "fedcba9876543210" + "0" * 48, "bytes": 10, "verified": False}],
     "validation": [{"file": "train.csv", "success": True, "summary": "train.csv: all 5 expectations passed."},
                    {"file": "test.csv", "success": False, "summary": "test.csv: 1 of 5 expectations failed."}]},
    {"dataset": "adult", "entry": "adult", "source": "data-dir", "subsample": False, "description": "Census.",
     "files": [{"role": "train", "path": "/x/adult/adult.data", "rows": 32561, "md5": "a" * 32,
                "sha256": "b" * 64, "bytes": 3974305, "verified": True}],
     "validation": [{"file": "adult.data", "success": True, "summary": "adult.data: all 41 expectations passed."}]},
]
PREPROCESSING = {
    "adult-hours": {"n_train": 32561, "n_test": 16281, "n_features": 104,
                    "missing": {"workclass": {"train": 1836, "test": 963}, "age": {"train": 0, "test": 0}},
                    "cache": "hit", "target_scaling": "standardised on the training split"},
    "mnist": {"n_train": 5000, "n_test": 10000, "n_features": 784, "missing": {}, "cache": "miss",
              "target_scaling": None},
}


def test_data_section_flags_subsample_and_unverified_file():
    text = data_section(DATASETS, PREPROCESSING)
    lines = text.splitlines()
    assert "> ⚠ **MNIST training data is the 5,000-image subsample, not the official 60,000.**" in lines
    assert ("> ⚠ **NOT VERIFIED: test.csv (test) was not verified against the catalog checksum.**" in lines)
    assert f"| train | train.csv | 5,000 | `{'m' * 32}` | `0123456789abcdef` | ✓ |" in lines
    assert f"| test | test.csv | 10,000 | `{'n' * 32}` | `fedcba9876543210` | NOT VERIFIED |" in lines
    assert "- ✓ passed: train.csv: all 5 expectations passed." in lines
    assert "- ✗ **FAILED**: test.csv: 1 of 5 expectations failed." in lines
    assert sum("NOT VERIFIED" in line for line in lines) == 2
    assert sum(line.startswith("> ⚠") for line in lines) == 2  # Adult is neither subsampled nor unverified


def test_data_section_preprocessing_table():
    lines = data_section(DATASETS, PREPROCESSING).splitlines()
    assert ("| adult-hours | 32,561 | 16,281 | 104 | workclass 1,836 / 963 | hit "
            "| standardised on the training split |") in lines
    assert "| mnist | 5,000 | 10,000 | 784 | none | miss | none |" in lines


def build(results: pd.DataFrame, experiments: list[str]) -> str:
    """A whole report with fixed run facts."""
    return build_report(results, study=STUDY, profile="quick", experiments=experiments, datasets=DATASETS,
                        preprocessing=PREPROCESSING,
                        run_info={"started": "2024-05-01T10:00:00+00:00", "wall_seconds": 61.25, "n_trials": 13,
                                  "trials_cached": 4, "seeds": [0, 1], "nnstudy_version": "0.1.0",
                                  "packages": {"pandas": "3.1.1", "keras": "3.5.0"}})


def test_build_report_skips_an_experiment_without_rows_and_keeps_order(results):
    text = build(results, ["boston", "adult-hours", "mnist", "adult-income"])
    lines = text.splitlines()
    assert lines[0] == "# nnstudy report — profile quick"
    assert ("Run: started 2024-05-01T10:00:00+00:00; wall time 61.2 s; 13 trials (4 from cache); "
            "seeds 0, 1; nnstudy 0.1.0.") in lines
    assert "Packages: keras 3.5.0, pandas 3.1.1." in lines
    assert "_adult-hours: no results in this run; skipped._" in lines
    assert not any(line.startswith("Table 7") or line.startswith("Table 8") for line in lines)
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## Summary",
                        "## boston — Boston Housing, regression of MEDV",
                        "## mnist — MNIST, classification of digit",
                        "## adult-income — Adult, classification of income",
                        "## Hyperparameter effects", "## Figures", "## Baselines", "## Data", "## Environment"]
    captions = [line.split(" — ")[0] for line in lines if line.startswith("Table ")]
    assert captions == ["Table 5", "Table 6", "Table 3", "Table 4", "Table 9"]


def test_build_report_shows_note_summary_and_coverage(results):
    text = build(results, ["adult-income"])
    assert "> Note: The paper does not give this network's architecture;" in text
    assert ("Results cover 0 of the 1 grid cells of profile quick; "
            "4 further cells with results lie outside that grid.") in text
    assert text.index("Best on the test split") < text.index("Table 9 —") < text.index("## Data")


def test_build_report_with_one_experiment_only_and_is_deterministic(results):
    mnist_only = results[results["experiment"] == "mnist"]
    first = build(mnist_only, ["mnist", "boston", "adult-hours", "adult-income"])
    assert first == build(mnist_only, ["mnist", "boston", "adult-hours", "adult-income"])
    for name in ("boston", "adult-hours", "adult-income"):
        assert f"_{name}: no results in this run; skipped._" in first
    assert first.endswith("\n")
