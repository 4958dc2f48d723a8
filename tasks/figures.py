"""The report's PNG figures (matplotlib, Agg): the paper's exploratory plots and plots of the results."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tasks.stats import GRID_AXES, Effect  # noqa: E402

FIGURES_DIR = "figures"
DPI = 110
METRIC_NAMES = {"f1": "F1-score", "rmse": "RMSE", "mae": "MAE", "accuracy": "accuracy"}


@dataclass(frozen=True)
class FigureRef:
    """A written figure: its file name under figures/, the report section it belongs to and its caption."""

    name: str
    section: str
    caption: str


@dataclass
class FigureSet:
    """Figures written, and why any expected figure is absent."""

    figures: list[FigureRef] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)


def _save(fig, directory: Path, name: str) -> str:
    fig.savefig(directory / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def adult_figures(frames: dict[str, pd.DataFrame], directory: Path) -> list[FigureRef]:
    """Figures 1–4 of the paper, on Adult's training file."""
    train = frames["train"]
    out = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(train["age"], bins=range(15, 95, 2), color="#4c72b0")
    ax.set(xlabel="age (years)", ylabel="people", title="Adult: age distribution")
    out.append(FigureRef(_save(fig, directory, "adult_age_distribution.png"), "Data",
                         f"Adult training file ({len(train):,} people): age distribution."))
    order = (train.groupby("education")["education-num"].first().sort_values().index.tolist())
    counts = train.groupby(["education", "income"]).size().unstack(fill_value=0).reindex(order)
    fig, ax = plt.subplots(figsize=(7, 4))
    counts.plot.barh(stacked=True, ax=ax, color=["#4c72b0", "#dd8452"])
    ax.set(xlabel="people", ylabel="education (ordered by years)", title="Adult: education and income")
    out.append(FigureRef(_save(fig, directory, "adult_education_income.png"), "Data",
                         "Adult: people per education level, split by income class."))
    fig, ax = plt.subplots(figsize=(7, 4))
    train["education"].value_counts().reindex(order).plot.barh(ax=ax, color="#55a868")
    ax.set(xlabel="people", ylabel="education", title="Adult: education distribution")
    out.append(FigureRef(_save(fig, directory, "adult_education_distribution.png"), "Data",
                         "Adult: people per education level."))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, group in train.groupby("income"):
        ax.hist(group["age"], bins=range(15, 95, 2), alpha=0.6, density=True, label=f"income {label}")
    ax.set(xlabel="age (years)", ylabel="density", title="Adult: age by income level")
    ax.legend()
    out.append(FigureRef(_save(fig, directory, "adult_age_income.png"), "Data",
                         "Adult: age distribution of each income class (each normalised to area 1)."))
    return out


def boston_figures(frames: dict[str, pd.DataFrame], directory: Path) -> list[FigureRef]:
    """Figures 5–6 of the paper: price distribution and rooms against price."""
    data = frames["data"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(data["MEDV"], bins=30, color="#4c72b0")
    ax.set(xlabel="median home value (MEDV, $1000s)", ylabel="tracts", title="Boston: price distribution")
    first = FigureRef(_save(fig, directory, "boston_price_distribution.png"), "Data",
                      f"Boston Housing ({len(data)} tracts): distribution of MEDV; note the cap at 50.")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(data["RM"], data["MEDV"], s=8, alpha=0.6)
    ax.set(xlabel="average rooms per dwelling (RM)", ylabel="MEDV ($1000s)", title="Boston: rooms and price")
    second = FigureRef(_save(fig, directory, "boston_rooms_price.png"), "Data",
                       "Boston Housing: rooms per dwelling against median value.")
    return [first, second]


def mnist_samples(arrays: dict[str, np.ndarray], directory: Path, rows: int = 4, columns: int = 8) -> FigureRef:
    """Figure 7 of the paper: the first training images with their labels."""
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 1.0))
    for index, ax in enumerate(axes.ravel()):
        ax.imshow(arrays["x_train"][index].reshape(28, 28), cmap="gray_r")
        ax.set_title(str(int(arrays["y_train"][index])), fontsize=8)
        ax.axis("off")
    return FigureRef(_save(fig, directory, "mnist_samples.png"), "Data",
                     f"MNIST: the first {rows * columns} training images with their labels.")


def seed_means(rows: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Per key combination: mean and std over seeds of the metric averaged over the other axes."""
    per_seed = rows.groupby([*keys, "seed"])[metric].mean().reset_index()
    return per_seed.groupby(keys)[metric].agg(["mean", "std"]).reset_index()


def metric_vs_epochs(results: pd.DataFrame, experiment: str, metric: str, directory: Path) -> FigureRef | None:
    """Test metric against epochs, one panel per width, one line per batch size, error bars over seeds."""
    rows = results[(results["experiment"] == experiment) & (results["split"] == "test")].dropna(subset=[metric])
    if rows.empty:
        return None
    widths = sorted(rows["units"].unique())
    fig, axes = plt.subplots(1, len(widths), figsize=(4.2 * len(widths), 3.4), sharey=True, squeeze=False)
    summary = seed_means(rows, ["units", "batch_size", "epochs"], metric)
    for ax, width in zip(axes[0], widths):
        for batch, line in summary[summary["units"] == width].groupby("batch_size"):
            ax.errorbar(line["epochs"], line["mean"], yerr=line["std"].fillna(0), marker="o", capsize=3,
                        label=f"batch {batch}")
        ax.set(title=f"{width} units", xlabel="epochs", xticks=sorted(rows["epochs"].unique()))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test {METRIC_NAMES.get(metric, metric)}")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"{experiment}: test {METRIC_NAMES.get(metric, metric)} by epochs, batch size and width", y=1.04)
    averaged = [a for a in GRID_AXES if a not in ("units", "batch_size", "epochs") and rows[a].nunique() > 1]
    return FigureRef(_save(fig, directory, f"{experiment}_metric_vs_epochs.png"), experiment, (
        f"{experiment}: test {METRIC_NAMES.get(metric, metric)} against epochs per batch size and width"
        + (f", averaged over {', '.join(averaged)}" if averaged else "")
        + f"; error bars: standard deviation over {rows['seed'].nunique()} seed(s)."))


def effects_figure(effects: list[Effect], experiment: str, directory: Path) -> FigureRef | None:
    """Each factor's paired effect on the test metric with its 95% interval."""
    shown = [e for e in effects if e.estimable]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(shown) + 1.2))
    positions = np.arange(len(shown))[::-1]
    for y, effect in zip(positions, shown):
        color = "#999999" if effect.within_noise else ("#2a9d55" if effect.improves else "#c44e52")
        ax.errorbar(effect.mean, y, xerr=[[effect.mean - effect.low], [effect.high - effect.mean]], fmt="o",
                    color=color, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(positions, [f"{e.factor} {e.level} vs {e.baseline}" for e in shown])
    metric = METRIC_NAMES.get(shown[0].metric, shown[0].metric)
    ax.set(xlabel=f"change in test {metric} (95% CI)", title=f"{experiment}: hyperparameter effects")
    return FigureRef(_save(fig, directory, f"{experiment}_effects.png"), experiment, (
        f"{experiment}: mean paired change of the test {metric} per factor with its 95% interval; "
        "green = better, red = worse, grey = within noise."))


def learning_curves(results: pd.DataFrame, experiment: str, best: dict, directory: Path) -> FigureRef | None:
    """Loss per epoch of the best configuration: training loss and loss on the held-out test split."""
    rows = results[results["experiment"] == experiment]
    for axis in GRID_AXES:
        rows = rows[rows[axis] == best[axis]]
    rows = rows.dropna(subset=["loss_curve"])
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for split, name in (("train", "train"), ("test", "test (held out)")):
        curves = [np.asarray(c, dtype=float) for c in rows[rows["split"] == split]["loss_curve"]]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        stack = np.vstack([c[:length] for c in curves])
        epochs = np.arange(1, length + 1)
        ax.plot(epochs, stack.mean(axis=0), label=name)
        if len(curves) > 1:
            ax.fill_between(epochs, stack.min(axis=0), stack.max(axis=0), alpha=0.2)
    ax.set(xlabel="epoch", ylabel="loss", title=f"{experiment}: learning curves of the best configuration")
    ax.legend()
    return FigureRef(_save(fig, directory, f"{experiment}_learning_curves.png"), experiment, (
        f"{experiment}: loss per epoch of the best configuration, mean over {rows['seed'].nunique()} seed(s) "
        "(band: min–max over seeds); the test curve is the held-out test split, not a validation split."))


def confusion_figure(matrix: list[list[int]], title: str, directory: Path, name: str) -> FigureRef:
    """A confusion matrix with counts; rows true, columns predicted."""
    counts = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(counts, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                color="white" if value > counts.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title, xticks=range(len(counts)), yticks=range(len(counts)))
    return FigureRef(_save(fig, directory, name), name.split("_")[0], title + " (test split; counts).")


def swap_into_place(staging: Path, target: Path) -> None:
    """Replace `target` by the fully written `staging` folder with two renames."""
    old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        if old.exists() and not target.exists():
            os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_figures(out_dir: Path, render) -> FigureSet:
    """Call `render(folder) -> FigureSet` on a temporary folder, then move it to out_dir/figures in one step."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{FIGURES_DIR}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        figure_set = render(staging)
        swap_into_place(staging, out_dir / FIGURES_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        plt.close("all")
    return figure_set


KEY_FILE = ".key.json"


def write_figures_once(out_dir: Path, key: str, render) -> FigureSet:
    """`write_figures`, unless out_dir/figures was drawn from the same inputs (`key`): then reuse it."""
    import json

    folder = out_dir / FIGURES_DIR
    try:
        stored = json.loads((folder / KEY_FILE).read_text())
        if stored["key"] == key and all((folder / f["name"]).is_file() for f in stored["figures"]):
            return FigureSet(figures=[FigureRef(**f) for f in stored["figures"]], absent=stored["absent"])
    except (OSError, ValueError, KeyError, TypeError):
        pass

    def render_and_record(staging: Path) -> FigureSet:
        figure_set = render(staging)
        (staging / KEY_FILE).write_text(json.dumps({
            "key": key, "figures": [f.__dict__ for f in figure_set.figures], "absent": figure_set.absent}))
        return figure_set

    return write_figures(out_dir, render_and_record)


def render_all(directory: Path, *, results: pd.DataFrame, raw: dict, best: dict[str, dict],
               confusion: dict[str, dict], experiments: list[str]) -> FigureSet:
    """Every figure of the report into `directory`; reasons for the ones that cannot be drawn."""
    from tasks.stats import factor_effects

    figure_set = FigureSet()
    if "adult" in raw:
        figure_set.figures += adult_figures(raw["adult"].frames, directory)
    if "boston" in raw:
        figure_set.figures += boston_figures(raw["boston"].frames, directory)
    if "mnist" in raw:
        figure_set.figures.append(mnist_samples(raw["mnist"].arrays, directory))
    has_curves = "loss_curve" in results.columns and results["loss_curve"].notna().any()
    for experiment in experiments:
        if experiment not in best:
            continue
        cell = best[experiment]
        drawn = [metric_vs_epochs(results, experiment, cell["metric"], directory),
                 effects_figure(factor_effects(results, experiment, cell["metric"], cell["higher"]), experiment,
                                directory)]
        curves = learning_curves(results, experiment, cell, directory) if has_curves else None
        if curves is None:
            figure_set.absent.append(f"{experiment} learning curves: the results carry no per-epoch losses "
                                     "(`loss_curve`) for its best configuration.")
        figure_set.figures += [f for f in [*drawn, curves] if f is not None]
        if experiment in confusion:
            found = confusion[experiment]
            refit = found["metrics"].get(cell["metric"], float("nan"))
            title = (f"{experiment}: best configuration, seed {cell['seed']} refitted "
                     f"(test {METRIC_NAMES.get(cell['metric'], cell['metric'])} {refit:.4f}; "
                     f"the trial recorded {cell['seed_value']:.4f})")
            figure_set.figures.append(confusion_figure(found["matrix"], title, directory,
                                                       f"{experiment}_confusion.png"))
    return figure_set
