"""Raw frames to model-ready arrays: splits, missing values, one-hot encoding, scaling, Parquet cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from nnstudy.digests import sha256_file
from nnstudy.errors import DataIntegrityError
from schemas.study import Experiment

logger = logging.getLogger(__name__)

# Bump when the preprocessing logic changes, so old caches are not reused.
PREPROCESS_VERSION = "1"
MISSING_MARKER = "?"
MISSING_CATEGORY = "Unknown"
TARGET_COLUMN = "__target__"


class PreprocessSettings(BaseModel):
    """Everything that changes the preprocessed output; hashed into the cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str
    dataset: str
    task: str
    target: str
    positive_label: str | None = None
    max_train_rows: int | None = None
    max_test_rows: int | None = None
    subsample_seed: int = 0
    # Keras' boston_housing.load_data(): shuffle with RandomState(113), first 80 % train.
    boston_split_seed: int = 113
    boston_test_fraction: float = 0.2
    version: str = PREPROCESS_VERSION

    @classmethod
    def for_experiment(cls, name: str, experiment: Experiment, *, max_train_rows: int | None,
                       max_test_rows: int | None) -> PreprocessSettings:
        """Settings of one experiment under a profile's row limits."""
        return cls(experiment=name, dataset=experiment.dataset, task=experiment.task,
                   target=experiment.target, positive_label=experiment.positive_label,
                   max_train_rows=max_train_rows, max_test_rows=max_test_rows)


class PreparedRef(BaseModel):
    """A small, picklable reference to preprocessed Parquet files: what trials receive."""

    model_config = ConfigDict(frozen=True)

    experiment: str
    path: str
    digest: str
    n_train: int
    n_test: int
    n_features: int
    n_classes: int | None
    target_mean: float | None
    target_std: float | None
    missing: dict[str, dict[str, int]]
    cache_hit: bool

    def summary(self) -> dict:
        """What the report shows about this preprocessing."""
        return {"n_train": self.n_train, "n_test": self.n_test, "n_features": self.n_features,
                "missing": self.missing, "cache": "hit" if self.cache_hit else "miss",
                "target_scaling": ("standardised on the training split (metrics in original units)"
                                   if self.target_std is not None else None)}


@dataclass(frozen=True)
class Prepared:
    """Model-ready arrays of one experiment, with what the report needs to know about them."""

    train: pd.DataFrame
    test: pd.DataFrame
    missing: dict[str, dict[str, int]] = field(default_factory=dict)
    n_classes: int | None = None
    target_mean: float | None = None
    target_std: float | None = None


def keras_boston_split(n_rows: int, seed: int = 113, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of Keras' boston_housing.load_data() split (404 train / 102 test for 506 rows)."""
    indices = np.arange(n_rows)
    np.random.RandomState(seed).shuffle(indices)
    n_train = int(n_rows * (1 - test_fraction))
    return indices[:n_train], indices[n_train:]


def limit_rows(n_rows: int, max_rows: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of at most max_rows rows, in their original order."""
    if max_rows is None or max_rows >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.RandomState(seed).choice(n_rows, size=max_rows, replace=False))


def count_missing(frame: pd.DataFrame, marker: str = MISSING_MARKER) -> dict[str, int]:
    """Per column, how many values are null or equal to the missing-value marker."""
    counts = {col: int(frame[col].isna().sum() + (frame[col].astype("string") == marker).sum())
              for col in frame.columns}
    return {col: n for col, n in counts.items() if n}


def encode_target(values: pd.Series, task: str, positive_label: str | None) -> np.ndarray:
    """Regression targets as float; classification targets as 0/1 (positive label) or int classes."""
    if task == "regression":
        return values.to_numpy(dtype="float64")
    if positive_label is not None:
        return (values.astype("string") == positive_label).to_numpy(dtype="int64")
    return values.to_numpy(dtype="int64")


def encode_features(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Impute, one-hot encode categoricals and standard-scale numerics, fitted on `train` only."""
    numeric = [c for c in train.columns if pd.api.types.is_numeric_dtype(train[c])]
    categorical = [c for c in train.columns if c not in numeric]
    medians = train[numeric].median()

    def _clean(frame: pd.DataFrame) -> pd.DataFrame:
        cats = frame[categorical].astype("string").replace(MISSING_MARKER, pd.NA).fillna(MISSING_CATEGORY)
        return pd.concat([frame[numeric].fillna(medians).astype("float64"), cats.astype(object)], axis=1)

    train_clean, test_clean = _clean(train), _clean(test)
    scaler = StandardScaler().fit(train_clean[numeric])
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
    names = list(numeric)
    if categorical:
        encoder.fit(train_clean[categorical])
        names += [f"{col}={cat}" for col, cats in zip(categorical, encoder.categories_) for cat in cats]

    def _transform(frame: pd.DataFrame) -> pd.DataFrame:
        parts = [scaler.transform(frame[numeric]).astype(np.float32)]
        if categorical:
            parts.append(encoder.transform(frame[categorical]))
        return pd.DataFrame(np.hstack(parts), columns=names, index=range(len(frame)))

    return _transform(train_clean), _transform(test_clean)


def _with_target(features: pd.DataFrame, target: np.ndarray) -> pd.DataFrame:
    return features.assign(**{TARGET_COLUMN: target})


def prepare_tabular(train: pd.DataFrame, test: pd.DataFrame, settings: PreprocessSettings) -> Prepared:
    """Adult/Boston frames (already split) to encoded train/test frames with the target column."""
    train = train.iloc[limit_rows(len(train), settings.max_train_rows, settings.subsample_seed)]
    test = test.iloc[limit_rows(len(test), settings.max_test_rows, settings.subsample_seed)]
    y_train = encode_target(train[settings.target], settings.task, settings.positive_label)
    y_test = encode_target(test[settings.target], settings.task, settings.positive_label)
    x_train, x_test = encode_features(train.drop(columns=[settings.target]),
                                      test.drop(columns=[settings.target]))
    missing_train, missing_test = count_missing(train), count_missing(test)
    missing = {col: {"train": missing_train.get(col, 0), "test": missing_test.get(col, 0)}
               for col in sorted(set(missing_train) | set(missing_test), key=list(train.columns).index)}
    regression = settings.task == "regression"
    return Prepared(train=_with_target(x_train, y_train), test=_with_target(x_test, y_test), missing=missing,
                    n_classes=None if regression else 2,
                    target_mean=float(y_train.mean()) if regression else None,
                    target_std=float(y_train.std()) if regression else None)


def prepare_mnist(arrays: dict[str, np.ndarray], settings: PreprocessSettings) -> Prepared:
    """Flatten the 28x28 images and scale pixels to [0, 1]."""
    def _frame(images: np.ndarray, labels: np.ndarray, max_rows: int | None) -> pd.DataFrame:
        keep = limit_rows(len(images), max_rows, settings.subsample_seed)
        pixels = images[keep].reshape(len(keep), -1).astype(np.float32) / 255.0
        columns = [f"px{i:03d}" for i in range(pixels.shape[1])]
        return _with_target(pd.DataFrame(pixels, columns=columns), labels[keep].astype("int64"))

    return Prepared(train=_frame(arrays["x_train"], arrays["y_train"], settings.max_train_rows),
                    test=_frame(arrays["x_test"], arrays["y_test"], settings.max_test_rows), n_classes=10)


def prepare_experiment(frames: dict[str, pd.DataFrame], arrays: dict[str, np.ndarray],
                       settings: PreprocessSettings) -> Prepared:
    """Dispatch to the data set's preprocessing, using its official (or Keras') split."""
    if settings.dataset == "mnist":
        return prepare_mnist(arrays, settings)
    if settings.dataset == "boston":
        data = frames["data"]
        train_idx, test_idx = keras_boston_split(len(data), settings.boston_split_seed,
                                                 settings.boston_test_fraction)
        return prepare_tabular(data.iloc[train_idx], data.iloc[test_idx], settings)
    return prepare_tabular(frames["train"], frames["test"], settings)


def cache_key(settings: PreprocessSettings, input_digests: dict[str, str]) -> str:
    """sha256 of the input files' digests and the preprocessing settings."""
    payload = json.dumps({"inputs": input_digests, "settings": settings.model_dump()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_dir_for(cache_root: Path, settings: PreprocessSettings, key: str) -> Path:
    """Where one preprocessed experiment lives: cache_root/<experiment>/<key prefix>."""
    return cache_root / settings.experiment / key[:16]


def read_manifest(directory: Path) -> dict | None:
    """The manifest of a complete cache entry, or None if the entry is absent or incomplete."""
    try:
        return json.loads((directory / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_prepared(prepared: Prepared, directory: Path, key: str) -> dict:
    """Write train/test Parquet and a manifest into a temp folder, then rename it into place atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".staging-{directory.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for split in ("train", "test"):
            getattr(prepared, split).to_parquet(staging / f"{split}.parquet", index=False)
        manifest = {"key": key, "n_train": len(prepared.train), "n_test": len(prepared.test),
                    "n_features": prepared.train.shape[1] - 1, "n_classes": prepared.n_classes,
                    "target_mean": prepared.target_mean, "target_std": prepared.target_std,
                    "missing": prepared.missing,
                    "files": {s: sha256_file(staging / f"{s}.parquet") for s in ("train", "test")}}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        try:
            os.rename(staging, directory)
        except OSError:
            # Another run finished the same entry first; its content is identical, keep it.
            if read_manifest(directory) is None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def ref_from_manifest(experiment: str, directory: Path, manifest: dict, *, cache_hit: bool) -> PreparedRef:
    """The reference trials receive, built from a cache entry's manifest."""
    return PreparedRef(experiment=experiment, path=str(directory), digest=manifest["key"],
                       n_train=manifest["n_train"], n_test=manifest["n_test"],
                       n_features=manifest["n_features"], n_classes=manifest["n_classes"],
                       target_mean=manifest["target_mean"], target_std=manifest["target_std"],
                       missing=manifest["missing"], cache_hit=cache_hit)


@lru_cache(maxsize=4)
def load_arrays(path: str, digest: str) -> dict[str, np.ndarray]:
    """x/y arrays of a cache entry, checked against its manifest; memoised per process."""
    directory = Path(path)
    manifest = read_manifest(directory)
    if manifest is None or manifest["key"] != digest:
        raise DataIntegrityError(f"Preprocessed cache {directory} is missing or belongs to another input "
                                 f"(expected key {digest[:16]}); delete that folder and run again.")
    arrays = {}
    for split in ("train", "test"):
        file = directory / f"{split}.parquet"
        actual = sha256_file(file)
        if actual != manifest["files"][split]:
            raise DataIntegrityError(f"Preprocessed cache file {file} was modified: sha256 {actual} but the "
                                     f"manifest says {manifest['files'][split]}; delete {directory} and run again.")
        arrays.update(split_arrays(pd.read_parquet(file), split))
    return arrays


def split_arrays(frame: pd.DataFrame, split: str) -> dict[str, np.ndarray]:
    """`x_<split>` (float32 features) and `y_<split>` (target) of a preprocessed table."""
    return {f"x_{split}": frame.drop(columns=[TARGET_COLUMN]).to_numpy(dtype=np.float32),
            f"y_{split}": frame[TARGET_COLUMN].to_numpy()}


def prepare_local(experiment: str, data_dir: Path, *, max_train_rows: int | None = None,
                  max_test_rows: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """An experiment's arrays straight from a local data folder, without caches or Prefect (benchmarks,
    tests): returns the arrays and the keyword arguments both engines take (n_classes, target scaling)."""
    from schemas.study import load_study
    from tasks import catalog, ingest

    spec = load_study().experiments[experiment]
    resolved = catalog.resolve_dataset(spec.dataset, data_dir=data_dir, raw_dir=data_dir,
                                       accept_subsample=True, allow_download=False)
    raw = ingest.load_raw(resolved)
    settings = PreprocessSettings.for_experiment(experiment, spec, max_train_rows=max_train_rows,
                                                 max_test_rows=max_test_rows)
    prepared = prepare_experiment(raw.frames, raw.arrays, settings)
    arrays = {**split_arrays(prepared.train, "train"), **split_arrays(prepared.test, "test")}
    return arrays, dict(n_classes=prepared.n_classes, target_mean=prepared.target_mean,
                        target_std=prepared.target_std)
