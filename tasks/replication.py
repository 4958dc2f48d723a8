"""The published tables against nnstudy's results: cell-by-cell comparison, checks of the tables, conclusions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nnstudy.errors import ReferenceDataError
from schemas.study import StudySpec
from tasks import stats
from tasks.baselines import MEAN, ZERO

PUBLISHED_DIR = Path(__file__).resolve().parents[1] / "schemas" / "published"
PUBLISHED_FILE = PUBLISHED_DIR / "published_results.csv"
CONCLUSIONS_FILE = PUBLISHED_DIR / "conclusions.yaml"
AXES = stats.GRID_AXES
# Published column -> our metric column. `mae_column` is what the paper labels MAE.
PUBLISHED_METRICS = {"precision": "precision", "recall": "recall", "f1": "f1", "mae_column": "mae",
                     "mape": "mape", "rmse": "rmse"}
REQUIRED_COLUMNS = ["table", "split", *AXES, *PUBLISHED_METRICS]
# A published value is "within our spread" when it lies within this many seed standard deviations of our mean.
SPREAD_WIDTH = 2.0
# A printed 4-decimal RMSE squared is exact to about 2·RMSE·0.00005; 0.1 % covers that and the printed MSE.
SQUARE_TOLERANCE = 1e-3
# Share of a table's rows that must fit a pattern before the table as a whole is said to fit it.
MAJORITY_SHARE = 0.9
# How close (relative) published errors must be to a constant predictor's to say the network behaves like it.
CONSTANT_TOLERANCE = 0.05


@dataclass(frozen=True)
class Finding:
    """One automated check of the published tables, stated in one sentence."""

    check: str
    table: int | None
    sentence: str
    short: str = ""


class Conclusion(BaseModel):
    """One conclusion of the paper, as a check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    claim: str
    experiment: str
    kind: Literal["effect", "best_setting", "flat"]
    factor: str | None = None
    direction: Literal["better", "worse"] = "better"
    setting: dict[str, int | str] = Field(default_factory=dict)
    within: list[str] = Field(default_factory=list)


class _ConclusionsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conclusions: list[Conclusion]


def load_published(path: Path = PUBLISHED_FILE) -> pd.DataFrame:
    """The published tables, one row per table row; errors name the file and the column."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise ReferenceDataError(f"Published results file {path} does not exist.") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ReferenceDataError(f"Published results file {path} lacks column(s) {missing}; "
                                 f"it has {list(frame.columns)}.")
    for column in ["table", *PUBLISHED_METRICS]:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            bad = frame[column][pd.to_numeric(frame[column], errors="coerce").isna() & frame[column].notna()]
            raise ReferenceDataError(f"Published results file {path}: column {column!r} must be numeric; "
                                     f"row {bad.index[0] + 2} holds {bad.iloc[0]!r}.")
    return frame


def load_conclusions(path: Path = CONCLUSIONS_FILE) -> list[Conclusion]:
    """The paper's conclusions as checks; errors name the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return _ConclusionsFile.model_validate(raw).conclusions
    except FileNotFoundError:
        raise ReferenceDataError(f"Conclusions file {path} does not exist.") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ReferenceDataError(f"Conclusions file {path} is invalid: {exc}") from None


def table_map(study: StudySpec) -> dict[int, tuple[str, str]]:
    """Published table number -> (experiment, split), from the study file."""
    return {number: (name, split) for name, spec in study.experiments.items() for split, number in spec.tables.items()}


def as_results(published: pd.DataFrame, study: StudySpec) -> pd.DataFrame:
    """Published rows in the results-frame shape (one seed, `mae_column` as `mae`), for the same statistics."""
    tables = table_map(study)
    rows = published[published["table"].isin(tables)].copy()
    rows["experiment"] = [tables[int(t)][0] for t in rows["table"]]
    rows["seed"] = 0
    return rows.rename(columns={"mae_column": "mae"})


def _matching(results: pd.DataFrame, row: pd.Series, experiment: str, split: str) -> pd.DataFrame:
    """Our rows of the published cell; axes the paper leaves empty match anything."""
    ours = results[(results["experiment"] == experiment) & (results["split"] == split)]
    for axis in AXES:
        if not pd.isna(row[axis]):
            value = row[axis] if axis == "activation" else int(row[axis])
            ours = ours[ours[axis] == value]
    return ours


def compare_cells(results: pd.DataFrame, published: pd.DataFrame, study: StudySpec) -> pd.DataFrame:
    """Per published cell and metric: published value, our mean ± std over seeds, difference, within spread."""
    tables, out = table_map(study), []
    for _, row in published.iterrows():
        if int(row["table"]) not in tables:
            continue
        experiment, split = tables[int(row["table"])]
        ours = _matching(results, row, experiment, split)
        single = len(ours.drop_duplicates(AXES)) == 1
        for column, metric in PUBLISHED_METRICS.items():
            if pd.isna(row[column]):
                continue
            values = ours[metric].dropna().to_numpy(dtype=float) if single and metric in ours else np.array([])
            mean = float(values.mean()) if len(values) else float("nan")
            std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            difference = mean - float(row[column])
            within = (abs(difference) <= SPREAD_WIDTH * std) if np.isfinite(std) else None
            out.append({"table": int(row["table"]), "experiment": experiment, "split": split,
                        **{a: row[a] for a in AXES}, "metric": metric, "published": float(row[column]),
                        "ours_mean": mean, "ours_std": std, "n_seeds": len(values), "difference": difference,
                        "within_spread": within})
    return pd.DataFrame(out)


def _table_label(tables: list[int]) -> str:
    """'Table 5' or 'Tables 7–8'."""
    return f"Table {tables[0]}" if len(tables) == 1 else f"Tables {tables[0]}–{tables[-1]}"


def mse_in_mae_findings(published: pd.DataFrame) -> list[Finding]:
    """Tables whose 'MAE' column equals RMSE² in (nearly) every row: it holds MSE."""
    findings = []
    for table, rows in published.groupby("table", sort=True):
        both = rows.dropna(subset=["mae_column", "rmse"])
        if len(both) < 3:
            continue
        square = both["rmse"] ** 2
        equal = (both["mae_column"] - square).abs() <= SQUARE_TOLERANCE * square.clip(lower=1.0)
        above = both["mae_column"] > both["rmse"] + 1e-4
        if equal.mean() >= MAJORITY_SHARE and not np.allclose(both["rmse"], 1.0, atol=0.05):
            worst = float(((both["mae_column"] - square).abs() / square).max())
            findings.append(Finding("mse-labelled-mae", int(table), (
                f"Table {int(table)}'s column labelled MAE equals RMSE² in {int(equal.sum())} of {len(both)} rows "
                f"(largest relative gap {worst:.1e}, printing precision) and exceeds RMSE in {int(above.sum())}, "
                "which no mean absolute error can: it is the mean squared error (MSE), not MAE."),
                short=f"Table {int(table)}'s \"MAE\" column is MSE (RMSE² in {int(equal.sum())}/{len(both)} rows)"))
    return findings


def _baseline_metric(baselines: pd.DataFrame, experiment: str, split: str, model: str, metric: str) -> float:
    rows = baselines[(baselines["experiment"] == experiment) & (baselines["split"] == split)
                     & (baselines["model"] == model)]
    return float(rows[metric].iloc[0]) if len(rows) and metric in rows else float("nan")


def constant_predictor_findings(published: pd.DataFrame, baselines: pd.DataFrame, study: StudySpec,
                                mse_tables: set[int]) -> list[Finding]:
    """Regression tables whose errors match predicting one constant (zero or the training mean) for every row."""
    if baselines is None or baselines.empty:
        return []
    findings, tables = [], table_map(study)
    for table, rows in published.dropna(subset=["rmse"]).groupby("table", sort=True):
        if int(table) not in tables:
            continue
        experiment, split = tables[int(table)]
        checked = {"rmse": "RMSE", "mape": "MAPE"} | ({} if int(table) in mse_tables else {"mae_column": "MAE"})
        for model, name in ((ZERO, "predicts 0 for every row"), (MEAN, "predicts the training mean for every row")):
            reference = {column: _baseline_metric(baselines, experiment, split, model, PUBLISHED_METRICS[column])
                         for column in checked}
            usable = {c: v for c, v in reference.items() if np.isfinite(v) and v > 0 and rows[c].notna().any()}
            if "rmse" not in usable:
                continue
            close = all(abs(rows[c].median() - v) / v <= CONSTANT_TOLERANCE for c, v in usable.items())
            if not close:
                continue
            printed = ", ".join(f"{checked[c]} {rows[c].min():.2f}–{rows[c].max():.2f}" for c in usable)
            theirs = ", ".join(f"{checked[c]} {v:.2f}" for c, v in usable.items())
            mean_rmse = _baseline_metric(baselines, experiment, split, MEAN, "rmse")
            findings.append(Finding("constant-predictor", int(table), (
                f"Table {int(table)} ({experiment}, {split}) prints {printed} over its {len(rows)} cells, which is "
                f"what a model that {name} scores on our {split} split ({theirs}); predicting the training mean "
                f"instead gives RMSE {mean_rmse:.2f}, so the published network learned nothing."),
                short=f"Table {int(table)} matches a model that {name}"))
    return findings


def missing_value_findings(published: pd.DataFrame, study: StudySpec) -> list[Finding]:
    """Table rows with empty metric cells where the rest of the table has values."""
    findings = []
    for table, rows in published.groupby("table", sort=True):
        columns = [c for c in PUBLISHED_METRICS if rows[c].notna().any()]
        gaps = rows[rows[columns].isna().any(axis=1)]
        for _, row in gaps.iterrows():
            empty = [c for c in columns if pd.isna(row[c])]
            cell = ", ".join(f"{a} {row[a] if a == 'activation' else int(row[a])}" for a in AXES
                             if not pd.isna(row[a]))
            findings.append(Finding("missing-cells", int(table),
                                    f"Table {int(table)} leaves {', '.join(empty)} empty in the row {cell}."))
    return findings


def coverage_findings(published: pd.DataFrame, study: StudySpec) -> list[Finding]:
    """Experiments whose published tables show only part of the study's grid."""
    findings = []
    for experiment, spec in study.experiments.items():
        numbers = sorted(spec.tables.values())
        rows = published[published["table"].isin(numbers)]
        if rows.empty or rows[AXES].isna().any().any():
            continue
        grid = pd.MultiIndex.from_product([getattr(spec.grid, a) for a in AXES], names=AXES).to_frame(index=False)
        shown = rows[rows["table"] == numbers[0]][AXES].astype({a: int for a in AXES if a != "activation"})
        missing = grid.merge(shown.drop_duplicates(), how="left", indicator=True)
        missing = missing[missing["_merge"] == "left_only"]
        if missing.empty:
            continue
        shared = [f"{a} {missing[a].iloc[0]}" for a in AXES if missing[a].nunique() == 1]
        findings.append(Finding("coverage", numbers[0], (
            f"{_table_label(numbers)} show {len(grid) - len(missing)} of the {len(grid)} cells of {experiment}'s "
            f"grid; the {len(missing)} missing cells" + (f" all have {', '.join(shared)}" if shared else "")
            + "; nnstudy runs them all.")))
    return findings


def findings(published: pd.DataFrame, baselines: pd.DataFrame | None, study: StudySpec) -> list[Finding]:
    """Every automated check of the published tables that found something."""
    mse = mse_in_mae_findings(published)
    mse_tables = {f.table for f in mse}
    return (mse + constant_predictor_findings(published, baselines, study, mse_tables)
            + missing_value_findings(published, study) + coverage_findings(published, study))


def _levels(rows: pd.DataFrame, factor: str) -> list:
    return sorted(rows[factor].dropna().unique(), key=stats._level_sort_key)


def evaluate_conclusion(conclusion: Conclusion, results: pd.DataFrame, metric: str, higher: bool) -> tuple[str, str]:
    """(verdict, evidence) of one conclusion on a results-shaped frame: 'holds', 'does not hold', 'no data'."""
    rows = results[(results["experiment"] == conclusion.experiment) & (results["split"] == "test")]
    rows = rows.dropna(subset=[metric])
    if rows.empty:
        return "no data", "no test results"
    if conclusion.kind == "effect":
        effects = [e for e in stats.factor_effects(rows, conclusion.experiment, metric, higher)
                   if e.factor == conclusion.factor]
        if not effects:
            return "no data", f"{conclusion.factor} has one level only"
        effect = effects[-1]  # highest level against the lowest
        evidence = (f"{conclusion.factor} {effect.level} vs {effect.baseline}: {metric} {effect.mean:+.4f} "
                    f"[{effect.low:+.4f}, {effect.high:+.4f}], {effect.n_pairs} pairs")
        wanted = "better" if conclusion.direction == "better" else "worse"
        if effect.verdict == wanted:
            return "holds", evidence
        return ("not shown (within noise)" if effect.verdict in ("within noise", "too few pairs")
                else "does not hold"), evidence
    if conclusion.kind == "best_setting":
        cells = rows.groupby(AXES, dropna=False)[metric].mean().reset_index()
        groups = cells.groupby(conclusion.within, dropna=False)
        hits = 0
        for _, group in groups:
            best = group.loc[group[metric].idxmax() if higher else group[metric].idxmin()]
            hits += all(best[k] == v for k, v in conclusion.setting.items())
        setting = ", ".join(f"{k} {v}" for k, v in conclusion.setting.items())
        evidence = f"best cell has {setting} in {hits} of {groups.ngroups} groups"
        return ("holds" if hits > groups.ngroups / 2 else "does not hold"), evidence
    effects = [e for e in stats.factor_effects(rows, conclusion.experiment, metric, higher) if e.estimable]
    outside = [e for e in effects if not e.within_noise]
    if not effects:
        return "no data", "no factor with several levels and paired cells"
    evidence = ("no factor effect outside noise" if not outside else
                "outside noise: " + "; ".join(f"{e.factor} {e.level} vs {e.baseline} {e.mean:+.4f}" for e in outside))
    return ("holds" if not outside else "does not hold"), evidence
