"""Shared pytest fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before Prefect or TensorFlow load: quiet TensorFlow, and keep Prefect's database and result
# storage out of the user's home so test runs never share (or hit) each other's caches.
os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PREFECT_HOME": tempfile.mkdtemp(prefix="nnstudy-test-prefect-")})


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    """The local data mirror: $NNSTUDY_DATA_DIR, else ../shared/datasets next to the project."""
    configured = os.environ.get("NNSTUDY_DATA_DIR")
    path = Path(configured) if configured else Path(__file__).parents[2] / "shared" / "datasets"
    if not path.is_dir():
        pytest.skip(
            f"the local data mirror {path} does not exist; set NNSTUDY_DATA_DIR to a directory "
            "holding adult/, boston/ and mnist-5k/ to run this test"
        )
    return path


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API server on 127.0.0.1 with a temporary database, for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
