"""What a run shows in the Prefect UI: task-run names, tags and artifacts (progress, results, validation)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)

from schemas.study import TrialSpec

# Every training task run carries this tag: `prefect concurrency-limit create nnstudy-train 1` then caps how
# many trainings run at once across all flow runs of a server, whatever the task runner.
TRAIN_CONCURRENCY_TAG = "nnstudy-train"
RESULT_TABLE_SKIPS = frozenset({"loss_curve"})  # list-valued columns: the table artifact shows scalars only
# What a reader scans first: the cell, then its metrics; the other columns follow in their own order.
RESULT_TABLE_LEADS = ("experiment", "split", "hidden_layers", "units", "activation", "epochs", "batch_size", "seed",
                      "f1", "accuracy", "precision", "recall", "rmse", "mae", "mape", "r2", "train_seconds")
TABLE_DECIMALS = 4


def trial_run_name(parameters: dict[str, Any]) -> str:
    """Task-run name of one trial, e.g. `train mnist L2 U64 relu e10 b128 s0` (Prefect passes the parameters)."""
    spec: TrialSpec = parameters["spec"]
    return f"train {spec.label}"


def dataset_tags(*datasets: str) -> list[str]:
    """One tag per data set (`mnist`, `boston`, `adult`), sorted, without repeats."""
    return sorted(set(datasets))


def tagged(task, *datasets: str):
    """The task with the data sets' tags added to its own tags."""
    return task.with_options(tags=set(task.tags) | set(dataset_tags(*datasets)))


def progress_text(done: int, total: int, cached: int, failed: int) -> str:
    """Progress line shown under the progress artifact: `4/6 trials finished (1 cached, 0 failed)`."""
    return f"{done}/{total} trials finished ({cached} cached, {failed} failed)"


class TrialProgress:
    """A progress artifact on the flow run, moved forward as trials finish."""

    def __init__(self, total: int, key: str = "nnstudy-progress", artifact_id=None) -> None:
        """Create the artifact on the current run, or move an existing one (`artifact_id`) forward."""
        self.total = total
        if isinstance(artifact_id, str):
            from uuid import UUID

            artifact_id = UUID(artifact_id)
        self.artifact_id = artifact_id or create_progress_artifact(
            progress=0.0 if total else 100.0, key=key, description=progress_text(0, total, 0, 0))

    def update(self, done: int, cached: int, failed: int) -> None:
        """Set the artifact to `done` of `total` trials."""
        update_progress_artifact(artifact_id=self.artifact_id, progress=100.0 * done / max(self.total, 1),
                                 description=progress_text(done, self.total, cached, failed))


def _cell(value: Any) -> Any:
    """A JSON-friendly table cell: NaN becomes empty, numpy scalars plain Python, floats to 4 decimals."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, TABLE_DECIMALS)
    return value


def results_table(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results rows as table-artifact rows: cell and metrics first, scalar columns only, NaN shown empty.

    A view for the UI; results.parquet keeps the full precision.
    """
    table = []
    for row in records:
        keys = [k for k in RESULT_TABLE_LEADS if k in row] + [k for k in row if k not in RESULT_TABLE_LEADS]
        table.append({key: _cell(row[key]) for key in keys if key not in RESULT_TABLE_SKIPS})
    return table


def validation_markdown(dataset: str, reports: Iterable) -> str:
    """Markdown summary of a data set's validation: one table row per file."""
    reports = list(reports)
    verdict = "passed" if all(r.success for r in reports) else "FAILED"
    lines = [f"# Validation of {dataset}: {verdict}", "",
             "| File | Suite | Expectations | Failed | Outcome |", "|---|---|---:|---:|---|"]
    for report in reports:
        outcome = "passed" if report.success else "; ".join(report.failures).replace("|", "\\|")
        lines.append(f"| `{report.file}` | {report.suite} | {report.evaluated} | {report.failed} | {outcome} |")
    return "\n".join(lines) + "\n"


def publish_validation(dataset: str, reports: list) -> None:
    """Attach a data set's validation summary to the run."""
    create_markdown_artifact(markdown=validation_markdown(dataset, reports), key=f"nnstudy-validation-{dataset}",
                             description=f"Validation of {dataset}")


def publish_results(records: list[dict[str, Any]], profile: str) -> None:
    """Attach the results (one row per trial and split) to the run as a table."""
    create_table_artifact(table=results_table(records), key=f"nnstudy-results-{profile}",
                          description=f"nnstudy results, profile {profile}: one row per trial and split")
