"""The study flow: validated ingest -> cached preprocessing -> one training task per trial -> report."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from nnstudy import __version__
from nnstudy.errors import TrialsFailed, join_some
from nnstudy.settings import RunSettings
from schemas.study import ProfileName, load_study
from tasks.prefect_ui import TrialProgress, tagged
from tasks.preprocess import PreprocessSettings
from tasks.report import MAIN_METRIC
from tasks.steps import (preprocess_experiment, require_valid, resolve_data, train_trial, validate_data,
                         write_report)

DatasetName = Literal["mnist", "boston", "adult"]


def gather_trials(futures: dict, total: int) -> tuple[list[dict], int]:
    """Wait for the trial futures (future -> trial label), logging progress; raise one error listing failures."""
    logger = get_run_logger()
    rows, cached, failures = [], 0, []
    progress = TrialProgress(total)
    for done, future in enumerate(as_completed(list(futures)), start=1):
        future.wait()  # records the final state locally; the API's copy may lag behind
        state, label = future.state, futures[future]
        if state.is_completed():
            trial_rows = future.result()
            rows.extend(trial_rows)
            cached += state.name == "Cached"
            test = next(r for r in trial_rows if r["split"] == "test")
            metric = MAIN_METRIC[test["task"]][0]
            main = f"test {metric} {test[metric]:.4f}"
            how = "cached" if state.name == "Cached" else f"trained in {test['train_seconds']:.1f}s"
            logger.info("[%d/%d] %s: %s, %s", done, total, label, how, main)
        else:
            failures.append(f"{label}: {state.message}")
            logger.error("[%d/%d] %s failed: %s", done, total, label, state.message)
        progress.update(done, cached, len(failures))
    if failures:
        raise TrialsFailed(f"{len(failures)} of {total} trials failed; finished trials are cached and a rerun "
                           f"resumes from them. Failures: {join_some(failures, 5)}.")
    return rows, cached


@flow(name="nnstudy", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def study(profile: ProfileName = "quick", datasets: list[DatasetName] | None = None,
          seeds: list[int] | None = None, data_dir: str | None = None, out: str | None = None,
          allow_unverified: bool = False, study_file: str | None = None) -> str:
    """Reproduce the published study: validate data, preprocess, train every grid cell, write the report.

    Args:
        profile: How much of the study to run: quick (small subsets), sample (the full grid on local data)
            or full (the published study on the full MNIST).
        datasets: Data sets to include (default: all three).
        seeds: Seeds to train each grid cell with (default: the profile's).
        data_dir: Folder with adult/, boston/, mnist/ or mnist-5k/; a relative path is taken from the
            working directory (default: $NNSTUDY_DATA_DIR, then the download cache).
        out: Output folder for report.md and results.parquet (default: reports/<profile>).
        allow_unverified: Use data files whose checksums differ from the catalog; the report flags them.
        study_file: Study YAML to use instead of the built-in schemas/study.yaml.
    """
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    settings = RunSettings.resolve(profile=profile, data_dir=data_dir, out=out, allow_unverified=allow_unverified)
    spec = load_study(Path(study_file) if study_file else None)
    run_profile = spec.profile(profile)
    experiments = spec.experiments_for(datasets)
    trials = spec.trials(profile, datasets, seeds)
    needed = sorted({e.dataset for e in experiments.values()})

    resolved = {name: tagged(resolve_data, name).submit(name, settings, run_profile.accept_mnist_subsample)
                for name in needed}
    resolved = {name: future.result() for name, future in resolved.items()}
    validation = {name: tagged(validate_data, name).submit(resolved[name]) for name in needed}
    validation = {name: future.result() for name, future in validation.items()}
    require_valid([report for reports in validation.values() for report in reports])

    prepared = {name: tagged(preprocess_experiment, experiment.dataset).submit(
        resolved[experiment.dataset],
        PreprocessSettings.for_experiment(name, experiment, max_train_rows=run_profile.max_train_rows,
                                          max_test_rows=run_profile.max_test_rows),
        settings.cache_dir) for name, experiment in experiments.items()}
    prepared = {name: future.result() for name, future in prepared.items()}

    # Trial results live in the state root whatever PREFECT_HOME is, so the cache moves with it.
    train = train_trial.with_options(result_storage=settings.trial_dir)
    futures = {tagged(train, trial.dataset).submit(trial, prepared[trial.experiment],
                                                   experiments[trial.experiment].target):
               trial.label for trial in trials}
    rows, cached = gather_trials(futures, len(trials))

    run_info = {"started": started.isoformat(timespec="seconds"), "profile": profile,
                "seeds": seeds or run_profile.seeds, "n_trials": len(trials), "trials_cached": cached,
                "wall_seconds": round(time.perf_counter() - clock, 1), "nnstudy_version": __version__}
    path = write_report(rows, study=spec, profile=profile, experiments=list(experiments), resolved=resolved,
                        validation=validation, prepared=prepared, run_info=run_info, out_dir=settings.out_dir)
    get_run_logger().info("Report written to %s", path)
    return str(path)


if __name__ == "__main__":
    study(profile="quick", data_dir="../shared/datasets")
