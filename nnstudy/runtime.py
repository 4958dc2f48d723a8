"""Process set-up shared by the CLI, deployments and workers: quiet libraries, one state root."""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# TensorFlow prints oneDNN/absl notices on import unless both are set before it loads.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def quiet_libraries() -> None:
    """Keep TensorFlow, Great Expectations and absl noise out of the terminal (call before importing them)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("tensorflow", "absl", "great_expectations", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)


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


class _PerThreadRandom:
    """Stands in for the `random` module inside Keras' seed generator: a thread in `keras_seed_scope` draws
    from its own generator, every other thread from the shared one."""

    def __init__(self, shared) -> None:
        self.shared, self.local = shared, threading.local()

    def __getattr__(self, name: str):
        return getattr(getattr(self.local, "generator", None) or self.shared, name)


_PATCH_LOCK = threading.Lock()


@contextmanager
def keras_seed_scope(seed: int) -> Iterator[None]:
    """Make a trial's initial weights depend on its seed only, whatever other threads do.

    Keras draws the seeds of unseeded initialisers from Python's process-wide `random`, which
    `keras.utils.set_random_seed` seeds; but Dask (sampling in `sizeof`) and Prefect (retry jitter)
    draw from it too, in other threads, and one draw of theirs between the seeding and the model's
    build changes the weights. Inside this scope the calling thread's Keras draws come from its own
    `random.Random(seed)`: the numbers a process with nothing else running would draw.
    """
    from keras.src.random import seed_generator

    with _PATCH_LOCK:
        if not isinstance(seed_generator.python_random, _PerThreadRandom):
            seed_generator.python_random = _PerThreadRandom(seed_generator.python_random)
    local = seed_generator.python_random.local
    local.generator = random.Random(seed)
    try:
        yield
    finally:
        local.generator = None


def use_state_root(home: Path) -> None:
    """Keep Prefect's home (database, result storage) and Keras' config inside nnstudy's state root."""
    prefect_home = home.resolve() / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level itself
    os.environ.setdefault("PREFECT_HOME", str(prefect_home))
    # Keras writes keras.json under KERAS_HOME (default ~/.keras) on first import.
    os.environ.setdefault("KERAS_HOME", str(home.resolve() / "keras"))
    # The first ephemeral start migrates a new database: slower than Prefect's 20 s default on 2 cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


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
