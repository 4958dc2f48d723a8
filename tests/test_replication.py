"""Replication: the published tables' checks, the cell comparison and the paper's conclusions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nnstudy.errors import ReferenceDataError
from schemas.study import load_study
from tasks.baselines import MEAN, MEDIAN, ZERO
from tasks.replication import (PUBLISHED_FILE, Conclusion, compare_cells, constant_predictor_findings,
                               coverage_findings, evaluate_conclusion, findings, load_conclusions,
                               load_published, missing_value_findings, mse_in_mae_findings)

STUDY = load_study()
AXES = ["hidden_layers", "units", "activation", "epochs", "batch_size"]


def published_regression(table: int, rmse: list[float], mae: list[float], mape: list[float] | None = None,
                         split: str = "train") -> pd.DataFrame:
    """A synthetic published regression table, Boston-shaped."""
    cells = [(1, 32, "relu", e, b) for e in (50, 100, 150) for b in (16, 32, 64)][:len(rmse)]
    return pd.DataFrame([{"table": table, "dataset": "boston", "task": "regression", "split": split,
                          **dict(zip(AXES, cell)), "precision": np.nan, "recall": np.nan, "f1": np.nan,
                          "mae_column": m, "mape": (mape or [15.0] * len(rmse))[i], "rmse": r, "note": ""}
                         for i, (cell, r, m) in enumerate(zip(cells, rmse, mae))])


RMSE = [4.3563, 5.8023, 10.4347, 3.2159, 4.5342]


def test_mse_in_the_mae_column_is_flagged():
    table = published_regression(5, RMSE, [round(r * r, 4) for r in RMSE])
    found = mse_in_mae_findings(table)
    assert len(found) == 1 and found[0].table == 5
    assert "equals RMSE² in 5 of 5 rows" in found[0].sentence
    assert "exceeds RMSE in 5" in found[0].sentence and "mean squared error (MSE)" in found[0].sentence


def test_a_genuine_mae_column_is_not_flagged():
    assert mse_in_mae_findings(published_regression(6, RMSE, [r * 0.75 for r in RMSE])) == []


def test_a_table_with_mse_in_only_a_few_rows_is_not_flagged():
    mae = [r * 0.75 for r in RMSE]
    mae[0] = RMSE[0] ** 2
    assert mse_in_mae_findings(published_regression(6, RMSE, mae)) == []


def baselines_frame(experiment: str, split: str, zero: dict, mean: dict) -> pd.DataFrame:
    rows = [{"experiment": experiment, "split": split, "model": ZERO, **zero},
            {"experiment": experiment, "split": split, "model": MEAN, **mean},
            {"experiment": experiment, "split": split, "model": MEDIAN, **mean}]
    return pd.DataFrame(rows)


ADULT_BASELINES = baselines_frame("adult-hours", "test", zero={"rmse": 42.3, "mae": 40.4, "mape": 100.0},
                                  mean={"rmse": 12.3, "mae": 7.6, "mape": 42.0})


def adult_table(rmse: float, mae: float, mape: float) -> pd.DataFrame:
    frame = published_regression(8, [rmse] * 4, [mae] * 4, [mape] * 4, split="test")
    return frame.assign(dataset="adult")


def test_regression_that_predicts_about_zero_is_flagged_against_both_constants():
    found = constant_predictor_findings(adult_table(42.03, 40.16, 99.4), ADULT_BASELINES, STUDY, set())
    assert [f.table for f in found] == [8]
    sentence = found[0].sentence
    assert "predicts 0 for every row" in sentence and "learned nothing" in sentence
    assert "RMSE 42.30" in sentence and "RMSE 12.30" in sentence  # both constants, from the baselines


def test_regression_that_learned_is_not_flagged():
    assert constant_predictor_findings(adult_table(10.7, 7.9, 30.0), ADULT_BASELINES, STUDY, set()) == []
    assert constant_predictor_findings(adult_table(42.03, 40.16, 99.4), None, STUDY, set()) == []


def test_the_real_published_tables_give_both_findings():
    published = load_published()
    found = findings(published, ADULT_BASELINES, STUDY)
    mse = [f for f in found if f.check == "mse-labelled-mae"]
    assert [f.table for f in mse] == [5]  # Table 6's MAE is a real MAE; Table 7 and 8 too
    assert "equals RMSE² in 53 of 53 rows" in mse[0].sentence
    assert [f.table for f in found if f.check == "constant-predictor"] == [8]
    gaps = missing_value_findings(published, STUDY)
    assert [f.table for f in gaps] == [5] and "mae_column, mape" in gaps[0].sentence
    coverage = coverage_findings(published, STUDY)
    assert len(coverage) == 1 and "54 of the 72 cells of boston" in coverage[0].sentence
    assert "the 18 missing cells all have units 64, activation sigmoid" in coverage[0].sentence


def ours(experiment: str, split: str, cell: tuple, values: list[float], metric: str) -> list[dict]:
    return [{"experiment": experiment, "split": split, **dict(zip(AXES, cell)), "seed": s, metric: v}
            for s, v in enumerate(values)]


def test_compare_cells_mean_std_difference_and_spread():
    published = published_regression(6, [4.0, 5.0], [3.0, 3.5], split="test")
    results = pd.DataFrame(ours("boston", "test", (1, 32, "relu", 50, 16), [4.1, 4.3, 4.2], "rmse")
                           + ours("boston", "test", (1, 32, "relu", 50, 32), [4.0, 4.02, 4.01], "rmse"))
    comparison = compare_cells(results, published, STUDY)
    rmse = comparison[comparison["metric"] == "rmse"].set_index("batch_size")
    assert rmse.loc[16, "ours_mean"] == pytest.approx(4.2) and rmse.loc[16, "ours_std"] == pytest.approx(0.1)
    assert rmse.loc[16, "difference"] == pytest.approx(0.2) and bool(rmse.loc[16, "within_spread"])
    assert rmse.loc[32, "difference"] == pytest.approx(-0.99) and not bool(rmse.loc[32, "within_spread"])
    mae = comparison[comparison["metric"] == "mae"]
    assert mae["ours_mean"].isna().all()  # our rows carry no MAE: compared as missing, never invented


def test_table_9_cells_match_on_epochs_and_batch_only():
    published = load_published()
    published = published[published["table"] == 9]
    results = pd.DataFrame(ours("adult-income", "test", (2, 64, "relu", 5, 32), [0.67, 0.68], "f1"))
    comparison = compare_cells(results, published, STUDY)
    matched = comparison[(comparison["metric"] == "f1") & comparison["ours_mean"].notna()]
    assert len(matched) == 1 and matched["published"].iloc[0] == 0.6694


def test_conclusions_file_loads_and_a_broken_one_is_refused(tmp_path):
    assert {c.id for c in load_conclusions()} >= {"mnist-epochs", "mnist-batch", "boston-150-16"}
    broken = tmp_path / "conclusions.yaml"
    broken.write_text("conclusions:\n  - id: x\n    claim: y\n    experiment: mnist\n    kind: guess\n")
    with pytest.raises(ReferenceDataError, match=str(broken)):
        load_conclusions(broken)


def test_published_file_without_a_column_is_refused(tmp_path):
    path = tmp_path / "published.csv"
    pd.read_csv(PUBLISHED_FILE).drop(columns=["rmse"]).to_csv(path, index=False)
    with pytest.raises(ReferenceDataError, match=r"lacks column\(s\) \['rmse'\]"):
        load_published(path)


def test_conclusions_on_the_papers_own_tables():
    published = load_published()
    from tasks.replication import as_results

    theirs = as_results(published, STUDY)
    batch = Conclusion(id="b", claim="", experiment="mnist", kind="effect", factor="batch_size")
    epochs = Conclusion(id="e", claim="", experiment="mnist", kind="effect", factor="epochs")
    assert evaluate_conclusion(epochs, theirs, "f1", True)[0] == "holds"
    # The paper says larger batches help, but its own Table 4 shows batch 128 below batch 64.
    assert evaluate_conclusion(batch, theirs, "f1", True)[0] == "does not hold"
    flat = Conclusion(id="f", claim="", experiment="adult-hours", kind="flat")
    assert evaluate_conclusion(flat, theirs, "rmse", False)[0] == "holds"
    best = Conclusion(id="s", claim="", experiment="boston", kind="best_setting",
                      setting={"epochs": 150, "batch_size": 16}, within=["hidden_layers", "units", "activation"])
    verdict, evidence = evaluate_conclusion(best, theirs, "rmse", False)
    assert evidence.endswith("of 6 groups")
