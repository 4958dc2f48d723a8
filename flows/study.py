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
from nnstudy.cluster import plan_execution, prefect_api_for_workers
from nnstudy.errors import TrialsFailed, join_some
from nnstudy.settings import RunSettings
from schemas.study import ProfileName, TrialSpec, load_study
from tasks.preprocess import PreparedRef, PreprocessSettings
from tasks.report import MAIN_METRIC
from tasks.steps import (count_uncached, preprocess_experiment, require_valid, resolve_data, train_trial,
                         validate_data, write_report)

DatasetName = Literal["mnist", "boston", "adult"]


def gather_trials(futures: dict, total: int) -> tuple[list[dict], int]:
    """Wait for the trial futures (future -> trial label), logging progress; raise one error listing failures."""
    logger = get_run_logger()
    rows, cached, failures = [], 0, []
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
    if failures:
        raise TrialsFailed(f"{len(failures)} of {total} trials failed; finished trials are cached and a rerun "
                           f"resumes from them. Failures: {join_some(failures, 5)}.")
    return rows, cached


# The task runner is chosen per run (see nnstudy.cluster) with `train_trials.with_options(task_runner=...)`.
@flow(name="nnstudy-trials", task_runner=ThreadPoolTaskRunner(max_workers=1))
def train_trials(trials: list[TrialSpec], prepared: dict[str, PreparedRef], targets: dict[str, str],
                 trial_dir: Path, tf_threads: int | None = None) -> tuple[list[dict], int]:
    """Train every trial (cached per trial in `trial_dir`); returns the results rows and how many were cached."""
    train = train_trial.with_options(result_storage=trial_dir)
    futures = {train.submit(trial, prepared[trial.experiment], targets[trial.experiment], tf_threads):
               trial.label for trial in trials}
    return gather_trials(futures, len(trials))


@flow(name="nnstudy", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def study(profile: ProfileName = "quick", datasets: list[DatasetName] | None = None,
          seeds: list[int] | None = None, data_dir: str | None = None, out: str | None = None,
          allow_unverified: bool = False, study_file: str | None = None, workers: int | None = None,
          dask_address: str | None = None) -> str:
    """Reproduce the published study: validate data, preprocess, train every grid cell, write the report.

    Trials run in this process (`workers=0`), on a local Dask cluster of `workers` processes, or on the
    Dask cluster at `dask_address`; by default the machine and the number of trials to train decide.
    """
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    settings = RunSettings.resolve(profile=profile, data_dir=data_dir, out=out, allow_unverified=allow_unverified)
    spec = load_study(Path(study_file) if study_file else None)
    run_profile = spec.profile(profile)
    experiments = spec.experiments_for(datasets)
    trials = spec.trials(profile, datasets, seeds)
    needed = sorted({e.dataset for e in experiments.values()})

    resolved = {name: resolve_data.submit(name, settings, run_profile.accept_mnist_subsample) for name in needed}
    resolved = {name: future.result() for name, future in resolved.items()}
    validation = {name: validate_data.submit(resolved[name]) for name in needed}
    validation = {name: future.result() for name, future in validation.items()}
    require_valid([report for reports in validation.values() for report in reports])

    prepared = {name: preprocess_experiment.submit(
        resolved[experiment.dataset],
        PreprocessSettings.for_experiment(name, experiment, max_train_rows=run_profile.max_train_rows,
                                          max_test_rows=run_profile.max_test_rows),
        settings.cache_dir) for name, experiment in experiments.items()}
    prepared = {name: future.result() for name, future in prepared.items()}

    plan = plan_execution(workers, dask_address, pending=count_uncached(trials, prepared, settings.trial_dir))
    get_run_logger().info(plan.describe())
    trials_clock = time.perf_counter()
    with prefect_api_for_workers(plan) as api_url:
        # Trial results live in the state root whatever PREFECT_HOME is, so the cache moves with it.
        rows, cached = train_trials.with_options(task_runner=plan.task_runner(api_url))(
            trials, prepared, {name: e.target for name, e in experiments.items()}, settings.trial_dir,
            plan.tf_threads)
    trials_seconds = time.perf_counter() - trials_clock
    get_run_logger().info("Trials: %d trained and %d cached in %.1f s (%s)", len(trials) - cached, cached,
                          trials_seconds, plan.kind)

    run_info = {"started": started.isoformat(timespec="seconds"), "profile": profile,
                "seeds": seeds or run_profile.seeds, "n_trials": len(trials), "trials_cached": cached,
                "wall_seconds": round(time.perf_counter() - clock, 1), "trials_seconds": round(trials_seconds, 1),
                "executor": plan.describe(), "nnstudy_version": __version__}
    path = write_report(rows, study=spec, profile=profile, experiments=list(experiments), resolved=resolved,
                        validation=validation, prepared=prepared, run_info=run_info, out_dir=settings.out_dir)
    get_run_logger().info("Report written to %s", path)
    return str(path)


if __name__ == "__main__":
    study(profile="quick", data_dir="../shared/datasets")
