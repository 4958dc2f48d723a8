"""The study flow: validated ingest -> cached preprocessing -> one training task per trial -> report."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import ThreadPoolTaskRunner

from nnstudy import __version__
from nnstudy.cluster import plan_execution, prefect_api_for_workers
from nnstudy.errors import TrialsFailed, join_some
from nnstudy.settings import RunSettings
from nnstudy.uptodate import request_key
from schemas.study import ProfileName, TrialSpec, load_study
from tasks.prefect_ui import TrialProgress, tagged
from tasks.preprocess import PreparedRef, PreprocessSettings
from tasks.report import MAIN_METRIC
from tasks.steps import (count_uncached, preprocess_experiment, require_valid, resolve_data, submit_training,
                         validate_data, write_report)

DatasetName = Literal["mnist", "boston", "adult"]
Engine = Literal["fused", "keras"]


def _best_test(rows: list[dict]) -> str:
    """The best main test metric among a unit's rows, e.g. `best test rmse 3.4280`."""
    tests = [r for r in rows if r["split"] == "test"]
    metric, higher_is_better = MAIN_METRIC[tests[0]["task"]]
    values = [r[metric] for r in tests]
    return f"{'best ' if len(tests) > 1 else ''}test {metric} {(max if higher_is_better else min)(values):.4f}"


def gather_trials(futures: dict, total: int, progress_id=None) -> tuple[list[dict], int]:
    """Wait for the training futures (future -> (label, trials)), logging progress in trials.

    Raises one error listing every failed unit once all have finished; returns rows and the number of
    trials whose results came from the cache.
    """
    logger = get_run_logger()
    rows, cached, done, failures = [], 0, 0, []
    progress = TrialProgress(total, artifact_id=progress_id)
    for future in as_completed(list(futures)):
        future.wait()  # records the final state locally; the API's copy may lag behind
        state, (label, size) = future.state, futures[future]
        done += size
        if state.is_completed():
            unit_rows = future.result()
            rows.extend(unit_rows)
            cached += size if state.name == "Cached" else 0
            seconds = sum(r["train_seconds"] for r in unit_rows if r["split"] == "test")
            how = "cached" if state.name == "Cached" else f"trained in {seconds:.1f}s"
            logger.info("[%d/%d] %s: %s, %s", done, total, label, how, _best_test(unit_rows))
        else:
            failures.append(f"{label}: {state.message}")
            logger.error("[%d/%d] %s failed: %s", done, total, label, state.message)
        progress.update(done, cached, len(failures))
    if failures:
        raise TrialsFailed(f"{len(failures)} of {len(futures)} training tasks failed; finished ones are cached and "
                           f"a rerun resumes from them. Failures: {join_some(failures, 5)}.")
    return rows, cached


# The task runner is chosen per run (see nnstudy.cluster) with `train_trials.with_options(task_runner=...)`.
@flow(name="nnstudy-trials", task_runner=ThreadPoolTaskRunner(max_workers=1))
def train_trials(trials: list[TrialSpec], prepared: dict[str, PreparedRef], targets: dict[str, str],
                 trial_dir: Path, tf_threads: int | None = None, engine: Engine = "fused",
                 tags: bool = True, progress_id: str | None = None) -> tuple[list[dict], int]:
    """Train every trial with the engine (cached in `trial_dir` per fusion group or per trial); returns the
    results rows and how many trials came from the cache."""
    futures = submit_training(trials, engine, prepared, targets, trial_dir, tf_threads, tags)
    return gather_trials(futures, len(trials), progress_id)


@flow(name="nnstudy", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def study(profile: ProfileName = "quick", datasets: list[DatasetName] | None = None,
          seeds: list[int] | None = None, data_dir: str | None = None, out: str | None = None,
          allow_unverified: bool = False, study_file: str | None = None, engine: Engine = "fused",
          workers: int | None = None, dask_address: str | None = None) -> str:
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
        engine: fused (default) trains the cells of each (experiment, batch size) together as one stacked
            model and shares runs that differ only in epochs; keras trains one plain Keras model per cell
            (the reference engine).
        workers: 0 trains in this process, N on a local Dask cluster of N worker processes; by default
            the machine and the number of training tasks to run decide.
        dask_address: tcp://HOST:PORT of an existing Dask scheduler to train on instead.
    """
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    settings = RunSettings.resolve(profile=profile, data_dir=data_dir, out=out, allow_unverified=allow_unverified)
    # What the outputs depend on, taken before any data is read; the report's stamp records it.
    key = request_key(profile=profile, datasets=datasets, seeds=seeds, study_file=study_file, engine=engine,
                      allow_unverified=allow_unverified, data_dir=settings.data_dir)
    spec = load_study(Path(study_file) if study_file else None)
    run_profile = spec.profile(profile)
    experiments = spec.experiments_for(datasets)
    trials = spec.trials(profile, datasets, seeds)
    needed = sorted({e.dataset for e in experiments.values()})

    resolved = {name: tagged(resolve_data, name).submit(name, settings, run_profile.accept_mnist_subsample)
                for name in needed}
    resolved = {name: future.result() for name, future in resolved.items()}
    validation = {name: tagged(validate_data, name).submit(resolved[name], settings.home / "validation")
                  for name in needed}
    validation = {name: future.result() for name, future in validation.items()}
    require_valid([report for reports in validation.values() for report in reports])

    prepared = {name: tagged(preprocess_experiment, experiment.dataset).submit(
        resolved[experiment.dataset],
        PreprocessSettings.for_experiment(name, experiment, max_train_rows=run_profile.max_train_rows,
                                          max_test_rows=run_profile.max_test_rows),
        settings.cache_dir) for name, experiment in experiments.items()}
    prepared = {name: future.result() for name, future in prepared.items()}

    plan = plan_execution(workers, dask_address, pending=count_uncached(trials, engine, prepared, settings.trial_dir))
    get_run_logger().info(plan.describe())
    trials_clock = time.perf_counter()
    # Tag training runs for the UI and concurrency limits only on a server that outlives the run.
    persistent_server = bool(PREFECT_API_URL.value())
    # The progress artifact belongs to this (the main) flow run; the trials subflow moves it forward.
    progress_id = str(TrialProgress(len(trials)).artifact_id)
    with prefect_api_for_workers(plan) as api_url:
        # Trial results live in the state root whatever PREFECT_HOME is, so the cache moves with it.
        rows, cached = train_trials.with_options(task_runner=plan.task_runner(api_url))(
            trials, prepared, {name: e.target for name, e in experiments.items()}, settings.trial_dir,
            plan.tf_threads, engine, persistent_server, progress_id)
    trials_seconds = time.perf_counter() - trials_clock
    get_run_logger().info("Trials: %d trained and %d cached in %.1f s (%s)", len(trials) - cached, cached,
                          trials_seconds, plan.kind)

    run_info = {"started": started.isoformat(timespec="seconds"), "profile": profile,
                "seeds": seeds or run_profile.seeds, "n_trials": len(trials), "trials_cached": cached, "engine": engine,
                "wall_seconds": round(time.perf_counter() - clock, 1), "trials_seconds": round(trials_seconds, 1),
                "executor": plan.describe(), "nnstudy_version": __version__}
    path = write_report(rows, study=spec, profile=profile, experiments=list(experiments), resolved=resolved,
                        validation=validation, prepared=prepared, run_info=run_info, out_dir=settings.out_dir,
                        stamp_key=key)
    get_run_logger().info("Report written to %s", path)
    return str(path)


if __name__ == "__main__":
    study(profile="quick", data_dir="../shared/datasets")
