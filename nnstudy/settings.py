"""Run settings: where data, caches and outputs live. Read once, at the edge, then passed along."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

HOME_ENV = "NNSTUDY_HOME"
DATA_DIR_ENV = "NNSTUDY_DATA_DIR"


class RunSettings(BaseModel):
    """Resolved paths and switches of one study run."""

    model_config = ConfigDict(frozen=True)

    home: Path
    data_dir: Path | None
    out_dir: Path
    allow_unverified: bool = False
    allow_download: bool = True

    @property
    def raw_dir(self) -> Path:
        """Verified downloads, immutable once written."""
        return self.home / "raw"

    @property
    def cache_dir(self) -> Path:
        """Preprocessed Parquet, keyed by content digests."""
        return self.home / "cache"

    @property
    def trial_dir(self) -> Path:
        """Finished trials' results, one file per cache key: what makes a rerun skip them."""
        return self.home / "trials"

    @classmethod
    def resolve(cls, *, profile: str, data_dir: str | None = None, out: str | None = None,
                home: str | None = None, allow_unverified: bool = False,
                environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> RunSettings:
        """Explicit arguments first, then NNSTUDY_HOME / NNSTUDY_DATA_DIR, then defaults under the cwd."""
        environ = os.environ if environ is None else environ
        cwd = cwd or Path.cwd()
        home_path = Path(home or environ.get(HOME_ENV) or cwd / "data")
        data = data_dir or environ.get(DATA_DIR_ENV) or None
        return cls(home=(cwd / home_path).resolve(),
                   data_dir=(cwd / data).resolve() if data else None,
                   out_dir=(cwd / (out or Path("reports") / profile)).resolve(),
                   allow_unverified=allow_unverified)
