"""Test helpers: where the local data mirror is, and how a refused input is checked."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
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


@lru_cache(maxsize=1)
def _migrated_prefect_db() -> Path:
    """A Prefect database with every migration applied, made once per test session."""
    home = Path(tempfile.mkdtemp(prefix="nnstudy-test-prefect-template-"))
    atexit.register(shutil.rmtree, home, True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], env=env,
                   check=True, capture_output=True, timeout=300)
    return home / "prefect.db"


def migrated_state_root(home: Path) -> Path:
    """A new nnstudy state root whose Prefect database already exists, copied from a migrated template.

    A first run on a new state root spends 10-20 s migrating Prefect's database before its temporary
    server answers; tests about what nnstudy does, not about that, start from this instead. (Tests of a
    new state root itself, such as two runs racing to create it, do not use it.)
    """
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_prefect_db(), home / "prefect" / "prefect.db")
    return home


def state_root(home: Path) -> Path:
    """`home` as it is when it exists (a rerun on the same state root), else a new migrated one."""
    return home if home.exists() else migrated_state_root(home)
