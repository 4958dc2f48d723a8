"""Speed-up of running trials on a local Dask cluster: the same grid slice with different numbers of workers.

    python benchmarks/scale.py --data-dir ../shared/datasets                     # Boston grid, 1 and 2 workers
    python benchmarks/scale.py --data-dir ../shared/datasets --workers 0,1,2     # also in-process, no cluster

Each configuration is one `nnstudy run --workers N` in a fresh process with its own empty state root,
so nothing is cached: every trial trains, and the local cluster starts and stops inside the measured
time. Prefect's database is created once beforehand and shared, so no run pays for its migrations.
Prints, per configuration, the wall time of the whole run, of its trials phase (cluster start-up,
training, shut-down), trials per minute of the trials phase, the speed-up over one worker (over the
first configuration when 1 is not among them), and whether every configuration produced the same metrics. Figures are recorded in README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

TRIALS_LINE = re.compile(r"Trials: (\d+) trained and (\d+) cached in ([\d.]+) s")
METRICS = ["precision", "recall", "f1", "accuracy", "mae", "mape", "rmse", "r2"]


def _count_list(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(f"expected worker counts like 1,2 (0: in this process), got {text!r}")
    return counts


def run_configuration(workers: int, options: argparse.Namespace, scratch: Path, env: dict[str, str]) -> dict:
    """One `nnstudy run` on an empty state root; its wall times and results."""
    home, out = scratch / f"home-{workers}", scratch / f"out-{workers}"
    args = ["--profile", options.profile, "--datasets", options.datasets, "--data-dir", options.data_dir,
            "--workers", str(workers), "--engine", options.engine, "--out", str(out)] + (
                ["--seeds", options.seeds] if options.seeds else [])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nnstudy.cli", "run", *args], cwd=scratch,
                          env=dict(env, NNSTUDY_HOME=str(home)), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"nnstudy run --workers {workers} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = TRIALS_LINE.search(done.stderr)
    if not found:
        sys.exit(f"no 'Trials: ...' line in the log of nnstudy run --workers {workers}:\n{done.stderr[-3000:]}")
    trained, cached, seconds = int(found[1]), int(found[2]), float(found[3])
    if cached:
        sys.exit(f"{cached} trials were cached although the state root was empty: the figures would be wrong")
    return {"workers": workers, "wall": wall, "trials_seconds": seconds, "trials": trained,
            "results": pd.read_parquet(out / "results.parquet")}


def same_metrics(runs: list[dict], rtol: float = 1e-4, atol: float = 1e-6) -> str:
    """Whether every configuration scored every trial the same, within float tolerance.

    Workers get different numbers of TensorFlow threads, which may sum in a different order; the tests
    hold the same tolerance (rtol 1e-4, atol 1e-6).
    """
    keys = ["experiment", "trial_key", "split"]
    first = runs[0]["results"].set_index(keys).sort_index()[METRICS]
    worst, within = 0.0, True
    for run in runs[1:]:
        other = run["results"].set_index(keys).sort_index()[METRICS]
        difference = (first - other).abs()
        worst = max(worst, float(difference.max().max(skipna=True) or 0.0))
        within &= bool(((difference <= atol + rtol * other.abs()) | difference.isna()).all().all())
    verdict = "yes" if worst == 0.0 else ("yes, within float tolerance" if within else "NO")
    return f"{verdict} (largest absolute difference {worst:.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--profile", default="sample", choices=("quick", "sample", "full"))
    parser.add_argument("--datasets", default="boston", help="comma-separated data sets (default: boston)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the profile's)")
    parser.add_argument("--engine", default="fused", choices=("fused", "keras"),
                        help="training engine (default: fused; keras gives one task per trial to spread)")
    parser.add_argument("--workers", type=_count_list, default=[1, 2],
                        help="worker counts to compare, 0 meaning in-process (default: 1,2)")
    options = parser.parse_args()
    options.data_dir = str(Path(options.data_dir).resolve())
    with tempfile.TemporaryDirectory(prefix="nnstudy-scale-") as tmp:
        scratch = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NNSTUDY_", "DASK_"))}
        env.update(PREFECT_HOME=str(scratch / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], env=env,
                       check=True, capture_output=True)
        print(f"profile {options.profile}, data sets {options.datasets}, engine {options.engine}, "
              f"{os.cpu_count()} CPUs, "
              f"python {sys.version.split()[0]}")
        print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n", flush=True)
        runs = []
        for workers in options.workers:
            runs.append(run_configuration(workers, options, scratch, env))
            print(f"  measured --workers {workers}", file=sys.stderr, flush=True)
    base = next((run for run in runs if run["workers"] == 1), runs[0])
    print(f"speed-up over --workers {base['workers']}")
    print("| workers | trials | run wall (s) | trials phase (s) | trials/min | speed-up, trials phase | "
          "speed-up, whole run |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        label = "0 (in-process)" if run["workers"] == 0 else str(run["workers"])
        print(f"| {label} | {run['trials']} | {run['wall']:.1f} | {run['trials_seconds']:.1f} | "
              f"{60 * run['trials'] / run['trials_seconds']:.1f} | "
              f"{base['trials_seconds'] / run['trials_seconds']:.2f}x | {base['wall'] / run['wall']:.2f}x |")
    print(f"\nsame metrics in every configuration: {same_metrics(runs)}")


if __name__ == "__main__":
    main()
