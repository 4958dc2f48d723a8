"""The `nnstudy` command as a user runs it: help, grid listing, refusals and the quick profile end to end."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nnstudy.cli import main
from tasks.results import RESULT_COLUMNS
from tests.helpers import state_root


def nnstudy(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process with its own state root, as a user would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NNSTUDY_"))}
    env["NNSTUDY_HOME"] = str(state_root(home))
    return subprocess.run([sys.executable, "-m", "nnstudy.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_help_describes_the_commands(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    assert "run" in text and "grid" in text and "nnstudy run --profile quick" in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for option in ("--profile", "--data-dir", "--datasets", "--out", "--allow-unverified", "--debug"):
        assert option in text


def test_grid_lists_the_published_trials(capsys):
    assert main(["grid", "--profile", "sample"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "372 trials"  # 124 cells × 3 seeds
    assert {"boston L2 U64 sigmoid e150 b64 s0", "boston L2 U64 sigmoid e150 b64 s2"} <= set(lines)


def test_bad_arguments_exit_with_usage_errors(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["run", "--datasets", "mnist,cifar"])
    assert caught.value.code == 2
    assert "unknown data set(s) ['cifar']" in capsys.readouterr().err


@pytest.mark.slow
def test_altered_file_exits_nonzero_with_one_paragraph_and_writes_nothing(mirror_dir, tmp_path):
    data_dir = tmp_path / "altered"
    shutil.copytree(mirror_dir / "adult", data_dir / "adult")
    with open(data_dir / "adult" / "adult.data", "a") as handle:
        handle.write("39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, "
                     "White, Male, 2174, 0, 40, United-States, <=50K\n")
    done = nnstudy("run", "--datasets", "adult", "--data-dir", str(data_dir), "--out", "out",
                   home=tmp_path / "home", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "nnstudy: error:" in done.stderr and str(data_dir / "adult" / "adult.data") in done.stderr
    assert "5d7c39d7b8804f071cdd1f2a7c460872" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home" / "cache").exists()


@pytest.mark.slow
def test_quick_profile_end_to_end_then_cached_rerun(mirror_dir, tmp_path):
    done = nnstudy("run", "--profile", "quick", "--data-dir", str(mirror_dir), home=tmp_path / "home", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "reports" / "quick"
    assert f"Report:  {out / 'report.md'}" in done.stdout
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns) == RESULT_COLUMNS
    assert set(results["experiment"]) == {"mnist", "boston", "adult-hours", "adult-income"}
    assert results.groupby("split").size().to_dict() == {"test": 6, "train": 6}
    report = (out / "report.md").read_text()
    for table in range(3, 10):
        assert f"Table {table} —" in report
    assert "5,000-image subsample" in report and "6 trials (0 from cache)" in report
    assert "[6/6]" in done.stderr and "oneDNN" not in done.stderr and "absl" not in done.stderr

    # Nothing changed: the CLI returns the report without starting Prefect or TensorFlow.
    report_bytes = (out / "report.md").read_bytes()
    same = nnstudy("run", "--profile", "quick", "--data-dir", str(mirror_dir), home=tmp_path / "home", cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-3000:]
    assert "nnstudy: up to date" in same.stderr and f"Report:  {out / 'report.md'}" in same.stdout
    assert "prefect" not in same.stderr.lower() and "cached" not in same.stderr
    assert (out / "report.md").read_bytes() == report_bytes

    # A changed output (here a deleted figure) is noticed: the flow runs, takes every trial from the
    # cache and draws the figure again.
    figure = next((out / "figures").glob("*.png"))
    figure.unlink()
    again = nnstudy("run", "--profile", "quick", "--data-dir", str(mirror_dir), home=tmp_path / "home", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"the output {figure} was changed, added or removed" in again.stderr
    # Fused engine: 4 training tasks (MNIST's and Boston's two cells each train as one group).
    assert again.stderr.count(": cached,") == 4 and "trained in" not in again.stderr
    assert "cache hit" in again.stderr and figure.is_file()
    assert "6 trials (6 from cache)" in (out / "report.md").read_text()


@pytest.mark.slow
def test_sigterm_stops_the_run_and_its_temporary_prefect_server(mirror_dir, tmp_path):
    import signal
    import time

    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NNSTUDY_"))}
    env["NNSTUDY_HOME"] = str(tmp_path / "home")
    process = subprocess.Popen([sys.executable, "-m", "nnstudy.cli", "run", "--datasets", "boston",
                                "--data-dir", str(mirror_dir)], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not server:
            server = [c for c in psutil.Process(process.pid).children(recursive=True) if "uvicorn" in " ".join(c.cmdline())]
            time.sleep(0.5)
        assert server, "the temporary Prefect server never started"
        time.sleep(5)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        gone, alive = psutil.wait_procs(server, timeout=30)
        assert not alive, f"left running: {[p.pid for p in alive]}"
        assert process.returncode != 0
    finally:
        if process.poll() is None:
            process.kill()
        for child in server:  # orphans are no longer our children, so kill them by handle
            if child.is_running():
                child.kill()
