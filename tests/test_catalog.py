"""Tests for the data catalog, data set resolution and downloads in tasks.catalog."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from nnstudy.errors import DataFormatError, DataIntegrityError, DataNotFoundError, DownloadError
from tasks.catalog import (
    CatalogEntry,
    ResolvedData,
    download_file,
    file_digests,
    load_catalog,
    resolve_dataset,
)
from tests.helpers import assert_refused

# Contents of the fixture files; digests come from these, so tests never need real data.
FILES = {
    "adult": {"adult.data": b"train rows\n", "adult.test": b"test rows\n", "adult.names": b"doc\n"},
    "mnist": {
        "train-images-idx3-ubyte.gz": b"full train images",
        "train-labels-idx1-ubyte.gz": b"full train labels",
        "t10k-images-idx3-ubyte.gz": b"test images",
        "t10k-labels-idx1-ubyte.gz": b"test labels",
    },
    "mnist-5k": {
        "train-images-idx3-ubyte.gz": b"5k train images",
        "train-labels-idx1-ubyte.gz": b"5k train labels",
        "t10k-images-idx3-ubyte.gz": b"test images",
        "t10k-labels-idx1-ubyte.gz": b"test labels",
    },
}
IDX_ROLES = {
    "train-images-idx3-ubyte.gz": "train_images", "train-labels-idx1-ubyte.gz": "train_labels",
    "t10k-images-idx3-ubyte.gz": "test_images", "t10k-labels-idx1-ubyte.gz": "test_labels",
}
GOOD = bytes(range(256)) * 40
WRONG = b"not what the catalog says" * 100
PROXY_VARIABLES = ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]


def md5_of(data: bytes) -> str:
    """Hex md5 of bytes."""
    return hashlib.md5(data).hexdigest()


def idx_files(entry: str) -> list[dict]:
    """Catalog file records for an MNIST IDX fixture entry."""
    return [
        {"role": IDX_ROLES[name], "name": name, "md5": md5_of(data), "rows": 1}
        for name, data in FILES[entry].items()
    ]


def make_catalog(adult_url: str | None = None) -> dict[str, CatalogEntry]:
    """A catalog whose digests match the fixture FILES (adult optionally downloadable)."""
    adult = FILES["adult"]
    adult_files = [
        {"role": "train", "name": "adult.data", "md5": md5_of(adult["adult.data"]), "rows": 1},
        {"role": "test", "name": "adult.test", "md5": md5_of(adult["adult.test"]), "rows": 1},
        {"role": "names", "name": "adult.names", "md5": md5_of(adult["adult.names"]),
         "required": False},
    ]
    if adult_url:
        for record in adult_files:
            record["url"] = f"{adult_url}/{record['name']}"
    raw = [
        {"name": "adult", "dataset": "adult", "description": "fixture adult",
         "formats": [{"name": "uci", "files": adult_files}]},
        {"name": "mnist", "dataset": "mnist", "description": "fixture mnist",
         "formats": [{"name": "idx", "files": idx_files("mnist")}]},
        {"name": "mnist-5k", "dataset": "mnist", "description": "fixture subsample",
         "subsample": True, "formats": [{"name": "idx", "files": idx_files("mnist-5k")}]},
    ]
    return {record["name"]: CatalogEntry.model_validate(record) for record in raw}


def place(base: Path, entry: str, skip: tuple[str, ...] = ()) -> Path:
    """Write the fixture files of an entry into base/<entry>/ and return that folder."""
    folder = base / entry
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in FILES[entry].items():
        if name not in skip:
            (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def catalog() -> dict[str, CatalogEntry]:
    """The fixture catalog, without URLs."""
    return make_catalog()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(data_dir, raw_dir) under tmp_path; neither is created."""
    return tmp_path / "data-dir", tmp_path / "raw"


# ---------------------------------------------------------------- the shipped catalog


def test_shipped_catalog_has_the_expected_entries() -> None:
    catalog = load_catalog()
    assert list(catalog) == ["adult", "boston", "mnist", "mnist-5k"]
    assert [catalog[n].dataset for n in catalog] == ["adult", "boston", "mnist", "mnist"]
    adult = {f.role: f for f in catalog["adult"].formats[0].files}
    assert (adult["train"].name, adult["train"].md5, adult["train"].rows) == (
        "adult.data", "5d7c39d7b8804f071cdd1f2a7c460872", 32561)
    assert (adult["test"].rows, adult["names"].required) == (16281, False)
    boston = catalog["boston"].formats[0].files
    assert (boston[0].name, boston[0].rows, boston[1].required) == ("housing.data", 506, False)
    npz, idx = catalog["mnist"].formats
    assert (npz.name, idx.name) == ("npz", "idx")
    assert npz.files[0].sha256 == "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
    assert npz.files[0].rows == {"train": 60000, "test": 10000}
    assert npz.downloadable and not idx.downloadable
    assert npz.expected_rows() == {"archive_train": 60000, "archive_test": 10000}
    assert idx.expected_rows() == {"train_images": 60000, "train_labels": 60000,
                                   "test_images": 10000, "test_labels": 10000}
    subsample = catalog["mnist-5k"]
    assert subsample.subsample and not catalog["mnist"].subsample
    assert {f.role: f.rows for f in subsample.formats[0].files} == {
        "train_images": 5000, "train_labels": 5000, "test_images": 10000, "test_labels": 10000}
    for entry in catalog.values():
        assert entry.description
        for fmt in entry.formats:
            assert all(f.md5 or f.sha256 for f in fmt.files)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "version: 1\nentries:\n  - {name: a, dataset: adult, description: d, formats: "
            "[{name: uci, files: [{role: train, name: adult.data, md5: nothex}]}]}\n",
            ["entries.0.formats.0.files.0.md5", "32 hexadecimal digits", "'nothex'"],
            id="bad-md5",
        ),
        pytest.param(
            "version: 1\nentries:\n  - {name: a, dataset: adult, description: d, formats: "
            "[{name: uci, files: [{role: train, name: adult.data}]}]}\n",
            ["needs an md5 or a sha256"],
            id="no-digest",
        ),
        pytest.param(
            "version: 1\nentries:\n  - {name: a, dataset: cifar, description: d, formats: []}\n",
            ["entries.0.dataset", "'cifar'"],
            id="unknown-dataset",
        ),
        pytest.param(
            "version: 1\nentries:\n  - {name: a, dataset: adult, description: d, formats: "
            "[{name: uci, files: [{role: train, name: ../x, md5: " + "a" * 32 + "}]}]}\n",
            ["plain file name", "'../x'"],
            id="path-in-name",
        ),
        pytest.param("version: 1\nentries: [\n", ["not valid YAML"], id="yaml-syntax"),
    ],
)
def test_load_catalog_rejects_invalid_files(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    assert_refused(load_catalog, path, expected, DataFormatError)


def test_load_catalog_rejects_duplicate_entries(tmp_path: Path) -> None:
    entry = ("  - {name: a, dataset: adult, description: d, formats: [{name: uci, files: "
             "[{role: train, name: adult.data, md5: " + "a" * 32 + "}]}]}\n")
    path = tmp_path / "catalog.yaml"
    path.write_text("version: 1\nentries:\n" + entry + entry)
    with pytest.raises(DataFormatError, match=r"entries \['a'\] more than once"):
        load_catalog(path)


def test_load_catalog_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_catalog(tmp_path / "nope.yaml")


def test_file_digests_streams_large_files(tmp_path: Path) -> None:
    data = b"0123456789abcdef" * (1 << 17) + b"tail"  # just over 2 MiB: several chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_digests(path) == (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())


# ---------------------------------------------------------------- resolution order


def test_data_dir_beats_cache(catalog, dirs) -> None:
    data_dir, raw_dir = dirs
    place(data_dir, "adult")
    place(raw_dir, "adult")
    resolved = resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                               allow_download=False)
    assert resolved.source == "data-dir"
    assert resolved.directory == data_dir / "adult"
    assert (resolved.entry, resolved.dataset, resolved.format) == ("adult", "adult", "uci")
    assert sorted(resolved.files) == ["names", "test", "train"]
    train = resolved.files["train"]
    assert train.path == data_dir / "adult" / "adult.data"
    assert train.verified and train.bytes == len(FILES["adult"]["adult.data"])
    assert train.md5 == md5_of(FILES["adult"]["adult.data"])
    assert train.sha256 == hashlib.sha256(FILES["adult"]["adult.data"]).hexdigest()
    assert (train.rows, train.split_rows) == (1, None)


@pytest.mark.parametrize("layout", ["no-entry-folder", "incomplete", "no-data-dir-at-all"])
def test_cache_used_when_data_dir_lacks_the_entry(catalog, dirs, layout: str) -> None:
    data_dir, raw_dir = dirs
    data_dir.mkdir()
    if layout == "incomplete":
        place(data_dir, "adult", skip=("adult.test",))
    place(raw_dir, "adult")
    resolved = resolve_dataset(
        "adult", data_dir=None if layout == "no-data-dir-at-all" else data_dir, raw_dir=raw_dir,
        catalog=catalog, allow_download=False,
    )
    assert resolved.source == "cache"
    assert resolved.directory == raw_dir / "adult"


def test_optional_files_may_be_absent(catalog, dirs) -> None:
    data_dir, raw_dir = dirs
    place(data_dir, "adult", skip=("adult.names",))
    resolved = resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                               allow_download=False)
    assert sorted(resolved.files) == ["test", "train"]


def test_subsample_used_only_when_accepted(catalog, dirs) -> None:
    data_dir, raw_dir = dirs
    place(data_dir, "mnist-5k")
    with pytest.raises(DataNotFoundError) as info:
        resolve_dataset("mnist", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                        allow_download=False)
    assert "accepts a subsample" in str(info.value)
    assert str(data_dir / "mnist-5k") in str(info.value)
    resolved = resolve_dataset("mnist", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                               allow_download=False, accept_subsample=True)
    assert (resolved.entry, resolved.dataset, resolved.subsample) == ("mnist-5k", "mnist", True)
    assert all(f.verified for f in resolved.files.values())


def test_full_mnist_preferred_over_subsample(catalog, dirs) -> None:
    data_dir, raw_dir = dirs
    place(data_dir, "mnist-5k")
    place(data_dir, "mnist")
    resolved = resolve_dataset("mnist", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                               allow_download=False, accept_subsample=True)
    assert (resolved.entry, resolved.subsample) == ("mnist", False)


def test_not_found_lists_places_and_layout(catalog, dirs) -> None:
    data_dir, raw_dir = dirs
    place(data_dir, "adult", skip=("adult.test",))
    with pytest.raises(DataNotFoundError) as info:
        resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                        allow_download=False)
    message = str(info.value)
    assert f"{data_dir / 'adult'} (format uci lacks adult.test)" in message
    assert f"{raw_dir / 'adult'} (does not exist)" in message
    assert "DIR/adult/adult.data and DIR/adult/adult.test" in message
    assert "DIR/adult/adult.names" not in message  # optional
    assert "--data-dir" in message and "NNSTUDY_DATA_DIR" in message
    assert "Downloading was turned off" in message


def test_unknown_dataset(catalog, dirs) -> None:
    with pytest.raises(DataNotFoundError, match=r"Unknown data set 'cifar'.*\['adult', 'mnist'\]"):
        resolve_dataset("cifar", data_dir=None, raw_dir=dirs[1], catalog=catalog)


def test_resolved_data_is_json_serialisable(catalog, dirs) -> None:
    data_dir, raw_dir = dirs
    place(data_dir, "adult")
    resolved = resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                               allow_download=False)
    payload = json.loads(json.dumps(resolved.to_dict()))
    assert payload["directory"] == str(data_dir / "adult")
    assert payload["source"] == "data-dir"
    # The report wants a list of files in catalog order, each with rows and digests.
    assert [f["role"] for f in payload["files"]] == ["train", "test", "names"]
    train = payload["files"][0]
    assert train["path"] == str(data_dir / "adult" / "adult.data")
    assert (train["verified"], train["rows"], train["md5"]) == (
        True, 1, md5_of(FILES["adult"]["adult.data"]))
    assert ResolvedData.model_validate(payload) == resolved


def test_archive_rows_are_totalled_with_splits_kept(dirs) -> None:
    data_dir, raw_dir = dirs
    archive = {"role": "archive", "name": "mnist.npz", "sha256": hashlib.sha256(b"npz").hexdigest(),
               "rows": {"train": 4, "test": 3}}
    entry = CatalogEntry.model_validate(
        {"name": "mnist", "dataset": "mnist", "description": "d",
         "formats": [{"name": "npz", "files": [archive]}]})
    (data_dir / "mnist").mkdir(parents=True)
    (data_dir / "mnist" / "mnist.npz").write_bytes(b"npz")
    resolved = resolve_dataset("mnist", data_dir=data_dir, raw_dir=raw_dir,
                               catalog={"mnist": entry}, allow_download=False)
    assert resolved.format == "npz"
    assert (resolved.files["archive"].rows, resolved.files["archive"].split_rows) == (
        7, {"train": 4, "test": 3})
    assert resolved.files["archive"].verified
    assert entry.formats[0].expected_rows() == {"archive_train": 4, "archive_test": 3}


# ---------------------------------------------------------------- checksums


def test_checksum_mismatch_raises_with_path_and_digests(catalog, dirs) -> None:
    data_dir, raw_dir = dirs
    folder = place(data_dir, "adult")
    (folder / "adult.test").write_bytes(b"edited\n")
    with pytest.raises(DataIntegrityError) as info:
        resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                        allow_download=False)
    message = str(info.value)
    assert str(folder / "adult.test") in message
    assert f"expected md5 {md5_of(FILES['adult']['adult.test'])}" in message
    assert f"got {md5_of(b'edited' + bytes([10]))}" in message
    assert "--allow-unverified" in message


def test_checksum_mismatch_of_optional_file_also_raises(catalog, dirs) -> None:
    data_dir, raw_dir = dirs
    folder = place(data_dir, "adult")
    (folder / "adult.names").write_bytes(b"other doc\n")
    with pytest.raises(DataIntegrityError, match="adult.names"):
        resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                        allow_download=False)


def test_allow_unverified_marks_file_and_warns(catalog, dirs, caplog) -> None:
    data_dir, raw_dir = dirs
    folder = place(data_dir, "adult")
    (folder / "adult.test").write_bytes(b"edited\n")
    with caplog.at_level(logging.WARNING, logger="tasks.catalog"):
        resolved = resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                                   allow_download=False, allow_unverified=True)
    assert resolved.files["test"].verified is False
    assert resolved.files["test"].md5 == md5_of(b"edited\n")
    assert resolved.files["train"].verified is True
    assert str(folder / "adult.test") in caplog.text


def test_misplaced_subsample_is_named_in_the_error(catalog, dirs) -> None:
    data_dir, raw_dir = dirs
    folder = data_dir / "mnist"
    folder.mkdir(parents=True)
    for name, data in FILES["mnist-5k"].items():
        (folder / name).write_bytes(data)
    with pytest.raises(DataIntegrityError, match="belongs in a folder named 'mnist-5k'"):
        resolve_dataset("mnist", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog,
                        allow_download=False)


# ---------------------------------------------------------------- downloads


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves good, truncated, wrong, missing and flaky files; counts requests per path."""

    hits: Counter = Counter()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.hits[self.path] += 1
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/adult/"):
            self._send(FILES["adult"].get(name, b""), 200 if name in FILES["adult"] else 404)
        elif name == "good.bin":
            self._send(GOOD)
        elif name == "wrong.bin":
            self._send(WRONG)
        elif name == "short.bin":
            # Announce the whole file, send half, then drop the connection.
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[: len(GOOD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif name == "stall.bin":
            # Headers at once, then nothing for longer than the client's timeout.
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(1.5)
        elif name == "flaky.bin" and self.hits[self.path] == 1:
            self._send(b"busy", 503)
        elif name == "flaky.bin":
            self._send(GOOD)
        else:
            self._send(b"not found", 404)

    def _send(self, body: bytes, status: int = 200) -> None:
        """Send a complete response."""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        """Keep test output quiet."""


@pytest.fixture
def server(monkeypatch) -> Iterator[tuple[str, Counter]]:
    """A local HTTP server on 127.0.0.1; yields (base url, hit counter)."""
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    hits: Counter = Counter()
    handler = type("Handler", (_Handler,), {"hits": hits})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval keeps shutdown() (and so each test) fast.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


FAST = dict(timeout=5, retries=2, backoff=0.01)


def test_download_good_file(server, tmp_path: Path) -> None:
    base, hits = server
    dest = tmp_path / "files" / "good.bin"
    result = download_file(f"{base}/good.bin", dest, md5=md5_of(GOOD),
                           sha256=hashlib.sha256(GOOD).hexdigest(), **FAST)
    assert result == dest
    assert dest.read_bytes() == GOOD
    assert [p.name for p in dest.parent.iterdir()] == ["good.bin"]
    assert hits["/good.bin"] == 1


def test_download_truncated_transfer_retries_then_fails_cleanly(server, tmp_path: Path) -> None:
    base, hits = server
    dest = tmp_path / "short.bin"
    with pytest.raises(DownloadError) as info:
        download_file(f"{base}/short.bin", dest, md5=md5_of(GOOD), **FAST)
    message = str(info.value)
    assert f"{base}/short.bin" in message
    assert "3 attempt(s)" in message
    assert f"received {len(GOOD) // 2} of the {len(GOOD)} bytes" in message
    assert hits["/short.bin"] == 3
    assert list(tmp_path.iterdir()) == []


def test_download_wrong_bytes_raises_integrity_error(server, tmp_path: Path) -> None:
    base, hits = server
    dest = tmp_path / "wrong.bin"
    with pytest.raises(DataIntegrityError) as info:
        download_file(f"{base}/wrong.bin", dest, md5=md5_of(GOOD), sha256=hashlib.sha256(GOOD).hexdigest(), **FAST)
    message = str(info.value)
    assert f"{base}/wrong.bin" in message and f"Nothing was written to {dest}" in message
    assert f"expected md5 {md5_of(GOOD)}, got {md5_of(WRONG)}" in message
    assert f"expected sha256 {hashlib.sha256(GOOD).hexdigest()}, got {hashlib.sha256(WRONG).hexdigest()}" in message
    assert hits["/wrong.bin"] == 3
    assert list(tmp_path.iterdir()) == []


def test_failed_download_leaves_existing_file_untouched(server, tmp_path: Path) -> None:
    base, _ = server
    dest = tmp_path / "wrong.bin"
    dest.write_bytes(b"previous")
    with pytest.raises(DataIntegrityError):
        download_file(f"{base}/wrong.bin", dest, sha256=hashlib.sha256(GOOD).hexdigest(), **FAST)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["wrong.bin"]


def test_download_wrong_bytes_kept_when_unverified_allowed(server, tmp_path: Path) -> None:
    base, hits = server
    dest = tmp_path / "wrong.bin"
    download_file(f"{base}/wrong.bin", dest, md5=md5_of(GOOD), allow_unverified=True, **FAST)
    assert dest.read_bytes() == WRONG
    assert hits["/wrong.bin"] == 1


def test_download_stalled_server_times_out_and_retries(server, tmp_path: Path) -> None:
    base, hits = server
    dest = tmp_path / "stall.bin"
    with pytest.raises(DownloadError) as info:
        download_file(f"{base}/stall.bin", dest, md5=md5_of(GOOD), timeout=0.3, retries=1, backoff=0.01)
    assert f"{base}/stall.bin" in str(info.value) and "timed out" in str(info.value)
    assert hits["/stall.bin"] == 2
    assert list(tmp_path.iterdir()) == []


def test_download_retries_back_off_exponentially(server, tmp_path: Path, monkeypatch) -> None:
    base, hits = server
    pauses: list[float] = []
    monkeypatch.setattr("tasks.catalog.time.sleep", pauses.append)
    with pytest.raises(DownloadError):
        download_file(f"{base}/short.bin", tmp_path / "short.bin", md5=md5_of(GOOD), timeout=5, retries=3,
                      backoff=0.5)
    assert hits["/short.bin"] == 4
    assert pauses == [0.5, 1.0, 2.0]


def test_download_not_found_is_not_retried(server, tmp_path: Path) -> None:
    base, hits = server
    with pytest.raises(DownloadError, match="404"):
        download_file(f"{base}/missing.bin", tmp_path / "missing.bin", md5=md5_of(GOOD), **FAST)
    assert hits["/missing.bin"] == 1
    assert list(tmp_path.iterdir()) == []


def test_download_retries_server_errors(server, tmp_path: Path) -> None:
    base, hits = server
    dest = tmp_path / "flaky.bin"
    download_file(f"{base}/flaky.bin", dest, md5=md5_of(GOOD), **FAST)
    assert dest.read_bytes() == GOOD
    assert hits["/flaky.bin"] == 2


def test_download_unreachable_host(tmp_path: Path) -> None:
    # Port 9 on 127.0.0.1 (discard) is closed here, so the connection is refused at once.
    with pytest.raises(DownloadError, match="127.0.0.1:9"):
        download_file("http://127.0.0.1:9/x", tmp_path / "x", md5=md5_of(GOOD),
                      timeout=2, retries=1, backoff=0.01)
    assert list(tmp_path.iterdir()) == []


def test_resolve_downloads_into_cache(server, dirs) -> None:
    base, hits = server
    data_dir, raw_dir = dirs
    catalog = make_catalog(adult_url=f"{base}/adult")
    resolved = resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog, **FAST)
    assert resolved.source == "download"
    assert resolved.directory == raw_dir / "adult"
    assert sorted(resolved.files) == ["names", "test", "train"]
    assert all(f.verified for f in resolved.files.values())
    assert (raw_dir / "adult" / "adult.test").read_bytes() == FILES["adult"]["adult.test"]
    # The next run finds the cache and downloads nothing.
    again = resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog, **FAST)
    assert again.source == "cache"
    assert hits["/adult/adult.data"] == 1


def test_resolve_reports_failed_download(server, dirs) -> None:
    base, _ = server
    data_dir, raw_dir = dirs
    catalog = make_catalog(adult_url=f"{base}/nowhere")
    with pytest.raises(DataNotFoundError) as info:
        resolve_dataset("adult", data_dir=data_dir, raw_dir=raw_dir, catalog=catalog, **FAST)
    assert "Downloading failed" in str(info.value)
    assert f"{base}/nowhere/adult.data" in str(info.value)
    assert isinstance(info.value.__cause__, DownloadError)
    assert not any(p.is_file() for p in raw_dir.rglob("*"))


def test_resolve_without_urls_does_not_download(catalog, dirs) -> None:
    with pytest.raises(DataNotFoundError, match="No download source is known"):
        resolve_dataset("adult", data_dir=None, raw_dir=dirs[1], catalog=catalog)
