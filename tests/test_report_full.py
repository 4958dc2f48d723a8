"""The whole report on a full-size synthetic results frame (124 cells × 3 seeds): sections, effects, figures."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest

from schemas.study import load_study
from tasks import figures, replication
from tasks.baselines import MEAN, MEDIAN, ZERO
from tasks.ingest import RawData
from tasks.report import METRICS, best_cells, build_report

pytestmark = pytest.mark.slow  # renders every figure twice: about a minute on two busy cores

STUDY = load_study()
EXPERIMENTS = list(STUDY.experiments)
AXES = ["hidden_layers", "units", "activation", "epochs", "batch_size"]


def synthetic_results(seeds: int = 3, with_curves: bool = False) -> pd.DataFrame:
    """Every cell of the sample grid with plausible metrics: wider nets and more epochs help, sigmoid hurts."""
    rng = np.random.default_rng(7)
    rows = []
    for name, spec in STUDY.experiments.items():
        grid = STUDY.grid_for(name, "sample")
        for cell in itertools.product(*(getattr(grid, a) for a in AXES)):
            layers, units, activation, epochs, batch = cell
            for seed, split in itertools.product(range(seeds), ("train", "test")):
                quality = 0.01 * (units == 64) + 0.004 * (epochs == max(grid.epochs)) + rng.normal(0, 0.003)
                row = {"experiment": name, "dataset": spec.dataset, "task": spec.task, "target": spec.target,
                       "split": split, **dict(zip(AXES, cell)), "seed": seed, "train_seconds": 1.0,
                       "n_rows": 100, "data_digest": "d", "trial_key": f"{name}{cell}{seed}"}
                row.update({m: np.nan for m in METRICS["classification"] + METRICS["regression"]})
                if spec.task == "classification":
                    base = 0.93 if name == "mnist" else 0.67
                    f1 = base + quality + (0.03 if split == "train" else 0)
                    row.update(precision=f1 + 0.001, recall=f1 - 0.001, f1=f1, accuracy=f1 + 0.01)
                else:
                    base = 4.0 if name == "boston" else 10.8
                    rmse = base * (1 - 3 * quality) + (1.2 if activation == "sigmoid" else 0)
                    row.update(mae=rmse * 0.7, mape=rmse * 3.5, rmse=rmse, r2=0.8 - quality)
                if with_curves:
                    row["loss_curve"] = list(np.linspace(1.0, 0.2, epochs) + (0.1 if split == "test" else 0))
                rows.append(row)
    return pd.DataFrame(rows)


def raw_data() -> dict[str, RawData]:
    rng = np.random.default_rng(0)
    education = rng.choice(["HS-grad", "Bachelors", "Masters"], 300)
    adult = pd.DataFrame({"age": rng.integers(17, 90, 300), "education": education,
                          "education-num": pd.Series(education).map({"HS-grad": 9, "Bachelors": 13, "Masters": 14}),
                          "income": rng.choice(["<=50K", ">50K"], 300)})
    boston = pd.DataFrame({"MEDV": rng.uniform(5, 50, 100), "RM": rng.uniform(4, 8, 100)})
    mnist = {"x_train": rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), "y_train": rng.integers(0, 10, 40)}
    return {"adult": RawData("adult", frames={"train": adult, "test": adult}),
            "boston": RawData("boston", frames={"data": boston}), "mnist": RawData("mnist", arrays=mnist)}


def baseline_rows() -> pd.DataFrame:
    rows = []
    for split in ("train", "test"):
        rows += [{"experiment": "adult-hours", "split": split, "model": ZERO, "rmse": 42.3, "mae": 40.4,
                  "mape": 100.0, "r2": -10.8, "fit_seconds": 0.0},
                 {"experiment": "adult-hours", "split": split, "model": MEAN, "rmse": 12.3, "mae": 7.6, "mape": 42.0,
                  "r2": 0.0, "fit_seconds": 0.0},
                 {"experiment": "adult-hours", "split": split, "model": MEDIAN, "rmse": 12.4, "mae": 7.3,
                  "mape": 40.0, "r2": -0.01, "fit_seconds": 0.0},
                 {"experiment": "mnist", "split": split, "model": "LogisticRegression", "f1": 0.88, "precision": 0.88,
                  "recall": 0.88, "accuracy": 0.88, "fit_seconds": 3.0}]
    return pd.DataFrame(rows)


def render(tmp_path, results: pd.DataFrame) -> tuple[str, figures.FigureSet]:
    best = best_cells(results, STUDY, EXPERIMENTS)
    confusion = {"mnist": {"matrix": np.eye(10, dtype=int).tolist(), "metrics": {"f1": 0.95}}}
    figure_set = figures.write_figures(tmp_path, lambda folder: figures.render_all(
        folder, results=results, raw=raw_data(), best=best, confusion=confusion, experiments=EXPERIMENTS))
    text = build_report(results, study=STUDY, profile="sample", experiments=EXPERIMENTS, datasets=[],
                        preprocessing={}, run_info={"seeds": [0, 1, 2], "wall_seconds": 10.0},
                        baselines=baseline_rows(), published=replication.load_published(),
                        conclusions=replication.load_conclusions(), figures=figure_set)
    return text, figure_set


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    text, figure_set = render(folder, synthetic_results())
    return folder, text, figure_set


def test_sections_in_order_with_summary_first(full):
    _, text, _ = full
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Summary"
    order = ["## Summary", "## mnist", "## boston", "## adult-hours", "## adult-income", "## Hyperparameter effects",
             "## Figures", "## Replication", "## Baselines", "## Data", "## Environment"]
    positions = [text.index(h) for h in order]
    assert positions == sorted(positions)


def test_seven_tables_with_mean_and_std(full):
    _, text, _ = full
    captions = [line.split(" — ")[0] for line in text.splitlines() if line.startswith("Table ")]
    assert captions == ["Table 3", "Table 4", "Table 5", "Table 6", "Table 7", "Table 8", "Table 9"]
    assert len(re.findall(r"\d\.\d{4} ± \d\.\d{4}", text)) > 124 * 2


def test_summary_names_best_cells_factors_and_verdicts(full):
    _, text, _ = full
    summary = text[text.index("## Summary"):text.index("## mnist")]
    best = best_cells(synthetic_results(), STUDY, EXPERIMENTS)
    for experiment in EXPERIMENTS:
        assert f"| {experiment} | {best[experiment]['configuration']} |" in summary
    assert "units 64 instead of 32 better" in summary  # the planted width effect
    assert "Boston: 150 epochs with batch 16" in summary and "paper's own table: " in summary
    assert "Table 5's \"MAE\" column is MSE" in summary
    assert "Table 8 matches a model that predicts 0 for every row" in summary
    assert len(summary.splitlines()) < 40


def test_effects_call_the_planted_null_effect_noise(full):
    _, text, _ = full
    effects = text[text.index("## Hyperparameter effects"):text.index("## Figures")]
    mnist = effects[effects.index("### mnist"):effects.index("### boston")]
    layer_rows = [line for line in mnist.splitlines() if line.startswith("| hidden layers")]
    assert layer_rows and all("within noise" in line for line in layer_rows)
    assert "**better**" in next(line for line in mnist.splitlines() if line.startswith("| units 64"))


def test_at_least_twelve_figures_all_linked_and_written(full):
    folder, text, figure_set = full
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    assert len(links) >= 12 and len(set(links)) == len(links)
    for link in links:
        assert (folder / link).stat().st_size > 1000
    assert sorted(p.name for p in (folder / "figures").iterdir()) == sorted(f.name for f in figure_set.figures)
    assert any("learning curves" in reason and "loss_curve" in reason for reason in figure_set.absent)
    assert "Not drawn:" in text


def test_learning_curves_are_drawn_when_the_results_carry_them(tmp_path):
    results = synthetic_results(seeds=2, with_curves=True)
    results = results[results["experiment"].isin(["adult-income"])]
    text, figure_set = render(tmp_path, results)
    assert "adult-income_learning_curves.png" in {f.name for f in figure_set.figures}
    assert not any("adult-income learning curves" in reason for reason in figure_set.absent)


def test_a_failed_render_leaves_the_previous_figures_in_place(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "old.png").write_bytes(b"x")

    def broken(folder):
        (folder / "half.png").write_bytes(b"y")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        figures.write_figures(tmp_path, broken)
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["old.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["figures"]
