"""Wall time and peak memory of a study run and of immediate reruns (which should train nothing).

    python benchmarks/rerun.py --profile quick --data-dir ../shared/datasets

Runs `nnstudy run` three times in fresh processes against a new, empty state root: the first run,
the same command again (the up-to-date check returns the report without starting the flow), and the
same command with --force (the flow runs and takes every step from its caches). Prints one line per
run and each rerun's time as a fraction of the first run's. Figures are recorded in README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Run the CLI; return wall seconds, peak RSS of the child in MiB, and its log."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nnstudy.cli", "run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"nnstudy run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak_mib, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", choices=("quick", "sample", "full"))
    parser.add_argument("--data-dir", required=True)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nnstudy-bench-") as scratch:
        cwd = Path(scratch)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NNSTUDY_"))}
        env["NNSTUDY_HOME"] = str(cwd / "data")
        args = ["--profile", options.profile, "--data-dir", str(Path(options.data_dir).resolve())]
        print(f"profile {options.profile}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
        walls = {}
        for name, extra in (("first run", []), ("rerun", []), ("rerun --force", ["--force"])):
            wall, peak, log = run_once(args + extra, env, cwd)
            trained, cached = len(re.findall(r": trained in ", log)), len(re.findall(r": cached, ", log))
            walls[name] = wall
            how = "up to date, flow not run" if "nnstudy: up to date" in log else \
                f"{trained:3d} training tasks ran, {cached:3d} cached"
            print(f"{name:13s}: {wall:7.1f} s wall, {how}, peak RSS so far {peak:,.0f} MiB")
        for name in ("rerun", "rerun --force"):
            print(f"{name} / first run: {walls[name] / walls['first run']:.1%}")


if __name__ == "__main__":
    main()
