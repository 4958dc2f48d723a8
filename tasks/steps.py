"""Thin Prefect tasks around the pure functions; the flow calls only these."""

from __future__ import annotations

import json
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from nnstudy.cluster import current_worker
from nnstudy.runtime import configure_tf_threads, keras_seed_scope, quiet_libraries
from nnstudy.settings import RunSettings
from schemas.study import StudySpec, TrialSpec
from tasks import catalog, ingest, preprocess, report, results, train, validate

quiet_libraries()

REPORTED_PACKAGES = ("nnstudy", "prefect", "tensorflow-cpu", "tensorflow", "keras", "pandas", "numpy",
                     "scikit-learn", "pyarrow", "great-expectations")


@task(name="resolve-data", task_run_name="resolve {dataset}", cache_policy=NO_CACHE)
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


@task(name="validate-data", task_run_name="validate {resolved.entry}", cache_policy=NO_CACHE)
def validate_data(resolved: catalog.ResolvedData) -> list[validate.ValidationReport]:
    """Parse the raw files and run the data set's expectation suite on each."""
    raw = load_raw_once(resolved)
    rows = expected_rows(resolved)
    if resolved.dataset == "mnist":
        label = str(resolved.directory)
        reports = [validate.validate_mnist(raw.arrays, file_label=label,
                                           expected_train_rows=rows.get("train_images") or rows.get("archive_train"),
                                           expected_test_rows=rows.get("test_images") or rows.get("archive_test"))]
    else:
        reports = [validate.validate_frame(frame, resolved.dataset, file_label=str(resolved.files[role].path),
                                           parameters={"row_count": rows[role]})
                   for role, frame in raw.frames.items()]
    for item in reports:
        get_run_logger().info(item.summary())
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


def trial_cache_key(context, parameters: dict) -> str:
    """A trial is finished work once its data digest, grid point, seed and trainer version match."""
    spec, ref = parameters["spec"], parameters["ref"]
    return (f"trial-{spec.experiment}-{ref.digest[:16]}-{spec.digest()[:16]}-trainer{train.TRAINER_VERSION}")


def count_uncached(trials: list[TrialSpec], prepared: dict[str, preprocess.PreparedRef], trial_dir: Path) -> int:
    """How many trials have no result file in the trial cache yet, i.e. would train."""
    return sum(not (trial_dir / trial_cache_key(None, {"spec": spec, "ref": prepared[spec.experiment]})).exists()
               for spec in trials)


@task(name="train", task_run_name="train {spec.label}", cache_key_fn=trial_cache_key, persist_result=True)
def train_trial(spec: TrialSpec, ref: preprocess.PreparedRef, target: str, tf_threads: int | None = None) -> list[dict]:
    """Train and score one grid cell with one seed; returns its results rows."""
    configure_tf_threads(tf_threads)
    arrays = preprocess.load_arrays(ref.path, ref.digest)
    with keras_seed_scope(spec.seed):
        outcome = train.fit_and_evaluate(arrays, spec, n_classes=ref.n_classes,
                                         target_mean=ref.target_mean, target_std=ref.target_std)
    return results.trial_rows(spec, outcome, target=target, data_digest=ref.digest, worker=current_worker())


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the results."""
    found = {}
    for name in REPORTED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@task(name="write-report", cache_policy=NO_CACHE)
def write_report(rows: list[dict], *, study: StudySpec, profile: str, experiments: list[str],
                 resolved: dict[str, catalog.ResolvedData],
                 validation: dict[str, list[validate.ValidationReport]],
                 prepared: dict[str, preprocess.PreparedRef], run_info: dict, out_dir: Path) -> Path:
    """Write results.parquet, validation JSON and report.md atomically, and attach the report to the run."""
    frame = results.results_frame(rows)
    datasets = [dict(resolved[name].to_dict(), description=catalog.load_catalog()[resolved[name].entry].description,
                     validation=[{"file": v.file, "success": v.success, "summary": v.summary()}
                                 for v in validation[name]])
                for name in resolved]
    info = dict(run_info, packages=package_versions(), python=platform.python_version(),
                machine=f"{platform.machine()}, {platform.system()}")
    markdown = report.build_report(frame, study=study, profile=profile, experiments=experiments,
                                   datasets=datasets, preprocessing={k: v.summary() for k, v in prepared.items()},
                                   run_info=info)
    results.write_parquet_atomic(frame, out_dir / "results.parquet")
    for name, reports in validation.items():
        payload = [v.model_dump(mode="json") for v in reports]
        results.write_text_atomic(out_dir / "validation" / f"{name}.json", json.dumps(payload, indent=2, default=str))
    results.write_text_atomic(out_dir / "data.json", json.dumps(datasets, indent=2, default=str))
    path = results.write_text_atomic(out_dir / "report.md", markdown)
    create_markdown_artifact(markdown=markdown, key=f"nnstudy-report-{profile}",
                             description=f"nnstudy report, profile {profile}")
    return path
