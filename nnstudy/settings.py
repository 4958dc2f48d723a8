"""Run settings: where data, caches and outputs live. Read once, at the edge, then passed along."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from nnstudy.errors import SettingsError

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
        data = data_dir or environ.get(DATA_DIR_ENV) or None
        home_value, home_source = (home, "home") if home else (environ.get(HOME_ENV), HOME_ENV)
        return cls(home=_writable_path(cwd, home_value or "data", home_source),
                   data_dir=(cwd / data).resolve() if data else None,
                   out_dir=_writable_path(cwd, out or str(Path("reports") / profile), "--out"),
                   allow_unverified=allow_unverified)


def _writable_path(cwd: Path, value: str | Path, source: str) -> Path:
    """Resolve an output or state path; a relative one must stay inside the working directory.

    A relative path that climbs out with '..' (or through a link) is more likely a mistake than a wish
    to write elsewhere; an absolute path says so explicitly and is accepted as given. Input paths
    (--data-dir) are only read, so they are not restricted.
    """
    path = Path(value).expanduser()
    resolved = (cwd / path).resolve()
    if not path.is_absolute() and not resolved.is_relative_to(cwd.resolve()):
        raise SettingsError(
            f"The output path {str(value)!r} (from {source}) resolves to {resolved}, outside the working "
            f"directory {cwd.resolve()}; nnstudy writes outside it only when told so explicitly. Give "
            f"the absolute path ({resolved}) if that is where you mean to write, or a path inside {cwd}."
        )
    return resolved
