"""The Markdown study report: tables laid out like the published ones, summaries and data provenance."""

from __future__ import annotations

import itertools
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from schemas.study import Experiment, StudySpec
from tasks import baselines as baselines_module
from tasks import replication, stats
from tasks.figures import FigureSet
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


def best_cells(results: pd.DataFrame, study: StudySpec, experiments: list[str]) -> dict[str, dict]:
    """Per experiment: the best test cell by the main metric (mean over seeds) and its median-scoring seed."""
    out = {}
    for experiment in experiments:
        if experiment not in study.experiments:
            continue
        task = study.experiments[experiment].task
        metric, higher = MAIN_METRIC[task]
        cells = _cells(results, experiment, "test")
        position = None if cells.empty else _best_position(cells, task)
        if position is None:
            continue
        best = cells.iloc[position]
        rows = results[(results["experiment"] == experiment) & (results["split"] == "test")]
        for axis in GRID_AXES:
            rows = rows[rows[axis] == best[axis]]
        ranked = rows.dropna(subset=[metric]).sort_values([metric, "seed"], kind="stable")
        engine = str(rows["engine"].iloc[0]) if "engine" in rows and len(rows) else "keras"
        out[experiment] = {**{a: best[a] for a in GRID_AXES}, "metric": metric, "higher": higher, "engine": engine,
                           "mean": float(best[f"{metric}_mean"]), "std": float(best[f"{metric}_std"]),
                           "n_seeds": int(best["n_seeds"]), "seed": int(ranked["seed"].iloc[(len(ranked) - 1) // 2]),
                           "seed_value": float(ranked[metric].iloc[(len(ranked) - 1) // 2]),
                           "configuration": _configuration_text(best)}
    return out


def _mean_std(mean: float, std: float, decimals: int = 4) -> str:
    """'0.9316 ± 0.0021', or the mean alone when the std is missing."""
    return _number(mean, decimals) + ("" if std is None or pd.isna(std) else f" ± {_number(std, decimals)}")


def _effects(results: pd.DataFrame, experiment: str, task: str) -> list[stats.Effect]:
    metric, higher = MAIN_METRIC[task]
    return stats.factor_effects(results, experiment, metric, higher)


def _effect_text(effect: stats.Effect) -> str:
    """'+0.0123 [+0.0050, +0.0196]'."""
    if not effect.estimable:
        return f"{effect.mean:+.4f} (no interval)"
    return f"{effect.mean:+.4f} [{effect.low:+.4f}, {effect.high:+.4f}]"


def _factor_name(effect: stats.Effect) -> str:
    name = AXIS_LABELS[effect.factor].lower()
    if effect.factor == "activation":
        return f"{_activation_label(effect.level)} instead of {_activation_label(effect.baseline)}"
    return f"{name} {effect.level} instead of {effect.baseline}"


def effects_section(results: pd.DataFrame, study: StudySpec, experiments: list[str]) -> str:
    """Per experiment: each factor's paired effect on the test main metric, with a 95% interval."""
    parts = ["## Hyperparameter effects",
             "Each effect is the mean difference of the test main metric between cells that differ only in "
             "that factor (same other factors, same seed), with a t-based 95% confidence interval over those "
             "pairs. **Within noise** means the interval contains 0: the data cannot tell the levels apart."]
    for experiment in experiments:
        if experiment not in study.experiments:
            continue
        task = study.experiments[experiment].task
        metric, higher = MAIN_METRIC[task]
        effects = _effects(results, experiment, task)
        if not effects:
            continue
        spread = stats.seed_spread(results, experiment, metric)
        rows = [[_factor_name(e), _effect_text(e), str(e.n_pairs),
                 f"**{e.verdict}**" if e.verdict in ("better", "worse") else e.verdict] for e in effects]
        noise = (f" Seed-to-seed standard deviation of a cell's test {_metric_label(metric)}: {spread:.4f}."
                 if np.isfinite(spread) else " One seed per cell: no seed-to-seed spread to compare with.")
        parts.append(f"### {experiment} — test {_metric_label(metric)} "
                     f"({'higher' if higher else 'lower'} is better)")
        parts.append(noise.strip())
        parts.append(_markdown_table(["Change", f"Effect on {_metric_label(metric)} (95% CI)", "Pairs", "Verdict"],
                                     rows, [False, True, True, False]))
    return "\n\n".join(parts)


def _matters_text(effects: list[stats.Effect]) -> str:
    """The factors whose interval excludes 0, largest first, or a plain 'none beyond noise'."""
    clear = sorted([e for e in effects if not e.within_noise], key=lambda e: -abs(e.mean))
    if not clear:
        return "none beyond noise"
    return "; ".join(f"{_factor_name(e)} {e.verdict} ({e.mean:+.3g})" for e in clear[:3]) + (
        f"; +{len(clear) - 3} more" if len(clear) > 3 else "")


def _best_baseline(baselines: pd.DataFrame | None, experiment: str, task: str) -> str:
    if baselines is None or baselines.empty:
        return MISSING
    metric, higher = MAIN_METRIC[task]
    rows = baselines[(baselines["experiment"] == experiment) & (baselines["split"] == "test")].dropna(subset=[metric])
    if rows.empty:
        return MISSING
    best = rows.loc[rows[metric].idxmax() if higher else rows[metric].idxmin()]
    return f"{best['model']}: {_number(best[metric])}"


VERDICT_MARKS = {"holds": "✓ holds", "does not hold": "✗ does not hold", "not shown (within noise)": "~ within noise",
                 "no data": "– no data"}


def conclusion_verdicts(results: pd.DataFrame, published: pd.DataFrame | None, study: StudySpec,
                        conclusions: list[replication.Conclusion]) -> list[dict]:
    """Each conclusion's verdict on the paper's own table and on our results."""
    theirs = replication.as_results(published, study) if published is not None else None
    out = []
    for conclusion in conclusions:
        if conclusion.experiment not in study.experiments:
            continue
        metric, higher = MAIN_METRIC[study.experiments[conclusion.experiment].task]
        ours = replication.evaluate_conclusion(conclusion, results, metric, higher)
        paper = (replication.evaluate_conclusion(conclusion, theirs, metric, higher) if theirs is not None
                 else ("no data", "no published table"))
        out.append({"conclusion": conclusion, "paper": paper, "ours": ours})
    return out


def _summary_section(results: pd.DataFrame, study: StudySpec, experiments: list[str], best: dict[str, dict],
                     baselines: pd.DataFrame | None, verdicts: list[dict],
                     comparison: pd.DataFrame | None, findings: list[replication.Finding]) -> str:
    """One screen: best configuration per task, the factors that matter, the replication verdict."""
    rows = []
    for experiment in experiments:
        if experiment not in best:
            continue
        cell, task = best[experiment], study.experiments[experiment].task
        rows.append([experiment, cell["configuration"],
                     f"{_metric_label(cell['metric'])} {_mean_std(cell['mean'], cell['std'])}",
                     _best_baseline(baselines, experiment, task), _matters_text(_effects(results, experiment, task))])
    parts = ["## Summary"]
    if rows:
        parts.append(_markdown_table(["Task", "Best configuration (test)", "Test metric (mean ± std over seeds)",
                                      "Best baseline (test)", "Hyperparameters that matter (95% CI excludes 0)"],
                                     rows, [False, False, True, False, False]))
    if verdicts:
        lines = [f"- **{v['conclusion'].claim}** — paper's own table: {VERDICT_MARKS[v['paper'][0]]}; "
                 f"ours: {VERDICT_MARKS[v['ours'][0]]} ({v['ours'][1]})." for v in verdicts]
        parts.append("The paper's conclusions, tested on its own tables and on ours:\n\n" + "\n".join(lines))
    if comparison is not None and not comparison.empty:
        parts.append("Replication: " + _replication_headline(comparison, study) + (
            " Checks of the published tables: " + "; ".join(f.short for f in findings if f.short) + "."
            if any(f.short for f in findings) else ""))
    return "\n\n".join(parts)


def _main_rows(comparison: pd.DataFrame, study: StudySpec) -> pd.DataFrame:
    """Comparison rows of each table's main metric."""
    main = comparison["experiment"].map(lambda e: MAIN_METRIC[study.experiments[e].task][0])
    return comparison[comparison["metric"] == main]


def _replication_headline(comparison: pd.DataFrame, study: StudySpec) -> str:
    main = _main_rows(comparison, study)
    test = main[main["split"] == "test"]
    matched = test.dropna(subset=["ours_mean"])
    if matched.empty:
        return (f"none of the {len(test)} published test cells is a cell of this run, so no published number "
                "can be compared; the checks of the published tables below still apply.")
    judged = matched.dropna(subset=["within_spread"])
    head = f"{len(matched)} of the {len(test)} published test cells are cells of this run"
    if judged.empty:
        return head + "; with one seed per cell there is no seed-to-seed spread to judge them by."
    inside = int(judged["within_spread"].astype(bool).sum())
    per_table = "; ".join(f"Table {t}: {int(g['within_spread'].astype(bool).sum())}/{len(g)}"
                          for t, g in judged.groupby("table"))
    return (f"{head}; {inside} of {len(judged)} lie within {replication.SPREAD_WIDTH:g} seed standard "
            f"deviations of our mean on the main metric ({per_table}).")


def _setup_differences(datasets: list[dict], preprocessing: dict[str, dict], study: StudySpec,
                       experiments: list[str], seeds: list[int] | None) -> list[str]:
    """Where our setup differs from the paper's, and what that does to the comparison."""
    lines = []
    for dataset in datasets:
        if dataset.get("subsample"):
            lines.append(f"{_subsample_warning(dataset).removeprefix('> ⚠ ')} The paper trained on the full set, so "
                         "our MNIST scores are lower for lack of data: MNIST differences measure the data size, "
                         "not the replication.")
    for name in experiments:
        summary = preprocessing.get(name)
        spec = study.experiments.get(name)
        if summary and spec and spec.dataset == "adult" and int(summary["n_train"]) < 32_561:
            lines.append(f"{name} trained on {int(summary['n_train']):,} of Adult's 32,561 training rows "
                         f"(profile row limit) and scored on {int(summary['n_test']):,} test rows.")
        if summary and spec and spec.dataset == "boston" and int(summary["n_train"]) + int(summary["n_test"]) < 506:
            lines.append(f"boston used {int(summary['n_train'])} + {int(summary['n_test'])} of the 506 rows.")
        if spec and spec.note:
            lines.append(f"{name}: {spec.note}")
    lines.append("Boston uses Keras' 404/102 split; the paper does not say which split it used.")
    lines.append("Regression targets are standardised for training and predictions mapped back; the paper does "
                 "not say, and its Adult regression never learned (see the checks below).")
    lines.append(f"The paper reports one run per cell; nnstudy runs {_plural(len(seeds or [0]), 'seed')} per cell, "
                 "so a published number is one draw from a spread that the paper could not show.")
    return lines


def _cell_axes_text(row: pd.Series) -> str:
    return " ".join(_axis_text(a, row[a]) if not pd.isna(row[a]) else "?" for a in GRID_AXES)


def replication_section(comparison: pd.DataFrame, findings: list[replication.Finding], study: StudySpec,
                        datasets: list[dict], preprocessing: dict[str, dict], experiments: list[str],
                        seeds: list[int] | None) -> str:
    """Published vs ours, table by table; the checks of the published tables; setup differences."""
    parts = ["## Replication",
             "Published values come from `schemas/published/published_results.csv` (see the README beside it). "
             f"A published value is *within our spread* when it lies within {replication.SPREAD_WIDTH:g} sample "
             "standard deviations (over seeds) of our mean for the same cell."]
    parts.append("### Where our setup differs\n\n" + "\n".join(
        f"- {line}" for line in _setup_differences(datasets, preprocessing, study, experiments, seeds)))
    parts.append("### Checks of the published tables\n\n" + ("\n".join(f"- {f.sentence}" for f in findings)
                                                             if findings else "_No inconsistencies found._"))
    if comparison.empty:
        parts.append("_No published cell matches a cell of this run._")
        return "\n\n".join(parts)
    summary_rows = []
    for (table, metric), group in comparison.groupby(["table", "metric"], sort=True):
        judged = group.dropna(subset=["within_spread"])
        summary_rows.append([str(table), f"{group['experiment'].iloc[0]} {group['split'].iloc[0]}",
                             "MAE (as labelled)" if metric == "mae" else _metric_label(metric), str(len(group)), _number(group["published"].mean()),
                             _number(group["ours_mean"].mean()), _number(group["difference"].abs().median()),
                             f"{int(judged['within_spread'].astype(bool).sum())}/{len(judged)}" if len(judged)
                             else MISSING])
    parts.append("### Published against ours, per table and metric\n\n" + _markdown_table(
        ["Table", "Experiment", "Metric", "Cells", "Published mean", "Ours mean", "Median abs. difference",
         "Within spread"], summary_rows, [True, False, False, True, True, True, True, True]))
    for table, group in _main_rows(comparison, study).groupby("table", sort=True):
        metric, unmatched = group["metric"].iloc[0], int(group["ours_mean"].isna().sum())
        group = group.dropna(subset=["ours_mean"])
        if group.empty:
            parts.append(f"Table {table}: none of its {unmatched} cells is a cell of this run.")
            continue
        rows = [[_cell_axes_text(r), _number(r["published"]), _mean_std(r["ours_mean"], r["ours_std"]),
                 _number(r["difference"], 4) if not pd.isna(r["difference"]) else MISSING,
                 MISSING if r["within_spread"] is None or pd.isna(r["within_spread"])
                 else ("yes" if r["within_spread"] else "**no**")] for _, r in group.iterrows()]
        table_text = _markdown_table(["Cell (layers units activation epochs batch)", "Published",
                                      "Ours (mean ± std)", "Ours − published", "Within spread"],
                                     rows, [False, True, True, True, False])
        extra = f" ({unmatched} published cells are not cells of this run)" if unmatched else ""
        parts.append(f"<details><summary>Table {table}: every published cell of this run, "
                     f"{_metric_label(metric)}{extra}</summary>\n\n{table_text}\n\n</details>")
    return "\n\n".join(parts)


def baselines_section(baselines: pd.DataFrame | None, best: dict[str, dict], study: StudySpec,
                      experiments: list[str]) -> str:
    """Per experiment: reference models on the same splits and metrics, with the best network for context."""
    parts = ["## Baselines",
             "Fitted on the same preprocessed training split and scored with the same metrics on the test split. "
             "The median is the constant that minimises MAE; the mean minimises RMSE. HistGradientBoosting runs "
             f"{baselines_module.BOOSTING_MAX_ITER} boosting rounds ({baselines_module.WIDE_BOOSTING_MAX_ITER} on "
             f"data with more than {baselines_module.WIDE_FEATURES} features, such as MNIST), LogisticRegression "
             f"up to {baselines_module.LOGISTIC_MAX_ITER} iterations, Ridge alpha 1; seeds fixed at "
             f"{baselines_module.SEED}."]
    if baselines is None or baselines.empty:
        parts.append("_No baselines were computed in this run._")
        return "\n\n".join(parts)
    for experiment in experiments:
        rows = baselines[(baselines["experiment"] == experiment) & (baselines["split"] == "test")]
        if rows.empty or experiment not in study.experiments:
            continue
        task = study.experiments[experiment].task
        metrics = METRICS[task]
        table_rows = [[str(r["model"]), *[_number(r[m]) for m in metrics], f"{float(r['fit_seconds']):.1f}"]
                      for _, r in rows.iterrows()]
        if experiment in best:
            cell = best[experiment]
            table_rows.append([f"best network ({cell['configuration']})",
                               *[_mean_std(cell["mean"], cell["std"]) if m == cell["metric"] else "" for m in metrics],
                               ""])
        parts.append(f"### {experiment}\n\n" + _markdown_table(
            ["Model", *[_metric_label(m) for m in metrics], "Fit (s)"], table_rows,
            [False, *[True] * len(metrics), True]))
        parts += _median_beats(rows, experiment)
    return "\n\n".join(parts)


def _median_beats(rows: pd.DataFrame, experiment: str) -> list[str]:
    """A sentence when predicting the training median beats a fitted model in MAE."""
    if "mae" not in rows or baselines_module.MEDIAN not in set(rows["model"]):
        return []
    median = float(rows[rows["model"] == baselines_module.MEDIAN]["mae"].iloc[0])
    fitted = rows[~rows["model"].astype(str).str.startswith("constant") & (rows["mae"] > median)]
    if fitted.empty:
        return []
    names = ", ".join(f"{r['model']} ({_number(r['mae'])})" for _, r in fitted.iterrows())
    return [f"On {experiment}, predicting the training median for every row (MAE {_number(median)}) beats "
            f"{names} in MAE: those models minimise squared error, and MAE rewards the median."]


def figures_section(figure_set: FigureSet | None, experiments: list[str]) -> str:
    """Figure links grouped by section, and why an expected figure is absent."""
    parts = ["## Figures"]
    if figure_set is None or (not figure_set.figures and not figure_set.absent):
        parts.append("_No figures were rendered._")
        return "\n\n".join(parts)
    order = ["Data", *experiments]
    sections = sorted({f.section for f in figure_set.figures}, key=lambda s: (order.index(s) if s in order else 99, s))
    for section in sections:
        items = [f"![{f.caption}](figures/{f.name})\n\n_{f.caption}_" for f in figure_set.figures
                 if f.section == section]
        parts.append(f"### {'Exploratory (the published study’s figures)' if section == 'Data' else section}"
                     "\n\n" + "\n\n".join(items))
    if figure_set.absent:
        parts.append("Not drawn:\n\n" + "\n".join(f"- {reason}" for reason in figure_set.absent))
    return "\n\n".join(parts)


def environment_section(run_info: dict) -> str:
    """Run facts, package versions and the machine."""
    lines = [_run_lines(run_info)]
    machine = [run_info[k] for k in ("python", "machine") if run_info.get(k)]
    if machine:
        lines.append(f"Python {run_info.get('python', MISSING)} on {run_info.get('machine', MISSING)}.")
    return "## Environment\n\n" + "\n\n".join(lines)


def build_report(results: pd.DataFrame, *, study: StudySpec, profile: str, experiments: list[str],
                 datasets: list[dict], preprocessing: dict[str, dict], run_info: dict,
                 baselines: pd.DataFrame | None = None, published: pd.DataFrame | None = None,
                 conclusions: list[replication.Conclusion] | None = None,
                 figures: FigureSet | None = None) -> str:
    """The whole Markdown report: summary, tables, effects, figures, replication, baselines, data, environment."""
    parts = [f"# nnstudy report — profile {profile}"]
    if profile in study.profiles and study.profiles[profile].description:
        parts.append(f"_{study.profiles[profile].description}_")
    present = set(results["experiment"]) if "experiment" in results.columns else set()
    known = [e for e in experiments if e in study.experiments and e in present]
    best = best_cells(results, study, known)
    comparison = (replication.compare_cells(results, published, study) if published is not None
                  else pd.DataFrame())
    findings = replication.findings(published, baselines, study) if published is not None else []
    verdicts = conclusion_verdicts(results, published, study, conclusions or [])
    parts.append(_summary_section(results, study, known, best, baselines, verdicts, comparison, findings))
    for experiment in experiments:
        if experiment not in study.experiments:
            parts.append(f"_{experiment}: not an experiment of the study file; skipped._")
        elif experiment not in present:
            parts.append(f"_{experiment}: no results in this run; skipped._")
        else:
            parts.append(_experiment_section(results, experiment, study.experiments[experiment],
                                             study, profile))
    if known:
        parts.append(effects_section(results, study, known))
    parts.append(figures_section(figures, known))
    if published is not None:
        parts.append(replication_section(comparison, findings, study, datasets, preprocessing, known,
                                         run_info.get("seeds")))
    parts.append(baselines_section(baselines, best, study, known))
    parts.append(data_section(datasets, preprocessing))
    parts.append(environment_section(run_info))
    return "\n\n".join(parts) + "\n"
