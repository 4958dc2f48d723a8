"""Choosing where trials run (in this process, a local Dask cluster, an existing one) and refusing bad choices."""

import os
import socket
import subprocess
import sys

import pytest

from nnstudy import cluster
from nnstudy.cluster import ExecutionPlan, parse_address, plan_execution, worker_environment
from nnstudy.errors import ClusterError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def plenty_of_memory(monkeypatch):
    monkeypatch.setattr(cluster, "available_memory", lambda: 64 * 2**30)


@pytest.mark.parametrize("pending, cores, kind, workers, tf_threads", [
    (6, 2, "in-process", 1, None),      # the quick profile: too few trials to repay a cluster
    (0, 2, "in-process", 1, None),      # a cached rerun
    (72, 2, "local-cluster", 2, 1),     # the Boston grid on 2 cores
    (72, 1, "in-process", 1, None),     # one core: nothing to share
    (124, 64, "local-cluster", 20, 3),  # at least 6 trials per worker; the cores shared out
    (11, 2, "in-process", 1, None),     # 5 each would not repay the start-up
])
def test_automatic_choice_depends_on_trials_to_train_and_cores(plenty_of_memory, pending, cores, kind, workers,
                                                                tf_threads):
    plan = plan_execution(None, None, pending=pending, cores=cores)
    assert (plan.kind, plan.workers, plan.tf_threads) == (kind, workers, tf_threads)
    assert "picked automatically" in plan.describe()


def test_automatic_choice_respects_memory(monkeypatch):
    monkeypatch.setattr(cluster, "available_memory", lambda: 2 * 2**30)
    plan = plan_execution(None, None, pending=124, cores=8)
    assert plan.kind == "in-process" and "memory for only one worker" in plan.reason


@pytest.mark.parametrize("workers, cores, kind, tf_threads", [
    (0, 2, "in-process", None), (1, 2, "local-cluster", 2), (2, 2, "local-cluster", 1), (3, 2, "local-cluster", 1),
])
def test_explicit_worker_counts_share_out_the_cores(workers, cores, kind, tf_threads):
    plan = plan_execution(workers, None, pending=100, cores=cores)
    assert (plan.kind, plan.tf_threads) == (kind, tf_threads)
    assert f"chosen by workers={workers}" in plan.describe()


@pytest.mark.parametrize("workers, address, fragments", [
    (-1, None, ["workers (--workers)", "got -1"]),
    (2, "tcp://127.0.0.1:8786", ["either workers", "here 2", "here tcp://127.0.0.1:8786"]),
    (None, "127.0.0.1:8786", ["dask_address (--dask-address)", "tcp://HOST:PORT", "got '127.0.0.1:8786'"]),
    (None, "tcp://host:99999", ["got 'tcp://host:99999'"]),
])
def test_bad_choices_are_refused_naming_the_parameter_and_value(workers, address, fragments):
    with pytest.raises(ClusterError) as caught:
        plan_execution(workers, address, pending=10, cores=2)
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("text", ["tcp://127.0.0.1:8786", "tcp://scheduler.example.org:1", "tcp://[::1]:8786",
                                  " tcp://10.0.0.5:8786 "])
def test_scheduler_addresses_are_accepted(text):
    assert parse_address(text) == text.strip()


def test_an_address_without_a_scheduler_is_refused_at_once():
    port = free_port()
    with pytest.raises(ClusterError) as caught:
        plan_execution(None, f"tcp://127.0.0.1:{port}", pending=10, cores=2)
    message = str(caught.value)
    assert f"No Dask scheduler answers at tcp://127.0.0.1:{port}" in message
    assert f"dask scheduler --host 127.0.0.1 --port {port}" in message and "--dask-address" in message


def test_local_workers_get_quiet_libraries_thread_limits_and_the_api():
    env = worker_environment(2, "http://127.0.0.1:8123/api")
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "2"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3" and env["PREFECT_API_URL"] == "http://127.0.0.1:8123/api"
    assert env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] == "WARNING"
    assert "TF_NUM_INTRAOP_THREADS" not in worker_environment(None, None)
    assert "PREFECT_API_URL" not in worker_environment(None, None)


def test_each_plan_makes_its_task_runner():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(ExecutionPlan(kind="in-process", workers=1).task_runner(), ThreadPoolTaskRunner)
    local = ExecutionPlan(kind="local-cluster", workers=3, tf_threads=1).task_runner("http://127.0.0.1:1/api")
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["threads_per_worker"] == 1
    assert local.cluster_kwargs["host"] == "127.0.0.1"
    assert local.cluster_kwargs["env"]["TF_NUM_INTRAOP_THREADS"] == "1"
    remote = ExecutionPlan(kind="dask-cluster", workers=2, address="tcp://127.0.0.1:8786").task_runner()
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"


def test_outside_dask_a_trial_records_this_host_and_process():
    assert cluster.current_worker() == f"local:{socket.gethostname()}:{os.getpid()}"


def run_cli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NNSTUDY_"))}
    env["NNSTUDY_HOME"] = str(tmp_path / "home")
    return subprocess.run([sys.executable, "-m", "nnstudy.cli", "run", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, fragments", [
    (["--dask-address", "10.0.0.5"], ["argument --dask-address", "tcp://HOST:PORT", "got '10.0.0.5'"]),
    (["--workers", "two"], ["argument --workers", "got 'two'"]),
    (["--workers", "2", "--dask-address", "tcp://127.0.0.1:8786"], ["not allowed with argument --workers"]),
])
def test_cli_refuses_bad_cluster_arguments_with_a_usage_error(tmp_path, args, fragments):
    done = run_cli(*args, tmp_path=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr


def test_cli_refuses_an_unreachable_scheduler_in_one_paragraph_before_starting_anything(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    done = run_cli("--dask-address", address, tmp_path=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    error = done.stderr.strip()
    assert error.startswith(f"nnstudy: error: No Dask scheduler answers at {address}")
    assert "\n\n" not in error and "Prefect" not in done.stderr
    assert not (tmp_path / "home" / "cache").exists() and not (tmp_path / "reports").exists()


def test_a_keras_trials_initial_weights_depend_on_its_seed_only():
    """Draws from Python's shared `random` (Dask's sizeof, Prefect's retry jitter) change no trial's weights."""
    import random

    import numpy as np

    from schemas.study import TrialSpec
    from tasks.train import build_mlp

    spec = TrialSpec(experiment="toy", dataset="boston", task="regression", hidden_layers=2, units=8,
                     activation="relu", epochs=1, batch_size=16, seed=3)
    first = build_mlp(5, spec, None).get_weights()
    random.seed(11)
    random.random()
    again = build_mlp(5, spec, None).get_weights()
    other = build_mlp(5, spec.model_copy(update={"seed": 4}), None).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
