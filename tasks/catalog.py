"""Data catalog: which files make up each data set, where they are found, and their checksums."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

import schemas
from nnstudy.errors import DataFormatError, DataIntegrityError, DataNotFoundError, DownloadError

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
Source = Literal["data-dir", "cache", "download"]
# Server answers worth retrying; other 4xx codes will not change on a retry.
RETRYABLE_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})
HEX_LENGTHS = {"md5": 32, "sha256": 64}


class CatalogFile(BaseModel):
    """One file of a data set format, with its checksum(s) and canonical URL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str
    name: str
    md5: str | None = None
    sha256: str | None = None
    url: str | None = None
    rows: int | dict[str, int] | None = None
    required: bool = True

    @field_validator("name")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        """Reject names that would escape the entry's directory."""
        if not value or "/" in value or "\\" in value or value in {".", ".."}:
            raise ValueError(f"must be a plain file name without folders, got {value!r}")
        return value

    @field_validator("md5", "sha256")
    @classmethod
    def _hex_digest(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Check that a digest is lowercase hex of the right length."""
        if value is None:
            return None
        value = value.strip().lower()
        size = HEX_LENGTHS[info.field_name]
        if len(value) != size or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"must be {size} hexadecimal digits, got {value!r}")
        return value

    @model_validator(mode="after")
    def _has_digest(self) -> CatalogFile:
        """Every file needs a checksum, or it could never be verified."""
        if self.md5 is None and self.sha256 is None:
            raise ValueError(f"file {self.name!r} needs an md5 or a sha256 checksum")
        return self


class CatalogFormat(BaseModel):
    """One on-disk layout of a data set (e.g. IDX files or one npz archive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    files: list[CatalogFile] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_roles(self) -> CatalogFormat:
        """Roles and names identify files, so both must be unique."""
        for attribute in ("role", "name"):
            values = [getattr(f, attribute) for f in self.files]
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"format {self.name!r} repeats file {attribute}(s) {duplicates}")
        return self

    @property
    def required_files(self) -> list[CatalogFile]:
        """The files that must all be present for this format to match."""
        return [f for f in self.files if f.required]

    @property
    def downloadable(self) -> bool:
        """True when every required file has a URL."""
        return all(f.url for f in self.required_files)

    def expected_rows(self) -> dict[str, int | None]:
        """Expected row count per role; an archive's splits become '<role>_<split>' keys."""
        rows: dict[str, int | None] = {}
        for cfile in self.files:
            if isinstance(cfile.rows, dict):
                rows.update({f"{cfile.role}_{split}": n for split, n in cfile.rows.items()})
            else:
                rows[cfile.role] = cfile.rows
        return rows


class CatalogEntry(BaseModel):
    """One variant of a data set, stored in a folder named after the entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dataset: Literal["adult", "boston", "mnist"]
    description: str
    subsample: bool = False
    formats: list[CatalogFormat] = Field(min_length=1)


class _CatalogDocument(BaseModel):
    """The whole catalog.yaml file."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    entries: list[CatalogEntry] = Field(min_length=1)


class ResolvedFile(BaseModel):
    """A file found on disk, with its actual digests and whether they match the catalog."""

    model_config = ConfigDict(frozen=True)

    role: str
    path: Path
    md5: str
    sha256: str
    bytes: int
    verified: bool
    # The catalog's expected records: the total for an archive, whose splits are in split_rows.
    rows: int | None = None
    split_rows: dict[str, int] | None = None

    def to_dict(self) -> dict:
        """JSON-ready form, paths as strings."""
        return self.model_dump(mode="json")


class ResolvedData(BaseModel):
    """Where a data set was found (or downloaded to) and which files make it up."""

    model_config = ConfigDict(frozen=True)

    entry: str
    dataset: str
    format: str
    source: Source
    directory: Path
    files: dict[str, ResolvedFile]
    subsample: bool = False

    @field_validator("files", mode="before")
    @classmethod
    def _files_by_role(cls, value: object) -> object:
        """Accept the list that to_dict() writes as well as a mapping by role."""
        if isinstance(value, list):
            return {item["role"]: item for item in value}
        return value

    def path(self, role: str) -> Path:
        """The path of the file with this role, or DataNotFoundError if it is absent."""
        if role not in self.files:
            raise DataNotFoundError(
                f"The {self.dataset} data in {self.directory} (entry '{self.entry}', format "
                f"'{self.format}') has no file with role '{role}'; it has {sorted(self.files)}. "
                "Check the catalog (schemas/catalog.yaml) and the files in that directory."
            )
        return self.files[role].path

    def to_dict(self) -> dict:
        """JSON-ready form, paths as strings, files as a list in catalog order (for the report)."""
        data = self.model_dump(mode="json")
        data["files"] = list(data["files"].values())
        return data


def default_catalog_path() -> Path:
    """The catalog.yaml shipped inside the schemas package."""
    return Path(schemas.__file__).parent / "catalog.yaml"


def load_catalog(path: Path | str | None = None) -> dict[str, CatalogEntry]:
    """Read and validate the data catalog; entries keyed by name, in file order."""
    path = Path(path) if path is not None else default_catalog_path()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataNotFoundError(
            f"The data catalog {path} does not exist. It ships with nnstudy in the schemas "
            "package; reinstall nnstudy or pass the path of a catalog file."
        ) from exc
    except yaml.YAMLError as exc:
        raise DataFormatError(
            f"The data catalog {path} is not valid YAML: {' '.join(str(exc).split())}. "
            "Fix the syntax at the line shown."
        ) from exc
    try:
        parsed = _CatalogDocument.model_validate(document)
    except ValidationError as exc:
        raise DataFormatError(
            f"The data catalog {path} is invalid: {_describe_validation(exc)}. "
            "Fix those fields (see the comments at the top of the file)."
        ) from exc
    names = [entry.name for entry in parsed.entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataFormatError(
            f"The data catalog {path} defines entries {duplicates} more than once; "
            "entry names must be unique because each names a folder."
        )
    return {entry.name: entry for entry in parsed.entries}


def _describe_validation(exc: ValidationError) -> str:
    """Pydantic errors as one line: location, message and offending value."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"]) or "(top level)"
        value = repr(error.get("input"))
        value = value if len(value) <= 80 else value[:77] + "..."
        parts.append(f"{location}: {error['msg']} (got {value})")
    return "; ".join(parts)


def file_digests(path: Path) -> tuple[str, str]:
    """Return the (md5, sha256) hex digests of a file, read in 1 MiB chunks."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def _mismatches(
    expected_md5: str | None, expected_sha256: str | None, md5: str, sha256: str
) -> list[str]:
    """Describe each catalog digest that differs from the actual one ('expected md5 X, got Y')."""
    pairs = [("md5", expected_md5, md5), ("sha256", expected_sha256, sha256)]
    return [f"expected {algo} {want}, got {got}" for algo, want, got in pairs if want and want != got]


def resolve_dataset(
    dataset: str,
    *,
    data_dir: Path | None,
    raw_dir: Path,
    allow_unverified: bool = False,
    accept_subsample: bool = False,
    allow_download: bool = True,
    timeout: float = 30,
    retries: int = 3,
    backoff: float = 1.0,
    catalog: dict[str, CatalogEntry] | None = None,
) -> ResolvedData:
    """Find a data set in data_dir, then the cache raw_dir, then download it into raw_dir."""
    catalog = catalog if catalog is not None else load_catalog()
    entries = _candidate_entries(catalog, dataset, accept_subsample)
    locations = _locations(data_dir, raw_dir)
    # Locations come first: an explicit --data-dir wins over anything else.
    for source, base in locations:
        for entry in entries:
            fmt = _matching_format(entry, base / entry.name)
            if fmt is not None:
                return _verify(entry, fmt, base / entry.name, source, catalog, allow_unverified)
    download_error: DownloadError | None = None
    if allow_download:
        options = dict(timeout=timeout, retries=retries, backoff=backoff)
        try:
            resolved = _download(entries, Path(raw_dir), catalog, allow_unverified, options)
        except DownloadError as exc:
            download_error, resolved = exc, None
        if resolved is not None:
            return resolved
    message = _not_found_message(dataset, catalog, entries, locations, allow_download, download_error)
    raise DataNotFoundError(message) from download_error


def _candidate_entries(
    catalog: dict[str, CatalogEntry], dataset: str, accept_subsample: bool
) -> list[CatalogEntry]:
    """Entries for a data set: full ones first, subsamples only when accepted."""
    entries = [e for e in catalog.values() if e.dataset == dataset]
    if not entries:
        known = sorted({e.dataset for e in catalog.values()})
        raise DataNotFoundError(
            f"Unknown data set {dataset!r}: the data catalog only knows {known}. "
            "Use one of those names in the study specification."
        )
    return sorted(
        (e for e in entries if accept_subsample or not e.subsample), key=lambda e: e.subsample
    )


def _locations(data_dir: Path | None, raw_dir: Path) -> list[tuple[Source, Path]]:
    """The local places to look, in order, without duplicates."""
    locations: list[tuple[Source, Path]] = []
    if data_dir is not None:
        locations.append(("data-dir", Path(data_dir)))
    if data_dir is None or Path(raw_dir).resolve() != Path(data_dir).resolve():
        locations.append(("cache", Path(raw_dir)))
    return locations


def _matching_format(entry: CatalogEntry, directory: Path) -> CatalogFormat | None:
    """The first format of the entry whose required files all exist in directory."""
    if not directory.is_dir():
        return None
    for fmt in entry.formats:
        if all((directory / f.name).is_file() for f in fmt.required_files):
            return fmt
    return None


def _verify(
    entry: CatalogEntry,
    fmt: CatalogFormat,
    directory: Path,
    source: Source,
    catalog: dict[str, CatalogEntry],
    allow_unverified: bool,
) -> ResolvedData:
    """Checksum every present file of the format and build the ResolvedData."""
    files: dict[str, ResolvedFile] = {}
    for cfile in fmt.files:
        path = directory / cfile.name
        if not path.is_file():
            continue
        md5, sha256 = file_digests(path)
        verified = _check_file(entry, cfile, path, md5, sha256, catalog, allow_unverified)
        files[cfile.role] = ResolvedFile(
            role=cfile.role, path=path, md5=md5, sha256=sha256, bytes=path.stat().st_size,
            verified=verified, **_row_fields(cfile.rows),
        )
    log.info("Using %s data from %s (entry %s, format %s, source %s)",
             entry.dataset, directory, entry.name, fmt.name, source)
    return ResolvedData(
        entry=entry.name, dataset=entry.dataset, format=fmt.name, source=source,
        directory=directory, files=files, subsample=entry.subsample,
    )


def _row_fields(rows: int | dict[str, int] | None) -> dict:
    """ResolvedFile's rows/split_rows from the catalog's rows value."""
    if isinstance(rows, dict):
        return {"rows": sum(rows.values()), "split_rows": dict(rows)}
    return {"rows": rows, "split_rows": None}


def _check_file(
    entry: CatalogEntry,
    cfile: CatalogFile,
    path: Path,
    md5: str,
    sha256: str,
    catalog: dict[str, CatalogEntry],
    allow_unverified: bool,
) -> bool:
    """True if the digests match; on mismatch raise, or warn and return False if allowed."""
    problems = _mismatches(cfile.md5, cfile.sha256, md5, sha256)
    if not problems:
        return True
    message = (
        f"Checksum mismatch for {path} (data set entry '{entry.name}', role '{cfile.role}'): "
        f"{'; '.join(problems)}. The file is corrupt, truncated or a different version"
        f"{_identity_hint(catalog, entry, md5, sha256)}."
    )
    if allow_unverified:
        log.warning("%s Using it anyway because unverified data is allowed.", message)
        return False
    raise DataIntegrityError(
        f"{message} Replace it with a good copy (delete it to have nnstudy download it again "
        "where a download exists); if you altered the file on purpose, rerun with "
        "--allow-unverified to use it anyway."
    )


def _identity_hint(
    catalog: dict[str, CatalogEntry], entry: CatalogEntry, md5: str, sha256: str
) -> str:
    """Name the catalog entry a misplaced file really belongs to, if any."""
    for other in catalog.values():
        for fmt in other.formats:
            for cfile in fmt.files:
                if other.name != entry.name and (cfile.md5 == md5 or cfile.sha256 == sha256):
                    return (
                        f": its checksum is that of {cfile.name} of entry '{other.name}', so it "
                        f"belongs in a folder named '{other.name}'"
                    )
    return ""


def _download(
    entries: list[CatalogEntry],
    raw_dir: Path,
    catalog: dict[str, CatalogEntry],
    allow_unverified: bool,
    options: dict,
) -> ResolvedData | None:
    """Download the first downloadable entry format into raw_dir; None if none is downloadable."""
    last_error: DownloadError | None = None
    for entry in entries:
        for fmt in (f for f in entry.formats if f.downloadable):
            directory = raw_dir / entry.name
            try:
                _download_format(fmt, directory, allow_unverified, options)
            except DownloadError as exc:
                last_error = exc
                continue
            return _verify(entry, fmt, directory, "download", catalog, allow_unverified)
    if last_error is not None:
        raise last_error
    return None


def _download_format(
    fmt: CatalogFormat, directory: Path, allow_unverified: bool, options: dict
) -> None:
    """Fetch the format's files that are missing or wrong; optional ones on a best-effort basis."""
    for cfile in (f for f in fmt.files if f.url):
        dest = directory / cfile.name
        if dest.is_file() and not _mismatches(cfile.md5, cfile.sha256, *file_digests(dest)):
            continue
        try:
            download_file(cfile.url, dest, md5=cfile.md5, sha256=cfile.sha256,
                          allow_unverified=allow_unverified, **options)
        except DownloadError as exc:
            if cfile.required:
                raise
            log.warning("Skipping optional file %s: %s", cfile.name, exc)


def _not_found_message(
    dataset: str,
    catalog: dict[str, CatalogEntry],
    entries: list[CatalogEntry],
    locations: list[tuple[Source, Path]],
    allow_download: bool,
    download_error: DownloadError | None,
) -> str:
    """One paragraph: where we looked, the layout expected, and how to fix it."""
    looked = [_describe_place(entry, base / entry.name) for _, base in locations for entry in entries]
    layouts = [
        " and ".join(f"DIR/{entry.name}/{f.name}" for f in fmt.required_files)
        for entry in entries for fmt in entry.formats
    ]
    if download_error is not None:
        download = f"Downloading failed: {download_error}"
    elif not allow_download:
        download = "Downloading was turned off."
    else:
        download = "No download source is known for it."
    return (
        f"Data set '{dataset}' was not found. Looked in: {'; '.join(looked)}. "
        f"Expected layout: {'; or '.join(layouts)}. {download} "
        f"{_subsample_hint(dataset, catalog, entries, locations)}"
        "Put the files in that layout under a directory DIR and pass it with --data-dir "
        "or set NNSTUDY_DATA_DIR."
    )


def _describe_place(entry: CatalogEntry, directory: Path) -> str:
    """Why a directory did not match: missing or which required files are absent."""
    if not directory.is_dir():
        return f"{directory} (does not exist)"
    missing = [
        f"format {fmt.name} lacks "
        + ", ".join(f.name for f in fmt.required_files if not (directory / f.name).is_file())
        for fmt in entry.formats
    ]
    return f"{directory} ({'; '.join(missing)})"


def _subsample_hint(
    dataset: str,
    catalog: dict[str, CatalogEntry],
    entries: list[CatalogEntry],
    locations: list[tuple[Source, Path]],
) -> str:
    """Mention a subsample that is present but was not accepted."""
    skipped = [e for e in catalog.values() if e.dataset == dataset and e not in entries]
    for _, base in locations:
        for entry in skipped:
            if _matching_format(entry, base / entry.name) is not None:
                return (
                    f"A subsample (entry '{entry.name}') is present at {base / entry.name}, but "
                    "this run needs the full data; choose a profile that accepts a subsample "
                    "(accept_mnist_subsample: true, e.g. --profile sample) to use it. "
                )
    return ""


def download_file(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 30,
    retries: int = 3,
    backoff: float = 1.0,
    allow_unverified: bool = False,
) -> Path:
    """Download url to dest atomically, verifying its checksum; retry with exponential backoff."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts = max(retries, 0) + 1
    last_error: Exception | None = None
    mismatch: list[str] = []
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            time.sleep(backoff * 2 ** (attempt - 2))
        part = dest.with_name(f"{dest.name}.part-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            got_md5, got_sha256 = _fetch(url, part, timeout)
            mismatch = _mismatches(md5, sha256, got_md5, got_sha256)
            if not mismatch or allow_unverified:
                _accept(url, part, dest, mismatch)
                return dest
            last_error = None
            log.warning("Attempt %d/%d: %s has the wrong checksum (%s)",
                        attempt, attempts, url, "; ".join(mismatch))
        except urllib.error.HTTPError as exc:
            exc.close()  # an HTTPError holds the open response; release its socket now
            if exc.code not in RETRYABLE_HTTP_CODES:
                raise _download_error(url, dest, attempt, exc) from exc
            last_error, mismatch = exc, []
            log.warning("Attempt %d/%d to download %s failed: %s", attempt, attempts, url, exc)
        except (urllib.error.URLError, HTTPException, OSError) as exc:
            last_error, mismatch = exc, []
            log.warning("Attempt %d/%d to download %s failed: %s", attempt, attempts, url, exc)
        finally:
            # After a successful os.replace the part file is gone and this is a no-op.
            part.unlink(missing_ok=True)
    if mismatch:
        raise DataIntegrityError(
            f"The file downloaded from {url} still had the wrong checksum after {attempts} attempt(s): "
            f"{'; '.join(mismatch)}. Nothing was written to {dest}. The server may serve a "
            "different version; fetch a good copy by hand and point --data-dir at it, or rerun "
            "with --allow-unverified to accept the downloaded file."
        )
    raise _download_error(url, dest, attempts, last_error)


class _IncompleteDownload(OSError):
    """The body was shorter than the Content-Length the server announced."""


def _fetch(url: str, part: Path, timeout: float) -> tuple[str, str]:
    """Stream url into the part file; return its (md5, sha256)."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": "nnstudy"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "xb") as out:
        declared = response.headers.get("Content-Length")
        while chunk := response.read(CHUNK_SIZE):
            out.write(chunk)
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    # urllib returns a short body silently when the connection drops mid-transfer.
    if declared is not None and declared.strip().isdigit() and size != int(declared):
        raise _IncompleteDownload(f"received {size} of the {int(declared)} bytes announced")
    return md5.hexdigest(), sha256.hexdigest()


def _accept(url: str, part: Path, dest: Path, mismatch: list[str]) -> None:
    """Move a finished download into place, warning if its checksum was wrong."""
    if mismatch:
        log.warning("Keeping %s from %s despite its checksum (%s) because unverified data "
                    "is allowed.", dest, url, "; ".join(mismatch))
    os.replace(part, dest)
    log.info("Downloaded %s to %s", url, dest)


def _download_error(url: str, dest: Path, attempts: int, error: Exception | None) -> DownloadError:
    """A DownloadError naming the url, the attempts and the last error."""
    return DownloadError(
        f"Could not download {url} to {dest} after {attempts} attempt(s); last error: {error}. "
        "Check the network connection and proxy settings, or fetch the file by hand and put "
        f"it at {dest} (or in a directory passed with --data-dir / NNSTUDY_DATA_DIR)."
    )
