"""The Markdown study report: tables laid out like the published ones, summaries and data provenance."""

from __future__ import annotations

import itertools
from pathlib import PurePath
from typing import Any

import pandas as pd

from schemas.study import Experiment, StudySpec
from tasks.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

METRICS: dict[str, list[str]] = {"classification": list(CLASSIFICATION_METRICS),
                                 "regression": list(REGRESSION_METRICS)}
# Main metric per task and whether higher is better: picks the best row, the summary's best and worst.
MAIN_METRIC: dict[str, tuple[str, bool]] = {"classification": ("f1", True), "regression": ("rmse", False)}

GRID_AXES = ["hidden_layers", "units", "activation", "epochs", "batch_size"]
CELL_KEYS = ["experiment", "split", *GRID_AXES]
AXIS_LABELS = {"hidden_layers": "Hidden layers", "units": "Units", "activation": "Activation",
               "epochs": "Epochs", "batch_size": "Batch size"}
METRIC_LABELS = {"precision": "Precision", "recall": "Recall", "f1": "F1-score", "accuracy": "Accuracy",
                 "mae": "MAE", "mape": "MAPE (%)", "rmse": "RMSE", "r2": "R²"}
ACTIVATION_LABELS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "tanh"}
DATASET_NAMES = {"mnist": "MNIST", "boston": "Boston Housing", "adult": "Adult"}
OFFICIAL_TRAIN_ROWS = {"mnist": (60_000, "image")}
SPLIT_NAMES = {"train": "training", "test": "test"}
BEST_MARK = "★ best"
MISSING = "n/a"


def _metric_label(metric: str) -> str:
    """Column header of a metric."""
    return METRIC_LABELS.get(metric, metric)


def _activation_label(activation: Any) -> str:
    """Activation name as the paper prints it."""
    return ACTIVATION_LABELS.get(str(activation), str(activation))


def _axis_text(axis: str, value: Any) -> str:
    """One grid-axis value as printed in a table."""
    return _activation_label(value) if axis == "activation" else str(int(value))


def _number(value: Any, decimals: int = 4) -> str:
    """A float to fixed decimals, or n/a when missing."""
    return MISSING if value is None or pd.isna(value) else f"{float(value):.{decimals}f}"


def _cell_value(row: pd.Series, metric: str) -> str:
    """A metric cell: plain mean with one seed, `mean ± std` with several."""
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if pd.isna(mean):
        return MISSING
    if row["n_seeds"] > 1 and not pd.isna(std):
        return f"{mean:.4f} ± {std:.4f}"
    return f"{mean:.4f}"


def _markdown_table(header: list[str], rows: list[list[str]], numeric: list[bool]) -> str:
    """A GitHub-flavoured Markdown table; numeric columns right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    """`1 seed`, `2 seeds`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def experiment_description(spec: Experiment) -> str:
    """Human name of an experiment, e.g. 'Boston Housing, regression of MEDV'."""
    return f"{DATASET_NAMES.get(spec.dataset, spec.dataset)}, {spec.task} of {spec.target}"


def aggregate_cells(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, split, grid cell): mean and std of each metric over seeds, and the seed count."""
    metrics = [m for task in METRICS.values() for m in task if m in results.columns]
    named = {}
    for metric in metrics:
        named[f"{metric}_mean"] = (metric, "mean")
        named[f"{metric}_std"] = (metric, "std")
    named["n_seeds"] = ("seed", "nunique")
    if "train_seconds" in results.columns:
        named["train_seconds_mean"] = ("train_seconds", "mean")
    return results.groupby(CELL_KEYS, sort=True).agg(**named).reset_index()


def _cells(results: pd.DataFrame, experiment: str, split: str | None = None) -> pd.DataFrame:
    """Aggregated cells of one experiment (and split), in the published row order."""
    rows = results[results["experiment"] == experiment]
    if split is not None:
        rows = rows[rows["split"] == split]
    return aggregate_cells(rows).sort_values(GRID_AXES, kind="stable").reset_index(drop=True)


def _best_position(cells: pd.DataFrame, task: str) -> int | None:
    """Row position of the best cell by the task's main metric (first on ties), None if all are missing."""
    metric, higher = MAIN_METRIC[task]
    values = cells[f"{metric}_mean"]
    if values.isna().all():
        return None
    return int(cells.index.get_loc(values.idxmax() if higher else values.idxmin()))


def _grouped_axis_columns(cells: pd.DataFrame, axes: list[str]) -> list[list[str]]:
    """Axis values per row, blank where the row repeats its group's values (the paper's merged cells)."""
    out, previous = [], None
    for _, row in cells.iterrows():
        key = tuple(row[a] for a in axes)
        texts = [_axis_text(a, row[a]) for a in axes]
        # An axis value is blanked only while all axes to its left are unchanged too.
        same = 0
        while previous is not None and same < len(axes) and key[same] == previous[same]:
            same += 1
        out.append(["" for _ in texts[:same]] + texts[same:])
        previous = key
    return out


def _single_architecture(cells: pd.DataFrame, spec: Experiment) -> bool:
    """True when the spec fixes one architecture and the data has only it: the paper's Table 9 layout."""
    fixed = len(spec.grid.hidden_layers) == len(spec.grid.units) == len(spec.grid.activation) == 1
    return fixed and len(cells.drop_duplicates(["hidden_layers", "units", "activation"])) == 1


def _architecture_text(layers: Any, units: Any, activation: Any) -> str:
    """E.g. '2 hidden layers of 64 ReLU units'."""
    return f"{_plural(int(layers), 'hidden layer')} of {int(units)} {_activation_label(activation)} units"


def _seed_range(cells: pd.DataFrame) -> str:
    """'2 seeds', or '1–3 seeds' when cells differ in their seed counts."""
    low, high = int(cells["n_seeds"].min()), int(cells["n_seeds"].max())
    return _plural(high, "seed") if low == high else f"{low}–{high} seeds"


def _metric_definitions(spec: Experiment, cells: pd.DataFrame) -> str:
    """The caption's parenthesis: what each metric means, what ★ marks, what ± means."""
    metric, higher = MAIN_METRIC[spec.task]
    if spec.task == "classification":
        scope = (f"of the positive class {spec.positive_label}" if spec.positive_label
                 else "macro-averaged over the classes")
        parts = [f"precision, recall and F1-score {scope}", "accuracy = share of correct predictions"]
    else:
        parts = ["MAE = mean absolute error, not the MSE that the published Table 5 labels MAE",
                 "MAPE = mean absolute percentage error, in %", "RMSE = root mean squared error",
                 "R² = coefficient of determination"]
    parts.append(f"{BEST_MARK} = {'highest' if higher else 'lowest'} {_metric_label(metric)}")
    if not cells.empty and cells["n_seeds"].max() > 1:
        parts.append(f"mean ± sample std over {_seed_range(cells)}")
    return "; ".join(parts)


def _caption(spec: Experiment, split: str, table_number: int, cells: pd.DataFrame, architecture: str) -> str:
    """'Table N — description — split (definitions)'."""
    description = experiment_description(spec) + (f" ({architecture})" if architecture else "")
    return (f"Table {table_number} — {description} — {SPLIT_NAMES.get(split, split)} split "
            f"({_metric_definitions(spec, cells)})")


def _metric_cells(row: pd.Series, task: str, best: bool) -> list[str]:
    """A row's metric cells and marker cell; the best row's main metric in bold."""
    main_metric = MAIN_METRIC[task][0]
    values = [f"**{_cell_value(row, m)}**" if best and m == main_metric else _cell_value(row, m)
              for m in METRICS[task]]
    return values + [BEST_MARK if best else ""]


def experiment_table(results: pd.DataFrame, experiment: str, spec: Experiment, split: str,
                     table_number: int) -> str:
    """A caption line and a Markdown table of one experiment and split, laid out like the published table."""
    cells = _cells(results, experiment, split)
    compact = not cells.empty and _single_architecture(cells, spec)
    architecture = (_architecture_text(*cells.loc[0, ["hidden_layers", "units", "activation"]])
                    if compact else "")
    caption = _caption(spec, split, table_number, cells, architecture)
    if cells.empty:
        return f"{caption}\n\n_No results for this split._"
    metrics = METRICS[spec.task]
    best = _best_position(cells, spec.task)
    if compact:
        header = ["(Epoch, Batch_size)"]
        axis_rows = [[f"({int(e)}, {int(b)})"] for e, b in zip(cells["epochs"], cells["batch_size"])]
    else:
        header = [AXIS_LABELS[a] for a in GRID_AXES]
        axis_rows = _grouped_axis_columns(cells, GRID_AXES)
    rows = [axis_texts + _metric_cells(row, spec.task, position == best)
            for position, (axis_texts, (_, row)) in enumerate(zip(axis_rows, cells.iterrows()))]
    header = header + [_metric_label(m) for m in metrics] + ["Best"]
    numeric = [False] if compact else [a != "activation" for a in GRID_AXES]
    table = _markdown_table(header, rows, numeric + [True] * len(metrics) + [False])
    return f"{caption}\n\n{table}"


def _configuration_text(row: pd.Series) -> str:
    """E.g. '2 hidden layers of 64 ReLU units, 10 epochs, batch size 128'."""
    return (f"{_architecture_text(row['hidden_layers'], row['units'], row['activation'])}, "
            f"{_plural(int(row['epochs']), 'epoch')}, batch size {int(row['batch_size'])}")


def _train_value(train: pd.DataFrame, row: pd.Series, metric: str) -> str:
    """' (0.9909 on train)' for the same cell, or nothing when it has no training value."""
    match = train
    for axis in GRID_AXES:
        match = match[match[axis] == row[axis]]
    if match.empty or pd.isna(match[f"{metric}_mean"].iloc[0]):
        return ""
    return f" ({_number(match[f'{metric}_mean'].iloc[0])} on train)"


def _mean_train_seconds(rows: pd.DataFrame) -> tuple[float, int]:
    """Mean training seconds per trial and the trial count (each trial appears once per split)."""
    key = "trial_key" if "trial_key" in rows.columns else None
    trials = rows.drop_duplicates(key) if key else rows.drop_duplicates([*GRID_AXES, "seed"])
    return float(trials["train_seconds"].mean()), len(trials)


def experiment_summary(results: pd.DataFrame, experiment: str, spec: Experiment) -> str:
    """A few sentences: best and worst cell on the test split, the spread over the grid, the training time."""
    rows = results[results["experiment"] == experiment]
    if rows.empty:
        return f"No results for {experiment}."
    metric, higher = MAIN_METRIC[spec.task]
    label = _metric_label(metric)
    split = "test" if (rows["split"] == "test").any() else "train"
    cells = _cells(results, experiment, split).dropna(subset=[f"{metric}_mean"]).reset_index(drop=True)
    train = _cells(results, experiment, "train")
    sentences = []
    if cells.empty:
        sentences.append(f"No {split} {label} values were recorded.")
    else:
        ordered = cells.sort_values(f"{metric}_mean", ascending=not higher, kind="stable")
        best, worst = ordered.iloc[0], ordered.iloc[-1]
        sentences.append(f"Best on the {split} split by {label}: {_configuration_text(best)}, "
                         f"{label} {_number(best[f'{metric}_mean'])} on {split}"
                         f"{_train_value(train, best, metric)}.")
        if len(cells) > 1:
            sentences.append(f"Worst: {_configuration_text(worst)}, {label} {_number(worst[f'{metric}_mean'])} "
                             f"on {split}{_train_value(train, worst, metric)}.")
        low, high = cells[f"{metric}_mean"].min(), cells[f"{metric}_mean"].max()
        sentences.append(f"Over the {_plural(len(cells), 'grid cell')} the {split} {label} ranges "
                         f"from {_number(low)} to {_number(high)} (spread {_number(high - low)}).")
        if cells["n_seeds"].max() > 1:
            sentences.append(f"Values are means over {_seed_range(cells)}.")
    if "train_seconds" in rows.columns:
        seconds, n_trials = _mean_train_seconds(rows)
        sentences.append(f"Training took {seconds:.1f} s per trial on average ({_plural(n_trials, 'trial')}).")
    return " ".join(sentences)


def _file_rows(files: list[dict]) -> list[list[str]]:
    """Rows of the data-file table."""
    rows = []
    for f in files:
        rows.append([str(f.get("role", "")), PurePath(str(f.get("path", ""))).name,
                     f"{int(f['rows']):,}" if f.get("rows") is not None else MISSING,
                     f"`{f['md5']}`" if f.get("md5") else MISSING,
                     f"`{str(f['sha256'])[:16]}`" if f.get("sha256") else MISSING,
                     "✓" if f.get("verified") is True else "NOT VERIFIED"])
    return rows


def _subsample_warning(dataset: dict) -> str:
    """The loud line for a data set whose training data is a subsample."""
    name = DATASET_NAMES.get(dataset["dataset"], dataset["dataset"])
    official, noun = OFFICIAL_TRAIN_ROWS.get(dataset["dataset"], (None, "row"))
    train_rows = [f["rows"] for f in dataset.get("files", [])
                  if str(f.get("role", "")).startswith("train") and f.get("rows") is not None]
    size = f"the {max(train_rows):,}-{noun} subsample" if train_rows else "a subsample"
    full = f"the official {official:,}" if official else "the full official training set"
    return f"> ⚠ **{name} training data is {size}, not {full}.**"


def _dataset_block(dataset: dict) -> str:
    """One data set: description, loud warnings, file table and validation outcomes."""
    name = DATASET_NAMES.get(dataset["dataset"], dataset["dataset"])
    parts = [f"### {name} (`{dataset['dataset']}`)"]
    if dataset.get("description"):
        parts.append(str(dataset["description"]))
    parts.append(f"Source: `{dataset.get('source', MISSING)}`, catalog entry `{dataset.get('entry', MISSING)}`.")
    if dataset.get("subsample"):
        parts.append(_subsample_warning(dataset))
    files = dataset.get("files", [])
    for f in files:
        if f.get("verified") is not True:
            parts.append(f"> ⚠ **NOT VERIFIED: {PurePath(str(f.get('path', ''))).name} ({f.get('role', '?')}) "
                         "was not verified against the catalog checksum.**")
    if files:
        header = ["Role", "File", "Rows", "MD5", "SHA-256 (first 16)", "Verified"]
        parts.append(_markdown_table(header, _file_rows(files), [False, False, True, False, False, False]))
    outcomes = [f"- {'✓ passed' if v.get('success') else '✗ **FAILED**'}: "
                f"{v.get('summary', v.get('file', ''))}" for v in dataset.get("validation", [])]
    parts.append("Validation:\n\n" + "\n".join(outcomes) if outcomes else "Validation: _not run._")
    return "\n\n".join(parts)


def _missing_text(missing: dict[str, dict[str, int]]) -> str:
    """E.g. 'workclass 1,836 / 963; occupation 1,843 / 966', or 'none'."""
    items = [f"{column} {counts.get('train', 0):,} / {counts.get('test', 0):,}"
             for column, counts in missing.items() if counts.get("train", 0) or counts.get("test", 0)]
    return "; ".join(items) if items else "none"


def _preprocessing_table(preprocessing: dict[str, dict]) -> str:
    """One row per experiment: sizes, features, missing values, cache and target scaling."""
    header = ["Experiment", "Train rows", "Test rows", "Features", "Missing values (train / test)",
              "Cache", "Target scaling"]
    rows = [[name, f"{int(p['n_train']):,}", f"{int(p['n_test']):,}", str(int(p["n_features"])),
             _missing_text(p.get("missing") or {}), str(p.get("cache", MISSING)),
             p.get("target_scaling") or "none"] for name, p in preprocessing.items()]
    return _markdown_table(header, rows, [False, True, True, True, False, False, False])


def data_section(datasets: list[dict], preprocessing: dict[str, dict]) -> str:
    """The report's data section: files, checksums, validation and preprocessing."""
    parts = ["## Data"]
    parts += [_dataset_block(d) for d in datasets] or ["_No data sets recorded._"]
    parts.append("### Preprocessing")
    parts.append(_preprocessing_table(preprocessing) if preprocessing else "_No preprocessing recorded._")
    return "\n\n".join(parts)


def _run_lines(run_info: dict) -> str:
    """The run line and the package versions line, from what the flow recorded."""
    facts = []
    if "started" in run_info:
        facts.append(f"started {run_info['started']}")
    if run_info.get("wall_seconds") is not None:
        facts.append(f"wall time {float(run_info['wall_seconds']):.1f} s")
    if "n_trials" in run_info:
        cached = run_info.get("trials_cached")
        facts.append(_plural(int(run_info["n_trials"]), "trial")
                     + (f" ({int(cached)} from cache)" if cached is not None else ""))
    if run_info.get("executor"):
        facts.append(run_info["executor"][0].lower() + run_info["executor"][1:])
    if run_info.get("seeds") is not None:
        facts.append("seeds " + ", ".join(str(s) for s in run_info["seeds"]))
    if run_info.get("nnstudy_version"):
        facts.append(f"nnstudy {run_info['nnstudy_version']}")
    lines = ["Run: " + "; ".join(facts) + "." if facts else "Run: _no run information._"]
    packages = run_info.get("packages") or {}
    if packages:
        lines.append("Packages: " + ", ".join(f"{k} {packages[k]}" for k in sorted(packages)) + ".")
    return "\n\n".join(lines)


def _coverage_line(results: pd.DataFrame, experiment: str, study: StudySpec, profile: str) -> str:
    """How many of the profile's grid cells have results (failed trials leave gaps)."""
    if profile not in study.profiles:
        return ""
    grid = study.grid_for(experiment, profile)
    expected = set(itertools.product(*(getattr(grid, axis) for axis in GRID_AXES)))
    rows = results[results["experiment"] == experiment].drop_duplicates(GRID_AXES)
    found = {(int(r.hidden_layers), int(r.units), str(r.activation), int(r.epochs), int(r.batch_size))
             for r in rows.itertuples()}
    line = f"Results cover {len(found & expected)} of the {len(expected)} grid cells of profile {profile}"
    extra = len(found - expected)
    return line + (f"; {_plural(extra, 'further cell')} with results lie outside that grid." if extra else ".")


def _experiment_section(results: pd.DataFrame, experiment: str, spec: Experiment, study: StudySpec,
                        profile: str) -> str:
    """Heading, note, summary and tables (train then test) of one experiment."""
    parts = [f"## {experiment} — {experiment_description(spec)}"]
    if spec.note:
        parts.append(f"> Note: {spec.note}")
    summary = experiment_summary(results, experiment, spec)
    coverage = _coverage_line(results, experiment, study, profile)
    parts.append(f"{summary} {coverage}".strip())
    for split in ("train", "test"):
        if split in spec.tables:
            parts.append(experiment_table(results, experiment, spec, split, spec.tables[split]))
    return "\n\n".join(parts)


def build_report(results: pd.DataFrame, *, study: StudySpec, profile: str, experiments: list[str],
                 datasets: list[dict], preprocessing: dict[str, dict], run_info: dict) -> str:
    """The whole Markdown report: run facts, per-experiment summaries and tables, then the data section."""
    parts = [f"# nnstudy report — profile {profile}"]
    if profile in study.profiles and study.profiles[profile].description:
        parts.append(f"_{study.profiles[profile].description}_")
    parts.append(_run_lines(run_info))
    present = set(results["experiment"]) if "experiment" in results.columns else set()
    for experiment in experiments:
        if experiment not in study.experiments:
            parts.append(f"_{experiment}: not an experiment of the study file; skipped._")
        elif experiment not in present:
            parts.append(f"_{experiment}: no results in this run; skipped._")
        else:
            parts.append(_experiment_section(results, experiment, study.experiments[experiment],
                                             study, profile))
    parts.append(data_section(datasets, preprocessing))
    return "\n\n".join(parts) + "\n"
