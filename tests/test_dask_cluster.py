"""The quick profile on an existing Dask cluster (a scheduler and two workers on 127.0.0.1) matches a sequential run."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from schemas.study import load_study
from tasks.fused import fusion_groups
from tasks.metrics import ALL_METRICS
from tests.helpers import state_root

pytestmark = [pytest.mark.slow, pytest.mark.mirror]
ROOT = Path(__file__).resolve().parents[1]
# Training tasks of the quick profile with the default (fused) engine: one per fusion group.
QUICK_TASKS = len(fusion_groups(load_study().trials("quick")))
DASK = Path(sys.executable).with_name("dask")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NNSTUDY_", "DASK_"))}
    return dict(env, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", PREFECT_SERVER_ANALYTICS_ENABLED="false",
                **extra)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL what is left after 20 s; the group is empty afterwards."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and group_members(process.pid):
        time.sleep(0.3)
    for member in group_members(process.pid):
        member.kill()
    process.wait(timeout=10)


def group_members(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` and two one-thread `dask worker`s on 127.0.0.1, stopped by process group afterwards."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = clean_env(PYTHONPATH=str(ROOT), PREFECT_HOME=str(tmp_path / "worker-prefect"),
                    DASK_TEMPORARY_DIRECTORY=str(tmp_path / "dask"),
                    TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    commands = [[str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]]
    commands += [[str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                  "--host", "127.0.0.1", "--name", name] for name in ("w1", "w2")]
    processes = []
    try:
        for number, command in enumerate(commands):
            log = open(tmp_path / f"dask-{number}.log", "w")
            processes.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            log.close()
            if number == 0:
                time.sleep(1)
        from distributed import Client

        with Client(address, timeout=120, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=300)
            workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        yield address, workers, processes
    finally:
        for process in reversed(processes):
            stop_group(process)
        left = [p.pid for process in processes for p in group_members(process.pid)]
        assert not left, f"cluster processes left running: {left}"


def nnstudy_run(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "nnstudy.cli", "run", "--profile", "quick", *args],
                          cwd=cwd, env=clean_env(NNSTUDY_HOME=str(state_root(home))), capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_quick_profile_on_an_external_cluster_matches_a_sequential_run(dask_cluster, mirror_dir, tmp_path):
    address, workers, processes = dask_cluster
    data = ("--data-dir", str(mirror_dir))
    on_cluster = nnstudy_run(*data, "--dask-address", address, "--out", "cluster", home=tmp_path / "c", cwd=tmp_path)
    assert f"Trials run on the Dask cluster at {address} (2 workers" in on_cluster.stderr
    cluster_rows = pd.read_parquet(tmp_path / "cluster" / "results.parquet")
    assert set(cluster_rows["worker"]) == set(workers), "both workers should have trained trials"
    # No worker started a Prefect server of its own: they reported to the run's API.
    spawned = [p.cmdline() for process in processes for p in group_members(process.pid) if "uvicorn" in p.cmdline()]
    assert not spawned

    nnstudy_run(*data, "--workers", "0", "--out", "sequential", home=tmp_path / "s", cwd=tmp_path)
    sequential_rows = pd.read_parquet(tmp_path / "sequential" / "results.parquet")
    assert sequential_rows["worker"].str.startswith("local:").all()
    keys = ["experiment", "trial_key", "split"]
    merged = cluster_rows.merge(sequential_rows, on=keys, suffixes=("_cluster", "_sequential"))
    assert len(merged) == len(cluster_rows) == len(sequential_rows) == 12
    for metric in ALL_METRICS:
        pd.testing.assert_series_equal(merged[f"{metric}_cluster"], merged[f"{metric}_sequential"],
                                       check_names=False, rtol=1e-4, atol=1e-6)

    # A rerun on the cluster finds every trial in the trial cache, and keeps the workers that trained them.
    again = nnstudy_run(*data, "--dask-address", address, "--out", "cluster", "--force", home=tmp_path / "c",
                        cwd=tmp_path)
    assert again.stderr.count(": cached,") == QUICK_TASKS and "trained in" not in again.stderr
    rerun_rows = pd.read_parquet(tmp_path / "cluster" / "results.parquet")
    pd.testing.assert_frame_equal(rerun_rows, cluster_rows)
