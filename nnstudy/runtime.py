"""Process set-up shared by the CLI, deployments and workers: quiet libraries, one state root."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
from pathlib import Path
from typing import IO

from nnstudy.locks import try_lock

# TensorFlow prints oneDNN/absl notices on import unless both are set before it loads.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


class _DropThreadTimeoutNotice(logging.Filter):
    """Drops Prefect's per-task notice that a timeout in a worker thread waits for blocking calls to return.

    Training returns to Python after every batch, so a training task's timeout does interrupt it; the notice
    would otherwise repeat once per trial.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Timeout of %s seconds configured")
                    and "worker thread" in record.msg)


def quiet_libraries() -> None:
    """Keep TensorFlow, Great Expectations and absl noise out of the terminal (call before importing them)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("tensorflow", "absl", "great_expectations", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    task_runs = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _DropThreadTimeoutNotice) for f in task_runs.filters):
        task_runs.addFilter(_DropThreadTimeoutNotice())


# Lock handles held for the life of the process: a lock ends when its process does, however it ends.
_HELD_LOCKS: list[IO[str]] = []


def configure_tf_threads(threads: int | None) -> None:
    """Give TensorFlow `threads` intra- and inter-op threads in this process; None keeps its default (every core).

    Call before the first TensorFlow op: once its thread pools exist they keep their size, and a different
    request is only logged. A Dask worker of a local cluster also gets the same numbers through
    TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS in its environment.
    """
    if threads is None:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:  # already initialised with other sizes
        logging.getLogger(__name__).warning("TensorFlow keeps its thread pools: %s", exc)


def use_state_root(home: Path) -> None:
    """Keep Prefect's home (database, result storage) and Keras' config inside nnstudy's state root."""
    home = home.resolve()
    if "PREFECT_HOME" not in os.environ:
        os.environ["PREFECT_HOME"] = str(_prefect_home(home))
    # Keras writes keras.json under KERAS_HOME (default ~/.keras) on first import.
    os.environ.setdefault("KERAS_HOME", str(home / "keras"))
    # The first ephemeral start migrates a new database: slower than Prefect's 20 s default on 2 cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _prefect_home(home: Path) -> Path:
    """home/prefect for the first run on a state root; a private folder for each run started beside it.

    Two temporary Prefect servers on one SQLite database race while creating it and then contend for its
    write lock, so a concurrent run gets its own database under home/prefect-runs/ (removed when it ends).
    Trial results stay shared: they live in home/trials, not in Prefect's database.
    """
    shared = home / "prefect"
    if (handle := try_lock(home / "prefect.lock")) is not None:
        _HELD_LOCKS.append(handle)
        shared.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level itself
        return shared
    runs = home / "prefect-runs"
    for stale in runs.glob("*/"):  # left by runs that were killed: their process and lock are gone
        if not _process_alive(stale.name) and (lock := try_lock(stale / "run.lock")) is not None:
            lock.close()
            shutil.rmtree(stale, ignore_errors=True)
    private = runs / str(os.getpid())
    _HELD_LOCKS.append(try_lock(private / "run.lock"))
    # Registered before Prefect registers its server's stop, so it runs after the server has stopped.
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    return private


def _process_alive(pid: str) -> bool:
    """True if a process with this id (a folder name) exists."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class _ConsoleFilter(logging.Filter):
    """Drops per-task-run state chatter and tracebacks from the console; the Prefect API still gets them."""

    def __init__(self, verbose: bool, debug: bool) -> None:
        super().__init__()
        self.verbose, self.debug = verbose, debug

    def filter(self, record: logging.LogRecord) -> bool:
        if (not self.verbose and record.name == "prefect.task_runs" and record.levelno < logging.WARNING
                and record.getMessage().startswith("Finished in state")):
            return False
        if not self.debug and record.exc_info:
            record.exc_info, record.exc_text = None, None
        return True


def tidy_console(verbose: bool = False, debug: bool = False) -> None:
    """Install the console filter on the root handlers that Prefect set up."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_ConsoleFilter(verbose, debug))


def quiet_dask(verbose: bool = False) -> None:
    """Dask logs every worker's start and stop at INFO: keep that for --verbose (local workers follow suit)."""
    level = "info" if verbose else "error"
    # distributed sets its logger's level from its config when first imported; the environment carries
    # the setting into that config and into the processes of a local cluster.
    os.environ["DASK_LOGGING__DISTRIBUTED"] = level
    logging.getLogger("distributed").setLevel(level.upper())
