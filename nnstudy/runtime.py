"""Process set-up shared by the CLI, deployments and workers: quiet libraries, one state root."""

from __future__ import annotations

import logging
import os
from pathlib import Path

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
