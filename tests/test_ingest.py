"""Tests for the raw-format parsers in tasks.ingest."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnstudy.errors import DataFormatError, DataNotFoundError
from tasks.catalog import ResolvedData, ResolvedFile, file_digests, resolve_dataset
from tasks.ingest import (
    ADULT_COLUMNS,
    ADULT_NUMERIC,
    BOSTON_COLUMNS,
    RawData,
    load_raw,
    read_adult,
    read_boston,
    read_idx,
    read_mnist_npz,
)
from tests.helpers import assert_refused

ADULT_DATA = (
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, "
    "Male, 2174, 0, 40, United-States, <=50K\n"
    "50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, "
    "White, Male, 0, 0, 13, United-States, >50K\n"
    "54, ?, 180211, Some-college, 10, Married-civ-spouse, ?, Husband, Asian-Pac-Islander, Male, "
    "0, 0, 60, ?, >50K\n"
    "\n"
)
ADULT_TEST = (
    "|1x3 Cross validator\n"
    "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, "
    "0, 0, 40, United-States, <=50K.\n"
    "38, Private, 89814, HS-grad, 9, Married-civ-spouse, Farming-fishing, Husband, White, Male, "
    "0, 0, 50, United-States, >50K.\n"
    "\n"
)
ADULT_GOOD_LINE = ADULT_DATA.splitlines()[0]
BOSTON_DATA = (
    " 0.00632  18.00   2.310  0  0.5380  6.5750  65.20  4.0900   1  296.0  15.30 396.90   4.98"
    "  24.00\n"
    " 0.02731   0.00   7.070  0  0.4690  6.4210  78.90  4.9671   2  242.0  17.80 396.90   9.14"
    "  21.60\n"
)
BOSTON_GOOD_LINE = BOSTON_DATA.splitlines()[0]


def write(path: Path, content: str | bytes) -> Path:
    """Write text or bytes to path and return it."""
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    """Serialise an array in IDX format (magic, big-endian dims, payload)."""
    header = struct.pack(">BBBB", 0, 0, dtype_code, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in .npy format, as bytes."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def mnist_arrays(n_train: int = 4, n_test: int = 3) -> dict[str, np.ndarray]:
    """Tiny deterministic MNIST-like arrays."""
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz",
}
IDX_ROLES = {
    "x_train": "train_images", "y_train": "train_labels",
    "x_test": "test_images", "y_test": "test_labels",
}


def resolved_for(dataset: str, fmt: str, directory: Path, files: dict[str, str]) -> ResolvedData:
    """A ResolvedData for files already written to directory (role -> file name)."""
    resolved = {}
    for role, name in files.items():
        path = directory / name
        md5, sha256 = file_digests(path)
        resolved[role] = ResolvedFile(role=role, path=path, md5=md5, sha256=sha256,
                                      bytes=path.stat().st_size, verified=True)
    return ResolvedData(entry=dataset, dataset=dataset, format=fmt, source="data-dir",
                        directory=directory, files=resolved)


# ---------------------------------------------------------------- adult


def test_read_adult_training_file(tmp_path: Path) -> None:
    frame = read_adult(write(tmp_path / "adult.data", ADULT_DATA))
    assert list(frame.columns) == ADULT_COLUMNS
    assert len(frame) == 3
    for column in ADULT_COLUMNS:
        if column in ADULT_NUMERIC:
            assert frame[column].dtype == np.int64, column
        else:
            assert pd.api.types.is_string_dtype(frame[column]), column
    assert frame.loc[0, "age"] == 39
    assert frame.loc[0, "fnlwgt"] == 77516
    assert frame.loc[0, "capital-gain"] == 2174
    assert frame.loc[0, "workclass"] == "State-gov"  # separator space stripped
    assert frame.loc[1, "workclass"] == "Self-emp-not-inc"
    assert frame["income"].tolist() == ["<=50K", ">50K", ">50K"]
    # '?' stays a literal value; validation and preprocessing decide what it means.
    assert frame.loc[2, "workclass"] == "?"
    assert frame.loc[2, "occupation"] == "?"
    assert frame.loc[2, "native-country"] == "?"
    assert not frame.isna().any().any()


def test_read_adult_test_file_skips_header_and_strips_label_dot(tmp_path: Path) -> None:
    frame = read_adult(write(tmp_path / "adult.test", ADULT_TEST))
    assert len(frame) == 2
    assert frame["income"].tolist() == ["<=50K", ">50K"]
    assert frame["age"].tolist() == [25, 38]
    assert frame.loc[1, "occupation"] == "Farming-fishing"


def test_read_adult_accepts_crlf_line_ends(tmp_path: Path) -> None:
    frame = read_adult(write(tmp_path / "adult.test", ADULT_TEST.replace("\n", "\r\n")))
    assert frame["income"].tolist() == ["<=50K", ">50K"]
    assert frame.loc[0, "native-country"] == "United-States"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            ADULT_TEST.replace(", 11th", ""), ["line 2", "found 14 fields", "expected 15", "'25, Private, 226802, 7"],
            id="too-few-fields",
        ),
        pytest.param(
            ADULT_DATA.replace(", >50K\n", ", >50K, extra\n", 1),
            ["line 2", "found 16 fields", "expected 15", "'50, Self-emp-not-inc"],
            id="too-many-fields",
        ),
        pytest.param(
            ADULT_DATA.replace("50, Self-emp", "fifty, Self-emp"),
            ["line 2", "column 'age'", "'fifty'", "not an integer"],
            id="non-numeric",
        ),
        pytest.param(
            ADULT_TEST.replace("89814", "89814.5"),
            ["line 3", "column 'fnlwgt'", "'89814.5'", "not an integer"],
            id="fractional",
        ),
        pytest.param(
            ADULT_DATA.replace("180211", "?"),
            ["line 3", "column 'fnlwgt'", "'?'"],
            id="question-mark-in-numeric",
        ),
        pytest.param("", ["contains no data rows"], id="empty"),
        pytest.param("|1x3 Cross validator\n\n\n", ["contains no data rows"], id="header-only"),
    ],
)
def test_read_adult_rejects_bad_files(tmp_path: Path, content: str, expected: list[str]) -> None:
    path = write(tmp_path / "adult.test", content)
    assert_refused(read_adult, path, expected, DataFormatError)


def test_read_adult_long_bad_line_is_cut_to_80_characters(tmp_path: Path) -> None:
    line = "x" * 200
    path = write(tmp_path / "adult.data", ADULT_DATA.replace("\n\n", "\n") + line + "\n")
    with pytest.raises(DataFormatError, match="line 4: found 1 fields") as info:
        read_adult(path)
    assert repr("x" * 80) in str(info.value)
    assert "x" * 81 not in str(info.value)


def test_read_adult_rejects_non_utf8_bytes(tmp_path: Path) -> None:
    content = ADULT_GOOD_LINE.encode() + b"\n39, St\xffate-gov\n"
    path = write(tmp_path / "adult.data", content)
    with pytest.raises(DataFormatError) as info:
        read_adult(path)
    offset = len(ADULT_GOOD_LINE) + 1 + len("39, St")
    message = str(info.value)
    assert str(path) in message
    assert f"byte offset {offset}" in message
    assert "line 2" in message
    assert "0xff" in message


def test_read_adult_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="adult.data does not exist"):
        read_adult(tmp_path / "adult.data")


# ---------------------------------------------------------------- boston


def test_read_boston(tmp_path: Path) -> None:
    frame = read_boston(write(tmp_path / "housing.data", BOSTON_DATA + "\n"))
    assert list(frame.columns) == BOSTON_COLUMNS
    assert len(frame) == 2
    expected_ints = {"CHAS", "RAD"}
    for column in BOSTON_COLUMNS:
        assert frame[column].dtype == (np.int64 if column in expected_ints else np.float64), column
    assert frame["RAD"].tolist() == [1, 2]
    assert frame["CHAS"].tolist() == [0, 0]
    assert frame.loc[0, "CRIM"] == pytest.approx(0.00632)
    assert frame.loc[1, "DIS"] == pytest.approx(4.9671)
    assert frame["MEDV"].tolist() == pytest.approx([24.0, 21.6])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            BOSTON_DATA.replace("  21.60", ""), ["line 2", "found 13 fields", "expected 14", "' 0.02731"],
            id="too-few-fields",
        ),
        pytest.param(
            BOSTON_DATA.replace("296.0", "n/a"), ["line 1", "column 'TAX'", "'n/a'", "not a finite number"],
            id="non-numeric",
        ),
        pytest.param(
            BOSTON_DATA.replace("  2  242.0", "  2.5  242.0"),
            ["line 2", "column 'RAD'", "'2.5'", "not an integer"],
            id="fractional-rad",
        ),
        pytest.param("\n\n", ["contains no data rows"], id="empty"),
    ],
)
def test_read_boston_rejects_bad_files(tmp_path: Path, content: str, expected: list[str]) -> None:
    path = write(tmp_path / "housing.data", content)
    assert_refused(read_boston, path, expected, DataFormatError)


def test_read_boston_rejects_non_utf8_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "housing.data", b"\x80" + BOSTON_DATA.encode())
    with pytest.raises(DataFormatError, match="byte offset 0") as info:
        read_boston(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- idx


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_read_idx_images_and_labels(tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    for name, array in [("images", images), ("labels", labels)]:
        data = idx_bytes(array)
        path = write(tmp_path / name, gzip.compress(data) if compress else data)
        result = read_idx(path)
        assert result.dtype == np.uint8
        assert result.shape == array.shape
        np.testing.assert_array_equal(result, array)
        assert result.flags.writeable


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4], dtype=np.uint8)
    raw_named_gz = write(tmp_path / "labels.gz", idx_bytes(labels))
    gz_named_raw = write(tmp_path / "labels.idx", gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(raw_named_gz), labels)
    np.testing.assert_array_equal(read_idx(gz_named_raw), labels)


LABELS = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0], dtype=np.uint8)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            b"\x12\x34\x08\x01" + b"\x00" * 8,
            ["not an IDX file", "0x12340801", "0x00000801", "0x00000803"],
            id="wrong-magic",
        ),
        pytest.param(
            b"\x00\x00\x08\x00" + b"\x00" * 8, ["not an IDX file", "0x00000800"], id="zero-dims"
        ),
        pytest.param(b"\x00\x00", ["not an IDX file", "0x0000"], id="tiny"),
        pytest.param(
            idx_bytes(LABELS, dtype_code=0x0D), ["data type code 0x0d", "0x00000d01"], id="float-dtype"
        ),
        pytest.param(
            idx_bytes(LABELS)[:-3], ["too short", "[10]", "10 data bytes", "7 bytes follow"],
            id="truncated-payload",
        ),
        pytest.param(
            idx_bytes(LABELS) + b"\x00\x00", ["too long", "[10]", "10 data bytes", "12 bytes follow"],
            id="extra-payload",
        ),
        pytest.param(
            b"\x00\x00\x08\x03" + struct.pack(">I", 5), ["truncated", "3 dimensions", "8 bytes"],
            id="truncated-header",
        ),
        pytest.param(
            gzip.compress(idx_bytes(LABELS))[:-6], ["corrupt or truncated gzip"], id="truncated-gzip"
        ),
        pytest.param(b"\x1f\x8b" + b"not really gzip", ["corrupt or truncated gzip"], id="bad-gzip"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path: Path, content: bytes, expected: list[str]) -> None:
    path = write(tmp_path / "train-labels-idx1-ubyte.gz", content)
    assert_refused(read_idx, path, expected, DataFormatError)


# ---------------------------------------------------------------- npz


def test_read_mnist_npz(tmp_path: Path) -> None:
    arrays = mnist_arrays()
    np.savez(tmp_path / "mnist.npz", **arrays)
    result = read_mnist_npz(tmp_path / "mnist.npz")
    assert sorted(result) == sorted(arrays)
    for key, array in arrays.items():
        assert result[key].dtype == np.uint8
        np.testing.assert_array_equal(result[key], array)


def test_read_mnist_npz_missing_keys(tmp_path: Path) -> None:
    arrays = mnist_arrays()
    del arrays["y_test"]
    np.savez(tmp_path / "mnist.npz", **arrays, extra=np.zeros(1))
    with pytest.raises(DataFormatError) as info:
        read_mnist_npz(tmp_path / "mnist.npz")
    message = str(info.value)
    assert str(tmp_path / "mnist.npz") in message
    assert "lacks the arrays ['y_test']" in message
    assert "'extra'" in message


@pytest.mark.parametrize(
    ("writer", "expected"),
    [
        pytest.param(lambda p: p.write_text("not a zip file\n"), "not a readable .npz", id="text"),
        pytest.param(lambda p: p.write_bytes(b"PK\x03\x04broken"), "not a readable .npz", id="broken-zip"),
        pytest.param(lambda p: p.write_bytes(npy_bytes(np.zeros(3))), "single .npy array", id="npy"),
    ],
)
def test_read_mnist_npz_rejects_non_archives(tmp_path: Path, writer, expected: str) -> None:
    path = tmp_path / "mnist.npz"
    writer(path)
    with pytest.raises(DataFormatError, match=expected) as info:
        read_mnist_npz(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- load_raw


def test_load_raw_adult(tmp_path: Path) -> None:
    write(tmp_path / "adult.data", ADULT_DATA)
    write(tmp_path / "adult.test", ADULT_TEST)
    raw = load_raw(resolved_for("adult", "uci", tmp_path, {"train": "adult.data", "test": "adult.test"}))
    assert isinstance(raw, RawData)
    assert raw.dataset == "adult"
    assert sorted(raw.frames) == ["test", "train"]
    assert (len(raw.frames["train"]), len(raw.frames["test"])) == (3, 2)
    assert raw.arrays == {}


def test_load_raw_boston(tmp_path: Path) -> None:
    write(tmp_path / "housing.data", BOSTON_DATA)
    raw = load_raw(resolved_for("boston", "uci", tmp_path, {"data": "housing.data"}))
    assert list(raw.frames) == ["data"]
    assert raw.frames["data"].shape == (2, 14)


def test_load_raw_mnist_idx(tmp_path: Path) -> None:
    arrays = mnist_arrays()
    for key, array in arrays.items():
        write(tmp_path / IDX_NAMES[key], gzip.compress(idx_bytes(array)))
    files = {IDX_ROLES[key]: IDX_NAMES[key] for key in arrays}
    raw = load_raw(resolved_for("mnist", "idx", tmp_path, files))
    assert raw.frames == {}
    assert raw.arrays["x_train"].shape == (4, 28, 28)
    assert raw.arrays["x_test"].shape == (3, 28, 28)
    for key, array in arrays.items():
        assert raw.arrays[key].dtype == np.uint8
        np.testing.assert_array_equal(raw.arrays[key], array)


def test_load_raw_mnist_npz(tmp_path: Path) -> None:
    arrays = mnist_arrays()
    np.savez(tmp_path / "mnist.npz", **arrays)
    raw = load_raw(resolved_for("mnist", "npz", tmp_path, {"archive": "mnist.npz"}))
    assert sorted(raw.arrays) == sorted(arrays)
    np.testing.assert_array_equal(raw.arrays["y_test"], arrays["y_test"])


def test_load_raw_mnist_rejects_label_count_mismatch(tmp_path: Path) -> None:
    arrays = mnist_arrays()
    arrays["y_train"] = arrays["y_train"][:3]
    for key, array in arrays.items():
        write(tmp_path / IDX_NAMES[key], gzip.compress(idx_bytes(array)))
    files = {IDX_ROLES[key]: IDX_NAMES[key] for key in arrays}
    with pytest.raises(DataFormatError) as info:
        load_raw(resolved_for("mnist", "idx", tmp_path, files))
    message = str(info.value)
    assert "4 images in" in message and "3 labels in" in message
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "train-labels-idx1-ubyte.gz") in message


def test_load_raw_mnist_npz_rejects_flat_images(tmp_path: Path) -> None:
    arrays = mnist_arrays()
    arrays["x_test"] = arrays["x_test"].reshape(3, -1)
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataFormatError, match=r"\(3, 784\)") as info:
        load_raw(resolved_for("mnist", "npz", tmp_path, {"archive": "mnist.npz"}))
    assert "array x_test" in str(info.value)


# ---------------------------------------------------------------- the local mirror


@pytest.mark.mirror
def test_mirror_resolves_and_loads_with_verified_checksums(mirror_dir: Path, tmp_path: Path) -> None:
    options = dict(data_dir=mirror_dir, raw_dir=tmp_path / "raw", allow_download=False)
    adult = resolve_dataset("adult", **options)
    boston = resolve_dataset("boston", **options)
    mnist = resolve_dataset("mnist", accept_subsample=True, **options)
    assert (adult.entry, boston.entry, mnist.entry) == ("adult", "boston", "mnist-5k")
    assert mnist.subsample and mnist.format == "idx"
    for resolved in (adult, boston, mnist):
        assert resolved.source == "data-dir"
        assert all(f.verified for f in resolved.files.values()), resolved.to_dict()
    raw_adult, raw_boston, raw_mnist = load_raw(adult), load_raw(boston), load_raw(mnist)
    assert len(raw_adult.frames["train"]) == 32561
    assert len(raw_adult.frames["test"]) == 16281
    assert set(raw_adult.frames["test"]["income"]) == {"<=50K", ">50K"}
    assert len(raw_boston.frames["data"]) == 506
    assert raw_mnist.arrays["x_train"].shape == (5000, 28, 28)
    assert raw_mnist.arrays["y_train"].shape == (5000,)
    assert raw_mnist.arrays["x_test"].shape == (10000, 28, 28)
    assert raw_mnist.arrays["y_test"].shape == (10000,)
