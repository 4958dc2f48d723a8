"""The tidy results table and atomic writes of run outputs."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd

from schemas.study import TrialSpec
from tasks.metrics import ALL_METRICS

GRID_COLUMNS = ["hidden_layers", "units", "activation", "epochs", "batch_size", "seed"]
RESULT_COLUMNS = (["experiment", "dataset", "task", "target", "split"] + GRID_COLUMNS + list(ALL_METRICS)
                  + ["train_seconds", "n_rows", "engine", "worker", "loss_curve", "data_digest",
                     "trial_key"])
# Held while a run writes its outputs, so two runs on one output folder never interleave their files.
OUT_LOCK_NAME = ".nnstudy.lock"


def trial_rows(spec: TrialSpec, outcome: dict, *, target: str, data_digest: str, engine: str,
               worker: str | None = None) -> list[dict]:
    """One results row per split of a finished trial.

    `loss_curve` holds the loss after each epoch: the training loss on the `train` row, the loss on the
    held-out test split on the `test` row (regression losses on the standardised target). `worker`
    says where it trained.
    """
    grid = spec.model_dump(include=set(GRID_COLUMNS))
    curves = outcome.get("loss_curve") or {}
    return [{"experiment": spec.experiment, "dataset": spec.dataset, "task": spec.task, "target": target,
             "split": split, **grid, **outcome["metrics"][split], "train_seconds": outcome["train_seconds"],
             "n_rows": outcome["n_rows"][split], "engine": engine, "worker": worker, "loss_curve": list(curves.get(split, [])),
             "data_digest": data_digest, "trial_key": spec.digest()[:16]}
            for split in ("train", "test")]


def results_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as a frame with the documented columns, in a stable order."""
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return frame.sort_values(["experiment", "split"] + GRID_COLUMNS, kind="stable").reset_index(drop=True)


def _staging_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(path)
    try:
        with open(staging, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Atomic write of a UTF-8 text file."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Atomic write of a Parquet file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(path)
    try:
        frame.to_parquet(staging, index=False)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path
