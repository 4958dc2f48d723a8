"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
