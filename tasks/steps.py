"""Thin Prefect tasks around the pure functions; the flow calls only these."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from nnstudy.cluster import current_worker
from nnstudy.errors import DataNotFoundError, DownloadError
from nnstudy.locks import hold
from nnstudy.uptodate import package_versions, write_stamp
from nnstudy.runtime import configure_tf_threads, quiet_libraries
from nnstudy.settings import RunSettings
from schemas.study import StudySpec, TrialSpec
from tasks import (baselines, catalog, figures, fused, ingest, inspect, preprocess, replication, report, results,
                   train, validate)
from tasks.prefect_ui import TRAIN_CONCURRENCY_TAG, publish_results, publish_validation, tagged, trial_run_name

quiet_libraries()

REPORTED_PACKAGES = ("nnstudy", "prefect", "tensorflow-cpu", "tensorflow", "keras", "pandas", "numpy",
                     "scikit-learn", "pyarrow", "great-expectations")
# A trial that runs longer than this is stuck (the full profile's largest MNIST cell takes minutes): it fails,
# the other trials go on, and a rerun tries it again.
TRAIN_TIMEOUT_SECONDS = 3600


def download_failed(task, task_run, state) -> bool:
    """Retry resolving only when a download failed (network), not when a file is absent or altered."""
    try:
        state.result()
    except DataNotFoundError as exc:
        return isinstance(exc.__cause__, DownloadError)
    except Exception:
        return False
    return False


# Each download already retries 3 times (1, 2, 4 s apart); the task retries the whole data set twice more,
# 30 and 60 s later, for outages longer than that.
@task(name="resolve-data", task_run_name="resolve {dataset}", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=30), retry_condition_fn=download_failed)
def resolve_data(dataset: str, settings: RunSettings, accept_subsample: bool) -> catalog.ResolvedData:
    """Find a data set locally or download it, verifying checksums."""
    resolved = catalog.resolve_dataset(dataset, data_dir=settings.data_dir, raw_dir=settings.raw_dir,
                                       allow_unverified=settings.allow_unverified,
                                       accept_subsample=accept_subsample,
                                       allow_download=settings.allow_download)
    get_run_logger().info("%s: using %s from %s (%s)", dataset, resolved.entry, resolved.directory, resolved.source)
    return resolved


@lru_cache(maxsize=3)
def _parse_files(dataset_json: str) -> ingest.RawData:
    return ingest.load_raw(catalog.ResolvedData.model_validate_json(dataset_json))


def load_raw_once(resolved: catalog.ResolvedData) -> ingest.RawData:
    """Parse a resolved data set once per process: validation and each experiment's preprocessing share it.

    Keyed by the resolved files (paths and digests), so a changed file is parsed anew; callers must not
    mutate what they get.
    """
    return _parse_files(resolved.model_dump_json())


def expected_rows(resolved: catalog.ResolvedData) -> dict[str, int | None]:
    """Row count the catalog gives for each file role of a resolved data set."""
    entry = catalog.load_catalog()[resolved.entry]
    return next(f for f in entry.formats if f.name == resolved.format).expected_rows()


def _source_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def validation_cache_key(resolved: catalog.ResolvedData) -> str:
    """Validation is a pure function of the files' bytes, the suite and the parsing and checking code."""
    here = Path(__file__).resolve().parent
    suite = here.parent / "schemas" / "expectations" / f"{resolved.dataset}.json"
    code = _source_digest(here / "ingest.py", here / "validate.py", *([suite] if suite.exists() else []))
    files = json.dumps({role: [str(f.path), f.sha256] for role, f in sorted(resolved.files.items())}, sort_keys=True)
    return hashlib.sha256(f"{resolved.entry}|{files}|{code}".encode()).hexdigest()


@task(name="validate-data", task_run_name="validate {resolved.entry}", cache_policy=NO_CACHE)
def validate_data(resolved: catalog.ResolvedData, cache_dir: Path | None = None) -> list[validate.ValidationReport]:
    """Parse the raw files and run the data set's expectation suite on each.

    A passing validation is remembered in `cache_dir` under a key of the files' checksums and the suite and
    code versions, so unchanged files are not parsed and checked again; a failing one is never stored.
    """
    cached = cache_dir / f"{resolved.entry}-{validation_cache_key(resolved)[:32]}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        reports = [validate.ValidationReport.model_validate(item) for item in json.loads(cached.read_text())]
        get_run_logger().info("%s: validated before with the same files, suite and code; reusing %s",
                              resolved.entry, cached.name)
    else:
        reports = validate.validate_raw(resolved, load_raw_once(resolved), expected_rows(resolved))
        if cached is not None and all(item.success for item in reports):
            results.write_text_atomic(cached, json.dumps([item.model_dump(mode="json") for item in reports]))
    for item in reports:
        get_run_logger().info(item.summary())
    publish_validation(resolved.dataset, reports)
    return reports


@task(name="require-valid-data", cache_policy=NO_CACHE)
def require_valid(reports: list[validate.ValidationReport]) -> None:
    """Stop the run before any training when a data set failed validation."""
    validate.raise_if_failed(reports)


@task(name="preprocess", task_run_name="preprocess {settings.experiment}", cache_policy=NO_CACHE)
def preprocess_experiment(resolved: catalog.ResolvedData, settings: preprocess.PreprocessSettings,
                          cache_root: Path) -> preprocess.PreparedRef:
    """Reuse the Parquet cache entry for these inputs and settings, or build it."""
    logger = get_run_logger()
    key = preprocess.cache_key(settings, {role: f.sha256 for role, f in sorted(resolved.files.items())})
    directory = preprocess.cache_dir_for(cache_root, settings, key)
    manifest = preprocess.read_manifest(directory)
    if manifest is not None:
        logger.info("%s: preprocessed cache hit, reusing %s", settings.experiment, directory)
        return preprocess.ref_from_manifest(settings.experiment, directory, manifest, cache_hit=True)
    logger.info("%s: preprocessed cache miss, building %s", settings.experiment, directory)
    raw = load_raw_once(resolved)
    prepared = preprocess.prepare_experiment(raw.frames, raw.arrays, settings)
    manifest = preprocess.write_prepared(prepared, directory, key)
    return preprocess.ref_from_manifest(settings.experiment, directory, manifest, cache_hit=False)


ENGINES = ("fused", "keras")


def trial_cache_key(context, parameters: dict) -> str:
    """A trial is finished work once its data digest, grid point, seed and trainer version match."""
    spec, ref = parameters["spec"], parameters["ref"]
    return (f"trial-{spec.experiment}-{ref.digest[:16]}-{spec.digest()[:16]}-trainer{train.TRAINER_VERSION}")


@task(name="train", task_run_name=trial_run_name, cache_key_fn=trial_cache_key, persist_result=True,
      tags=[TRAIN_CONCURRENCY_TAG], timeout_seconds=TRAIN_TIMEOUT_SECONDS)
def train_trial(spec: TrialSpec, ref: preprocess.PreparedRef, target: str, tf_threads: int | None = None) -> list[dict]:
    """Keras engine: train and score one grid cell with one seed; returns its results rows."""
    configure_tf_threads(tf_threads)
    arrays = preprocess.load_arrays(ref.path, ref.digest)
    outcome = train.fit_and_evaluate(arrays, spec, n_classes=ref.n_classes,
                                     target_mean=ref.target_mean, target_std=ref.target_std)
    return results.trial_rows(spec, outcome, target=target, data_digest=ref.digest, engine="keras",
                              worker=current_worker())


def group_cache_key(context, parameters: dict) -> str:
    """A fusion group is finished work once its data digest, its trials and the engine version match."""
    trials, ref = parameters["trials"], parameters["ref"]
    members = hashlib.sha256("\n".join(sorted(t.digest() for t in trials)).encode()).hexdigest()
    return f"group-{trials[0].experiment}-{ref.digest[:16]}-{members[:16]}-fused{fused.FUSED_VERSION}"


@task(name="train-group", cache_key_fn=group_cache_key, persist_result=True, tags=[TRAIN_CONCURRENCY_TAG],
      timeout_seconds=TRAIN_TIMEOUT_SECONDS)
def train_group(trials: list[TrialSpec], ref: preprocess.PreparedRef, target: str,
                tf_threads: int | None = None) -> list[dict]:
    """Fused engine: train a fusion group's models together; returns the results rows of all its trials."""
    configure_tf_threads(tf_threads)
    worker = current_worker()
    arrays = preprocess.load_arrays(ref.path, ref.digest)
    outcomes = fused.train_group(arrays, trials, n_classes=ref.n_classes,
                                 target_mean=ref.target_mean, target_std=ref.target_std)
    return [row for spec in trials
            for row in results.trial_rows(spec, outcomes[spec.digest()], target=target, data_digest=ref.digest,
                                          engine="fused", worker=worker)]


def training_units(trials: list[TrialSpec], engine: str) -> list[list[TrialSpec]]:
    """What one training task trains: a fusion group (fused) or a single trial (keras)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return fused.fusion_groups(trials) if engine == "fused" else [[spec] for spec in trials]


def count_uncached(trials: list[TrialSpec], engine: str, prepared: dict[str, preprocess.PreparedRef],
                   trial_dir: Path) -> int:
    """How many training tasks have no result file in the trial cache yet, i.e. would train."""
    pending = 0
    for unit in training_units(trials, engine):
        ref = prepared[unit[0].experiment]
        key = (group_cache_key(None, {"trials": unit, "ref": ref}) if engine == "fused"
               else trial_cache_key(None, {"spec": unit[0], "ref": ref}))
        pending += not (trial_dir / key).exists()
    return pending


def submit_training(trials: list[TrialSpec], engine: str, prepared: dict[str, preprocess.PreparedRef],
                    targets: dict[str, str], result_storage: Path, tf_threads: int | None = None,
                    tags: bool = True) -> dict:
    """Submit the training tasks of an engine: one per fusion group (fused) or per trial (keras).

    Results are stored as JSON under `result_storage` (the state root's trials/), so a cache hit never
    unpickles a file from disk, and a record cut short by a crash reads as a miss and retrains.
    `tags=False` submits them without tags (the data set's and `nnstudy-train`): on a temporary Prefect
    server nobody set a concurrency limit or looks at the UI, and warm external Dask workers keep the
    concurrency client of the first temporary server they met, so tagged task runs would fail there.
    Returns future -> (label, number of trials it trains).
    """
    def tag(task_, dataset: str):
        return tagged(task_, dataset) if tags else task_.with_options(tags=set())

    futures = {}
    for unit in training_units(trials, engine):
        first = unit[0]
        ref, target = prepared[first.experiment], targets[first.experiment]
        if engine == "keras":
            task_ = tag(train_trial.with_options(result_storage=result_storage, result_serializer="json"),
                        first.dataset)
            futures[task_.submit(first, ref, target, tf_threads)] = (first.label, 1)
        else:
            label = fused.group_label(unit)
            task_ = tag(train_group.with_options(result_storage=result_storage, result_serializer="json",
                                                 task_run_name=f"train {label}"), first.dataset)
            futures[task_.submit(unit, ref, target, tf_threads)] = (label, len(unit))
    return futures


def figures_key(frame, resolved: dict[str, catalog.ResolvedData], experiments: list[str], confusion: dict) -> str:
    """What the figures are drawn from: results (timings and workers aside), raw files, code."""
    content = frame.drop(columns=["train_seconds", "worker"], errors="ignore").to_json(orient="records")
    files = {name: {role: f.sha256 for role, f in data.files.items()} for name, data in resolved.items()}
    code = _source_digest(Path(figures.__file__), Path(stats_module_path()))
    payload = json.dumps([content, files, experiments, confusion, code], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def stats_module_path() -> str:
    from tasks import stats

    return stats.__file__


class _LazyRaw(dict):
    """Raw frames per data set, parsed only if a figure needs them (not when the figures are reused)."""

    def __init__(self, resolved: dict[str, catalog.ResolvedData]):
        super().__init__()
        self._resolved = resolved

    def __contains__(self, name: object) -> bool:
        return name in self._resolved

    def __getitem__(self, name: str):
        if not dict.__contains__(self, name):
            dict.__setitem__(self, name, load_raw_once(self._resolved[name]))
        return dict.__getitem__(self, name)


@task(name="write-report", cache_policy=NO_CACHE)
def write_report(rows: list[dict], *, study: StudySpec, profile: str, experiments: list[str],
                 resolved: dict[str, catalog.ResolvedData],
                 validation: dict[str, list[validate.ValidationReport]],
                 prepared: dict[str, preprocess.PreparedRef], run_info: dict, out_dir: Path,
                 stamp_key: dict | None = None) -> Path:
    """Write results.parquet, validation JSON and report.md atomically, and attach the report to the run.

    With `stamp_key` (see nnstudy.uptodate), a stamp written last records that these outputs answer it,
    so an identical `nnstudy run` can return them without running the flow.
    """
    frame = results.results_frame(rows)
    datasets = [dict(resolved[name].to_dict(), description=catalog.load_catalog()[resolved[name].entry].description,
                     validation=[{"file": v.file, "success": v.success, "summary": v.summary()}
                                 for v in validation[name]])
                for name in resolved]
    info = dict(run_info, packages=package_versions(REPORTED_PACKAGES), python=platform.python_version(),
                machine=f"{platform.machine()}, {platform.system()}, {os.cpu_count()} CPU cores")
    reference = baselines.all_baselines(prepared, {name: study.experiments[name].task for name in prepared})
    best = report.best_cells(frame, study, experiments)
    confusion = inspect.confusion_of_best(best, prepared, study)
    raw = _LazyRaw(resolved)
    # Each file is replaced atomically; the lock keeps a concurrent run from mixing its files with ours.
    with hold(out_dir / results.OUT_LOCK_NAME, what=f"the output folder {out_dir}"):
        figure_set = figures.write_figures_once(
            out_dir, figures_key(frame, resolved, experiments, confusion),
            lambda folder: figures.render_all(folder, results=frame, raw=raw, best=best, confusion=confusion,
                                              experiments=experiments))
        markdown = report.build_report(frame, study=study, profile=profile, experiments=experiments,
                                       datasets=datasets, preprocessing={k: v.summary() for k, v in prepared.items()},
                                       run_info=info, baselines=reference, published=replication.load_published(),
                                       conclusions=replication.load_conclusions(), figures=figure_set)
        results.write_parquet_atomic(frame, out_dir / "results.parquet")
        for name, reports in validation.items():
            payload = [v.model_dump(mode="json") for v in reports]
            results.write_text_atomic(out_dir / "validation" / f"{name}.json",
                                      json.dumps(payload, indent=2, default=str))
        results.write_text_atomic(out_dir / "data.json", json.dumps(datasets, indent=2, default=str))
        path = results.write_text_atomic(out_dir / "report.md", markdown)
        if stamp_key is not None:
            write_stamp(out_dir, stamp_key, [f.path for data in resolved.values() for f in data.files.values()],
                        {"started": run_info["started"], "wall_seconds": run_info["wall_seconds"],
                         "n_trials": run_info["n_trials"], "engine": run_info["engine"]})
    create_markdown_artifact(markdown=markdown, key=f"nnstudy-report-{profile}",
                             description=f"nnstudy report, profile {profile}")
    publish_results(frame.to_dict(orient="records"), profile)
    return path
