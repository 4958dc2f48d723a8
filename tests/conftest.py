"""Shared pytest fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.helpers import MIRROR, MIRROR_MISSING

# Before Prefect or TensorFlow load: quiet TensorFlow, and keep Prefect's database and result
# storage out of the user's home so test runs never share (or hit) each other's caches.
os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PREFECT_HOME": tempfile.mkdtemp(prefix="nnstudy-test-prefect-")})


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    """The local data mirror, or a skip saying where it was looked for."""
    if not MIRROR.is_dir():
        pytest.skip(MIRROR_MISSING)
    return MIRROR


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API server on 127.0.0.1 with a temporary database, for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
