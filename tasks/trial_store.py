"""Where finished trials' results are kept: Prefect result storage whose files appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

from prefect.filesystems import LocalFileSystem

from tasks.results import write_bytes_atomic


class TrialStore(LocalFileSystem):
    """Local result storage that writes each record to a temporary file and renames it into place.

    Prefect's own LocalFileSystem writes in place, so a run killed mid-write, or a second run reading
    the same key meanwhile, would see half a record.
    """

    _block_type_name = "nnstudy trial store"

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        """Write one result record atomically (Prefect passes _sync to pick its sync or async method)."""
        target: Path = self._resolve_path(path)
        if target.exists() and not target.is_file():
            raise ValueError(f"Path {target} already exists and is not a file.")
        return str(write_bytes_atomic(target, content))

    async def awrite_path(self, path: str, content: bytes) -> str:
        """The async twin of write_path (a record is small: the write itself is quick)."""
        return self.write_path(path, content)


def trial_store(directory: Path) -> TrialStore:
    """The trial store rooted at the state root's trials folder."""
    return TrialStore(basepath=str(directory))
