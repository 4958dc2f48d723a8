"""Command line: `nnstudy run` runs the study flow locally in Prefect's ephemeral mode."""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
from pathlib import Path

from nnstudy import __version__
from nnstudy.errors import ClusterError, NnstudyError
from nnstudy.runtime import quiet_dask, quiet_libraries, tidy_console, use_state_root
from nnstudy.settings import RunSettings

DATASETS = ("mnist", "boston", "adult")
EXAMPLES = """\
examples:
  nnstudy run --profile quick --data-dir ../shared/datasets
  nnstudy run --profile sample --datasets boston,adult --out reports/tabular
  nnstudy run --profile sample --workers 2
  nnstudy run --profile sample --dask-address tcp://10.0.0.5:8786
  nnstudy grid --profile sample
"""


def _dataset_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown data set(s) {unknown or text!r}; choose from {','.join(DATASETS)}")
    return names


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers separated by commas, got {text!r}") from None


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected a number of worker processes (0 runs trials in this "
                                         f"process), got {text!r}")
    return count


def _dask_address(text: str) -> str:
    from nnstudy.cluster import parse_address

    try:
        return parse_address(text)
    except ClusterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The `nnstudy` argument parser."""
    parser = argparse.ArgumentParser(
        prog="nnstudy", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Reproducible hyperparameter studies of feed-forward neural networks (MNIST, Boston "
                    "Housing, UCI Adult), orchestrated by Prefect.")
    parser.add_argument("--version", action="version", version=f"nnstudy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the study and write report.md and results.parquet",
                              description="Validate the data, preprocess it (cached), train every grid cell "
                                          "and seed (cached per trial), and write the report.")
    run.add_argument("--profile", choices=("quick", "sample", "full"), default="quick",
                     help="quick: ~1 minute smoke run; sample: the full grid on local data; "
                          "full: the published study on full MNIST (default: quick)")
    run.add_argument("--data-dir", help="folder with adult/, boston/, mnist/ or mnist-5k/ "
                                        "(default: $NNSTUDY_DATA_DIR, then the download cache)")
    run.add_argument("--datasets", type=_dataset_list, help="comma-separated subset of mnist,boston,adult")
    run.add_argument("--seeds", type=_seed_list, help="comma-separated seeds (default: the profile's)")
    run.add_argument("--out", help="output folder (default: reports/<profile>)")
    run.add_argument("--study-file", help="study YAML to use instead of the built-in schemas/study.yaml")
    run.add_argument("--engine", choices=("fused", "keras"), default="fused",
                     help="fused: train each (experiment, batch size) group of cells together as one stacked "
                          "model, sharing runs that differ only in epochs; keras: one plain Keras model per "
                          "cell, the reference (default: fused)")
    run.add_argument("--allow-unverified", action="store_true",
                     help="use data files whose checksums differ from the catalog (the report flags them)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_worker_count, metavar="N",
                       help="run the trials on a local Dask cluster of N worker processes (one trial at a "
                            "time each, the cores shared out among their TensorFlow threads); 0 runs them "
                            "one at a time in this process (default: a cluster of one worker per core when "
                            "there are enough uncached trials to repay its start-up, else in this process)")
    where.add_argument("--dask-address", type=_dask_address, metavar="tcp://HOST:PORT",
                       help="run the trials on the existing Dask cluster whose scheduler listens there; its "
                            "workers need this project importable and the state root (./data or "
                            "$NNSTUDY_HOME) at the same path")
    run.add_argument("--force", action="store_true",
                     help="run the flow even when the output folder already holds this run's report (by "
                          "default an identical rerun, same arguments, data, code and packages, returns "
                          "the existing report at once; the flow itself reuses every cached step either way)")
    run.add_argument("--verbose", action="store_true",
                     help="also show Prefect's per-task-run log lines and Dask's cluster log lines")
    run.add_argument("--debug", action="store_true", help="show tracebacks")

    grid = commands.add_parser("grid", help="list the trials a profile would run, without running them")
    grid.add_argument("--profile", choices=("quick", "sample", "full"), default="quick")
    grid.add_argument("--datasets", type=_dataset_list)
    grid.add_argument("--seeds", type=_seed_list)
    grid.add_argument("--study-file")
    return parser


def _print_grid(args: argparse.Namespace) -> int:
    from schemas.study import load_study

    trials = load_study(Path(args.study_file) if args.study_file else None).trials(
        args.profile, args.datasets, args.seeds)
    for trial in trials:
        print(trial.label)
    print(f"{len(trials)} trials")
    return 0


def _run(args: argparse.Namespace) -> int:
    # Prefect reads its home when imported, so the state root is fixed before the flow module loads;
    # the flow itself resolves the remaining paths from the same arguments and environment.
    # Resolving here also refuses unusable paths before Prefect and TensorFlow start (tens of seconds).
    settings = RunSettings.resolve(profile=args.profile, out=args.out, data_dir=args.data_dir)
    if not args.force and _up_to_date(args, settings):
        return 0
    use_state_root(settings.home)
    quiet_dask(verbose=args.verbose)
    if args.dask_address:  # fail now, not after Prefect has started and the data is validated
        from nnstudy.cluster import require_scheduler

        require_scheduler(args.dask_address)
    from flows.study import study

    tidy_console(verbose=args.verbose, debug=args.debug)
    report = study(profile=args.profile, datasets=args.datasets, seeds=args.seeds, data_dir=args.data_dir,
                   out=args.out, allow_unverified=args.allow_unverified, study_file=args.study_file,
                   engine=args.engine, workers=args.workers, dask_address=args.dask_address)
    print(f"\nReport:  {report}\nResults: {Path(report).with_name('results.parquet')}")
    return 0


def _up_to_date(args: argparse.Namespace, settings: RunSettings) -> bool:
    """Print where the report is and return True when the output folder already holds this run's outputs."""
    from nnstudy import uptodate

    key = uptodate.request_key(profile=args.profile, datasets=args.datasets, seeds=args.seeds,
                               study_file=args.study_file, engine=args.engine,
                               allow_unverified=args.allow_unverified, data_dir=settings.data_dir)
    reason = uptodate.why_stale(settings.out_dir, key)
    if reason is not None:
        if (settings.out_dir / uptodate.STAMP_NAME).exists():
            print(f"nnstudy: running the study: {reason}.", file=sys.stderr)
        return False
    run = uptodate.last_run(settings.out_dir)
    print(f"nnstudy: up to date: the report of the run started {run.get('started', '?')} ({run.get('n_trials', '?')} "
          f"trials, {run.get('wall_seconds', '?')} s) was made from the same arguments, data files, code and "
          f"package versions, and no output has changed since. Nothing to run; --force runs the flow anyway.",
          file=sys.stderr)
    report = settings.out_dir / "report.md"
    print(f"\nReport:  {report}\nResults: {report.with_name('results.parquet')}")
    return True


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Unwinding (instead of dying at once) lets Prefect stop the temporary API server it started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nnstudy` console script."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return _print_grid(args) if args.command == "grid" else _run(args)
    except NnstudyError as exc:
        if getattr(args, "debug", False):
            raise
        message = textwrap.fill(str(exc), width=100, break_long_words=False, break_on_hyphens=False)
        print(f"\nnnstudy: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnnstudy: interrupted; finished trials are cached and a rerun resumes from them.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
