"""Parsers for the raw data files (UCI text, IDX, npz); pure readers without checksum logic."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nnstudy.errors import DataFormatError, DataNotFoundError
from tasks.catalog import ResolvedData

log = logging.getLogger(__name__)

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]
ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
BOSTON_COLUMNS = [
    "CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B",
    "LSTAT", "MEDV",
]
BOSTON_INTEGER = ["CHAS", "RAD"]
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_DTYPES = {0x08: np.uint8}
GZIP_MAGIC = b"\x1f\x8b"
MNIST_IDX_ROLES = {
    "x_train": "train_images", "y_train": "train_labels",
    "x_test": "test_images", "y_test": "test_labels",
}


@dataclass(frozen=True)
class RawData:
    """Parsed raw data: tables for adult/boston, arrays for mnist."""

    dataset: str
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _require_file(path: Path) -> None:
    """Turn a missing file into DataNotFoundError rather than a format problem."""
    if not path.is_file():
        raise DataNotFoundError(
            f"{path} does not exist. Check the path, or resolve the data set again so that "
            "nnstudy finds or downloads its files."
        )


def _read_bytes(path: Path) -> bytes:
    """Read a whole file after checking that it exists."""
    _require_file(path)
    return path.read_bytes()


def _field_of(prefix: bytes, columns: list[str], separator: str | None) -> str:
    """'column 'x' (field n)' for the field in which a line's `prefix` ends."""
    if separator is None:
        index = len(prefix.split()) - (0 if prefix[-1:].isspace() or not prefix else 1)
    else:
        index = prefix.count(separator.encode())
    name = repr(columns[index]) if index < len(columns) else "beyond the last column"
    return f"column {name} (field {index + 1})"


def _read_text(path: Path, columns: list[str], separator: str | None) -> str:
    """Decode a file as UTF-8 (ASCII in practice), naming the line, field and value of bad bytes."""
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8", errors="strict")
        bad, problem = -1, ""
    except UnicodeDecodeError as exc:
        bad, problem = exc.start, "cannot be decoded as UTF-8/ASCII"
    # NUL bytes decode as UTF-8 but never occur in these files: UTF-16 or binary content.
    nul = data.find(b"\x00", 0, bad if bad >= 0 else len(data))
    if nul >= 0:
        bad, problem = nul, "is a NUL byte (the file is UTF-16 or binary)"
    if bad < 0:
        return text
    newline = b"\n"
    line_start = data.rfind(newline, 0, bad) + 1
    line_end = data.find(newline, bad) % (len(data) + 1)  # -1 (last line) becomes len(data)
    excerpt = data[max(line_start, bad - 30): min(line_end, bad + 30)].decode("utf-8", "backslashreplace")
    where = f"line {data.count(newline, 0, bad) + 1}, {_field_of(data[line_start:bad], columns, separator)}"
    raise DataFormatError(
        f"{path} is not a UTF-8/ASCII text file: byte {data[bad]:#04x} at byte offset {bad} ({where}) "
        f"{problem}; the text around it reads {excerpt!r}. The file is in another encoding, compressed or "
        "corrupt; replace it with the original (plain ASCII) file."
    )


def _data_lines(text: str, skip_prefix: str | None = None) -> list[tuple[int, str]]:
    """(1-based line number, line) for each non-blank line, skipping comment-like lines."""
    lines = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip() or (skip_prefix and line.startswith(skip_prefix)):
            continue
        lines.append((number, line))
    return lines


def _check_field_counts(
    path: Path, lines: list[tuple[int, str]], columns: list[str], separator: str | None
) -> None:
    """Check that every line has one field per column, and that there are lines."""
    if not lines:
        raise DataFormatError(
            f"{path} contains no data rows: it holds {path.stat().st_size} bytes, none of them a "
            f"line of the {len(columns)} fields {columns[0]!r} to {columns[-1]!r} (it is empty or "
            "holds only blank or '|' lines). Replace it with the original file."
        )
    expected = len(columns)
    for number, line in lines:
        # str.count is much faster than splitting, which matters for adult's 48,842 lines.
        found = line.count(separator) + 1 if separator else len(line.split())
        if found != expected:
            raise DataFormatError(
                f"{path}, line {number}: found {found} fields, expected {expected} "
                f"({_field_count_problem(line, columns, separator, found)}). The line starts with "
                f"{line[:80]!r}. A column is missing or extra, or the line is cut; fix or remove "
                "that line, or replace the file with the original."
            )


def _field_count_problem(line: str, columns: list[str], separator: str | None, found: int) -> str:
    """Which column has no value, or which value has no column."""
    if found < len(columns):
        return f"the line ends before column {columns[found]!r} (field {found + 1})"
    fields = line.split(separator) if separator else line.split()
    extra = fields[len(columns)].strip()
    return f"field {len(columns) + 1} holds {extra!r} after the last column {columns[-1]!r}"


def _numeric(
    values: pd.Series, path: Path, line_numbers: list[int], integer: bool
) -> pd.Series:
    """Convert a text column to int64/float64, naming the line of the first bad value."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = ~np.isfinite(numbers.to_numpy())
    if integer:
        bad |= numbers.to_numpy() % 1 != 0
    if bad.any():
        row = int(np.argmax(bad))
        kind = "an integer" if integer else "a finite number"
        raise DataFormatError(
            f"{path}, line {line_numbers[row]}: column '{values.name}' holds "
            f"{values.iloc[row]!r}, which is not {kind}. Fix that value, or replace the file "
            "with the original."
        )
    return numbers.astype("int64") if integer else numbers


def _text_table(lines: list[tuple[int, str]], columns: list[str], separator: str) -> pd.DataFrame:
    """Parse checked lines into a frame of stripped text columns; no quoting, no NA guessing."""
    frame = pd.read_csv(
        io.StringIO("\n".join(line for _, line in lines)), sep=separator, header=None,
        names=columns, dtype=str, quoting=csv.QUOTE_NONE, na_filter=False, engine="c",
    )
    return frame.apply(lambda column: column.str.strip())


def read_adult(path: Path) -> pd.DataFrame:
    """Read adult.data or adult.test as published by UCI; labels without the test file's dot."""
    path = Path(path)
    lines = _data_lines(_read_text(path, ADULT_COLUMNS, ","), skip_prefix="|")
    _check_field_counts(path, lines, ADULT_COLUMNS, ",")
    frame = _text_table(lines, ADULT_COLUMNS, ",")
    line_numbers = [number for number, _ in lines]
    for column in ADULT_NUMERIC:
        frame[column] = _numeric(frame[column], path, line_numbers, integer=True)
    # adult.test writes '<=50K.' / '>50K.'; one spelling for both files.
    frame["income"] = frame["income"].str.removesuffix(".")
    return frame


def read_boston(path: Path) -> pd.DataFrame:
    """Read housing.data: 14 whitespace-separated numbers per line, CHAS and RAD as integers."""
    path = Path(path)
    lines = _data_lines(_read_text(path, BOSTON_COLUMNS, None))
    _check_field_counts(path, lines, BOSTON_COLUMNS, None)
    rows = [line.split() for _, line in lines]
    frame = pd.DataFrame(rows, columns=BOSTON_COLUMNS)
    line_numbers = [number for number, _ in lines]
    for column in BOSTON_COLUMNS:
        integer = column in BOSTON_INTEGER
        frame[column] = _numeric(frame[column], path, line_numbers, integer=integer)
    return frame


def _idx_payload(path: Path) -> bytes:
    """The IDX bytes of a file, gunzipped when it starts with the gzip magic."""
    data = _read_bytes(path)
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(
            f"{path} is a corrupt or truncated gzip file ({exc}). Delete it and fetch it again."
        ) from exc


def _idx_dims(path: Path, data: bytes) -> tuple[int, ...]:
    """Check the IDX magic number and return the dimensions from the header."""
    magic = data[:4]
    if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[3] == 0:
        raise DataFormatError(
            f"{path} is not an IDX file: it starts with bytes 0x{magic.hex()}, expected a magic "
            "number like 0x00000801 (labels) or 0x00000803 (images): two zero bytes, a data "
            "type code and the number of dimensions. Replace it with the original MNIST file."
        )
    if magic[2] not in IDX_DTYPES:
        raise DataFormatError(
            f"{path} has IDX data type code {magic[2]:#04x} (magic 0x{magic.hex()}); only "
            "0x08 (unsigned byte), the type of the MNIST files, is supported."
        )
    header = 4 + 4 * magic[3]
    if len(data) < header:
        raise DataFormatError(
            f"{path} is truncated: its IDX header announces {magic[3]} dimensions "
            f"({header} header bytes) but the file holds only {len(data)} bytes. "
            "Delete it and fetch it again."
        )
    return struct.unpack(f">{magic[3]}I", data[4:header])


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into an array shaped as its header says."""
    path = Path(path)
    data = _idx_payload(path)
    dims = _idx_dims(path, data)
    offset = 4 + 4 * len(dims)
    expected, actual = math.prod(dims), len(data) - offset
    if actual != expected:
        problem = "too short" if actual < expected else "too long"
        raise DataFormatError(
            f"{path} is {problem}: its IDX header gives dimensions {list(dims)}, i.e. "
            f"{expected} data bytes, but {actual} bytes follow the header. The file is "
            "truncated or corrupt; delete it and fetch it again."
        )
    dtype = IDX_DTYPES[data[2]]
    # frombuffer over bytes is read-only; copy so callers may modify the array.
    return np.frombuffer(data, dtype=dtype, count=expected, offset=offset).reshape(dims).copy()


def read_mnist_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the Keras mnist.npz archive into x_train, y_train, x_test, y_test."""
    path = Path(path)
    _require_file(path)
    # Our own handle: np.load leaks the file it opened when the zip turns out to be corrupt.
    with open(path, "rb") as handle:
        try:
            archive = np.load(handle, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise _npz_error(path, f"is not a readable .npz (zip) archive ({exc})") from exc
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise _npz_error(path, "holds a single .npy array, not an .npz archive")
        with archive:
            return _npz_arrays(path, archive)


def _npz_arrays(path: Path, archive: np.lib.npyio.NpzFile) -> dict[str, np.ndarray]:
    """The four MNIST arrays of an open archive."""
    missing = [key for key in MNIST_KEYS if key not in archive.files]
    if missing:
        raise _npz_error(
            path, f"lacks the arrays {missing}; it holds {sorted(archive.files)}, expected "
            f"{list(MNIST_KEYS)}"
        )
    try:
        return {key: archive[key] for key in MNIST_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _npz_error(path, f"has a corrupt array ({exc})") from exc


def _npz_error(path: Path, problem: str) -> DataFormatError:
    """A DataFormatError for the MNIST archive with the usual remedy."""
    return DataFormatError(
        f"{path} {problem}. Delete it and fetch it again (the Keras mnist.npz archive)."
    )


def _check_mnist(arrays: dict[str, np.ndarray], sources: dict[str, str]) -> None:
    """Images must be (N, rows, cols), labels (N,), with N equal for each split."""
    for split in ("train", "test"):
        x_key, y_key = f"x_{split}", f"y_{split}"
        images, labels = arrays[x_key], arrays[y_key]
        if images.ndim != 3 or labels.ndim != 1:
            raise DataFormatError(
                f"MNIST {split} arrays have shapes {images.shape} ({sources[x_key]}) and "
                f"{labels.shape} ({sources[y_key]}); expected (N, 28, 28) images and (N,) "
                "labels. Replace the files with the originals."
            )
        if len(images) != len(labels):
            raise DataFormatError(
                f"MNIST {split} images and labels disagree: {len(images)} images in "
                f"{sources[x_key]} but {len(labels)} labels in {sources[y_key]}. The two "
                "files come from different versions; use a matching pair."
            )


def _load_mnist(resolved: ResolvedData) -> dict[str, np.ndarray]:
    """MNIST arrays from either the npz archive or the four IDX files."""
    if resolved.format == "npz":
        path = resolved.path("archive")
        arrays = read_mnist_npz(path)
        sources = {key: f"{path}, array {key}" for key in MNIST_KEYS}
    elif resolved.format == "idx":
        paths = {key: resolved.path(role) for key, role in MNIST_IDX_ROLES.items()}
        arrays = {key: read_idx(path) for key, path in paths.items()}
        sources = {key: str(path) for key, path in paths.items()}
    else:
        raise DataFormatError(
            f"MNIST in {resolved.directory} has format '{resolved.format}', which nnstudy cannot "
            "read; supported formats are 'npz' and 'idx'. Check schemas/catalog.yaml."
        )
    _check_mnist(arrays, sources)
    return arrays


def load_raw(resolved: ResolvedData) -> RawData:
    """Parse the files of a resolved data set into data frames or arrays."""
    if resolved.dataset == "adult":
        frames = {role: read_adult(resolved.path(role)) for role in ("train", "test")}
        raw = RawData(dataset="adult", frames=frames)
    elif resolved.dataset == "boston":
        raw = RawData(dataset="boston", frames={"data": read_boston(resolved.path("data"))})
    elif resolved.dataset == "mnist":
        raw = RawData(dataset="mnist", arrays=_load_mnist(resolved))
    else:
        raise DataFormatError(
            f"Data set '{resolved.dataset}' in {resolved.directory} has no reader; nnstudy reads "
            "adult, boston and mnist."
        )
    sizes = {k: len(v) for k, v in {**raw.frames, **raw.arrays}.items()}
    log.info("Loaded %s from %s: %s", resolved.dataset, resolved.directory, sizes)
    return raw
