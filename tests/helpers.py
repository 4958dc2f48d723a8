"""Test helpers: where the local data mirror is, and how a refused input is checked."""

import os
from pathlib import Path

MIRROR = Path(os.environ.get("NNSTUDY_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
MIRROR_MISSING = (f"the local data mirror {MIRROR} does not exist; set NNSTUDY_DATA_DIR to a directory "
                  "holding adult/, boston/ and mnist-5k/ to run this test")


def assert_refused(read, path: Path, fragments: list[str], error: type[Exception]) -> str:
    """`read(path)` raises `error` whose message names the file and contains every fragment."""
    import pytest

    with pytest.raises(error) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return message
