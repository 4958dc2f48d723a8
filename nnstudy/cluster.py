"""Where trials run: in the flow's own process, on a local Dask cluster, or on an existing one.

The flow turns its `workers` / `dask_address` parameters into an `ExecutionPlan`, and the plan into
the task runner of the trials subflow. Dask and prefect-dask are imported only when a plan uses them.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from pydantic import BaseModel, ConfigDict

from nnstudy.errors import ClusterError
from nnstudy.runtime import QUIET_ENV

# Automatic choice: a local cluster's start-up (spawning the workers, importing TensorFlow and Prefect
# in each: 10-25 s on 2 cores) pays off only when every worker gets at least this many trials to train
# (a first estimate from benchmarks/scale.py on a busy 2-core machine: Boston trials of ~3 s each).
MIN_TRIALS_PER_WORKER = 6
# A worker process holds Prefect, TensorFlow, one model and one experiment's arrays (MNIST: ~0.4 GB).
WORKER_MEMORY = 1.5 * 2**30
ADDRESS_PATTERN = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


class ExecutionPlan(BaseModel):
    """How the trials of one run are executed, and why."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["in-process", "local-cluster", "dask-cluster"]
    workers: int
    tf_threads: int | None = None  # TensorFlow threads per worker; None: TensorFlow's default
    address: str | None = None
    reason: str = ""

    def describe(self) -> str:
        """One line saying where trials run, for the log."""
        if self.kind == "in-process":
            where = "one at a time in this process, TensorFlow using every core"
        elif self.kind == "local-cluster":
            where = (f"on a local Dask cluster of {self.workers} worker process{'es' * (self.workers > 1)}, "
                     f"1 task and {self.tf_threads} TensorFlow thread{'s' * (self.tf_threads > 1)} each")
        else:
            where = f"on the Dask cluster at {self.address} ({self.workers} workers when checked)"
        return f"Trials run {where}" + (f" ({self.reason})" if self.reason else "")

    def task_runner(self, api_url: str | None = None):
        """The Prefect task runner for this plan; `api_url` is the Prefect API the local workers report to."""
        if self.kind == "in-process":
            from prefect.task_runners import ThreadPoolTaskRunner

            return ThreadPoolTaskRunner(max_workers=1)
        from prefect_dask import DaskTaskRunner

        if self.kind == "dask-cluster":
            return DaskTaskRunner(address=self.address)
        quiet = logging.getLogger("distributed").getEffectiveLevel() >= logging.WARNING
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": self.workers, "threads_per_worker": 1, "processes": True,
            "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0",
            # The workers log as much as `distributed` does here: the CLI lowers it unless --verbose.
            "silence_logs": logging.ERROR if quiet else logging.INFO,
            "env": worker_environment(self.tf_threads, api_url, quiet=quiet)})


def worker_environment(tf_threads: int | None, api_url: str | None, *, quiet: bool = True) -> dict[str, str]:
    """Environment of a local cluster's worker processes, set before they import anything."""
    env = dict(QUIET_ENV)
    if tf_threads is not None:
        # TensorFlow 2.21 reads these when it creates its thread pools (OMP_NUM_THREADS it ignores;
        # it sizes the BLAS pools of numpy).
        env.update(TF_NUM_INTRAOP_THREADS=str(tf_threads), TF_NUM_INTEROP_THREADS=str(tf_threads),
                   OMP_NUM_THREADS=str(tf_threads))
    if quiet:
        # The flow prints one line per finished trial; the workers' own task-run lines go to the API only.
        env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_address(text: str) -> str:
    """A Dask scheduler address `tcp://HOST:PORT`, or a ClusterError saying what was wrong."""
    match = ADDRESS_PATTERN.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise ClusterError(f"expected a Dask scheduler address tcp://HOST:PORT (as `dask scheduler` prints it, "
                           f"for example tcp://10.0.0.5:8786), got {text!r}")
    return text.strip()


def require_scheduler(address: str, timeout: float = 10.0) -> list[str]:
    """The addresses of the workers of the Dask scheduler at `address`; a ClusterError if none answer."""
    address = parse_address(address)
    match = ADDRESS_PATTERN.match(address)
    host, port = match["host"].strip("[]"), int(match["port"])
    advice = (f"Start a scheduler with `dask scheduler --host {host} --port {port}` and workers with "
              f"`dask worker {address} --nthreads 1`, check the address, or leave out --dask-address "
              "(dask_address) to run the trials on this machine.")
    try:  # a refused connection fails at once; Dask's own client would retry until its timeout
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"No Dask scheduler answers at {address} ({exc.strerror or exc}). {advice}") from None
    from distributed import Client

    try:
        with Client(address, timeout=timeout, set_as_default=False) as client:
            workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"{address} accepts connections but does not answer as a Dask scheduler "
                           f"within {timeout:.0f} s ({exc}). {advice}") from None
    if not workers:
        raise ClusterError(f"The Dask scheduler at {address} has no workers, so no trial could run. "
                           f"Start some with `dask worker {address} --nthreads 1`, then run again.")
    return workers


def available_memory() -> float:
    """Bytes of memory available to new processes."""
    import psutil

    return psutil.virtual_memory().available


def plan_execution(workers: int | None, dask_address: str | None, *, pending: int,
                   cores: int | None = None) -> ExecutionPlan:
    """Turn the flow's parameters into a plan: an existing cluster, N local workers, or an automatic choice.

    `pending` is the number of trials that are not cached yet. `workers=0` runs trials in this process.
    The automatic choice starts one worker per core, fewer when there are fewer than
    MIN_TRIALS_PER_WORKER trials for each or too little memory, and none (this process) below two.
    """
    cores = cores or usable_cores()
    if workers is not None and dask_address:
        raise ClusterError(f"Give either workers (--workers, here {workers}) or dask_address (--dask-address, "
                           f"here {dask_address}), not both: a run uses one cluster.")
    if dask_address:
        try:
            address = parse_address(dask_address)
        except ClusterError as exc:
            raise ClusterError(f"dask_address (--dask-address): {exc}.") from None
        found = require_scheduler(address)
        return ExecutionPlan(kind="dask-cluster", workers=len(found), address=address, reason="chosen by dask_address")
    if workers is not None and workers < 0:
        raise ClusterError(f"workers (--workers) must be 0 (run trials in this process) or a number of local "
                           f"worker processes, but got {workers}.")
    if workers == 0:
        return ExecutionPlan(kind="in-process", workers=1, reason="chosen by workers=0")
    if workers is not None:
        return ExecutionPlan(kind="local-cluster", workers=workers, tf_threads=max(1, cores // workers),
                             reason=f"chosen by workers={workers}, on {cores} cores")
    memory_cap = max(1, int(available_memory() // WORKER_MEMORY))
    count = min(cores, pending // MIN_TRIALS_PER_WORKER, memory_cap)
    if count >= 2:
        return ExecutionPlan(kind="local-cluster", workers=count, tf_threads=max(1, cores // count),
                             reason=f"picked automatically: {pending} trials to train on {cores} cores; "
                                    "--workers 0 runs them in this process")
    why = ("fewer than 2 cores" if cores < 2 else "memory for only one worker" if memory_cap < 2 else
           f"only {pending} trial{'s' * (pending != 1)} to train, too few to repay starting a cluster")
    return ExecutionPlan(kind="in-process", workers=1,
                         reason=f"picked automatically: {why}; --workers N starts a local cluster")


@contextmanager
def prefect_api_for_workers(plan: ExecutionPlan) -> Iterator[str | None]:
    """Point Dask workers at this process's Prefect API, so none of them starts a temporary server of its own.

    With PREFECT_API_URL set (a Prefect server, a deployment run) the workers get it from the task
    context as is. Without it, the flow runs against a temporary server on 127.0.0.1; for the trials
    the URL of that server is made explicit, so it travels to the workers with each task.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if plan.kind == "in-process" or PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the flow's own temporary server: one per process
    server.start()
    host = ADDRESS_PATTERN.match(plan.address)["host"] if plan.address else "127.0.0.1"
    if host not in LOOPBACK_HOSTS:
        logging.getLogger(__name__).warning(
            "The Dask cluster at %s reports to this run's temporary Prefect API at %s, which only this "
            "machine can reach; for workers on other machines run a Prefect server and set PREFECT_API_URL.",
            plan.address, server.api_url)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server.api_url


def current_worker() -> str:
    """Where this code runs: the Dask worker's address, or `local:<hostname>:<pid>` outside Dask."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"local:{socket.gethostname()}:{os.getpid()}"
