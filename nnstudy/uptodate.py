"""Is the report in an output folder already what a run would write? Answered before Prefect starts.

A finished run leaves a stamp, `<out>/.nnstudy-run.json`, with

- `key`: a digest of everything the outputs depend on: the trials (study file, profile, data sets,
  seeds), the engine, `--allow-unverified`, the data folder's listing (names, sizes, modification
  times), nnstudy's own code and the versions of the packages that compute the results;
- `inputs`: the sha256 of each data file the run read;
- `outputs`: the sha256 of each file it wrote in the output folder.

`nnstudy run` recomputes the key, re-hashes the inputs and outputs, and when all agree it prints where
the report is and stops: no Prefect server, no TensorFlow, about a second. Anything else (a changed
file, a deleted figure, an edited study file, another package version, no stamp) runs the flow as usual,
which still reuses every cached step. `--force` runs the flow regardless. Deployments and direct calls
of the flow always run it; they also write the stamp.

This module imports nothing heavy: it is on the path of every `nnstudy run`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from nnstudy.digests import sha256_file

STAMP_NAME = ".nnstudy-run.json"
STAMP_VERSION = 1
# Code whose change can change the outputs, and packages whose version can.
CODE_PACKAGES = ("nnstudy", "tasks", "flows", "schemas")
CODE_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".csv"}
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "pandas", "pyarrow", "scikit-learn", "scipy",
            "great-expectations", "matplotlib", "prefect")
# Written in the output folder by a run but not part of its outputs.
NOT_OUTPUTS = {STAMP_NAME, ".nnstudy.lock"}


def _files_under(folder: Path, suffixes: set[str] | None = None) -> Iterable[Path]:
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if suffixes is None or path.suffix in suffixes:
                yield path


def code_digest() -> str:
    """sha256 over the source and data files of nnstudy's packages, by path relative to each package."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        folder = Path(spec.origin).parent if spec and spec.origin else None
        if folder is None:
            continue
        for path in _files_under(folder, CODE_SUFFIXES):
            digest.update(f"{package}/{path.relative_to(folder).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of the named distributions; those not installed are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def folder_listing(folder: Path | None) -> str | None:
    """Digest of a data folder's file names, sizes and modification times (its contents are not read)."""
    if folder is None:
        return None
    if not folder.is_dir():
        return "absent"
    digest = hashlib.sha256()
    for path in _files_under(folder):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def request_key(*, profile: str, datasets: list[str] | None, seeds: list[int] | None, study_file: str | None,
                engine: str, allow_unverified: bool, data_dir: Path | None) -> dict:
    """What the outputs of a run depend on, before any data is read."""
    from schemas.study import load_study

    study_path = Path(study_file) if study_file else None
    trials = load_study(study_path).trials(profile, datasets, seeds)
    return {"stamp_version": STAMP_VERSION, "profile": profile,
            "trials": hashlib.sha256("\n".join(sorted(t.digest() for t in trials)).encode()).hexdigest(),
            "n_trials": len(trials),
            "study_file": sha256_file(study_path) if study_path else "built-in",
            "engine": engine, "allow_unverified": allow_unverified,
            "data_dir": str(data_dir) if data_dir else None, "data_dir_listing": folder_listing(data_dir),
            "code": code_digest(), "packages": package_versions()}


def output_digests(out_dir: Path) -> dict[str, str]:
    return {path.relative_to(out_dir).as_posix(): sha256_file(path) for path in _files_under(out_dir)
            if path.name not in NOT_OUTPUTS and not path.name.endswith(".tmp")}


def write_stamp(out_dir: Path, key: dict, inputs: Iterable[Path], run: dict) -> Path:
    """Record that the files now in `out_dir` are the outputs for `key` (call it last, under the output lock)."""
    from tasks.results import write_text_atomic

    stamp = {"key": key, "inputs": {str(path): sha256_file(path) for path in sorted(set(inputs))},
             "outputs": output_digests(out_dir), "run": run}
    return write_text_atomic(out_dir / STAMP_NAME, json.dumps(stamp, indent=2, sort_keys=True))


def why_stale(out_dir: Path, key: dict) -> str | None:
    """None when the outputs in `out_dir` are up to date for `key`, else the first reason they are not."""
    path = out_dir / STAMP_NAME
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
        recorded, inputs, outputs = stamp["key"], stamp["inputs"], stamp["outputs"]
    except FileNotFoundError:
        return "no earlier run wrote to this folder"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path} is unreadable"
    changed = sorted(name for name in set(key) | set(recorded) if key.get(name) != recorded.get(name))
    if changed:
        return "changed since the last run: " + ", ".join(changed)
    for name, digest in inputs.items():
        if not Path(name).is_file() or sha256_file(Path(name)) != digest:
            return f"the data file {name} changed"
    now = output_digests(out_dir)
    for name in sorted(set(now) | set(outputs)):
        if now.get(name) != outputs.get(name):
            return f"the output {out_dir / name} was changed, added or removed"
    return None


def last_run(out_dir: Path) -> dict:
    """The `run` record of the stamp (started, wall time, trials)."""
    return json.loads((out_dir / STAMP_NAME).read_text(encoding="utf-8")).get("run", {})
