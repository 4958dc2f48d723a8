"""A corpus of broken inputs made from the real files: each is refused before training, in one paragraph that
names the file, the field and an example value, and nothing is written anywhere."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from nnstudy.errors import DataFormatError, DataIntegrityError, NnstudyError, ValidationFailed
from tasks.catalog import file_digests, resolve_dataset
from tasks.ingest import load_raw
from tasks.steps import expected_rows
from tasks.validate import raise_if_failed, validate_raw
from tests.helpers import migrated_state_root

pytestmark = pytest.mark.mirror
ENTRY_OF = {"adult": "adult", "boston": "boston", "mnist": "mnist-5k"}


@dataclass(frozen=True)
class Broken:
    """One defect: which file it alters, how, what the refusal must say, and the error type."""

    dataset: str
    file: str
    alter: Callable[[Path], list[str]]  # alters the copied file in place; returns fragments the message must hold
    error: type[NnstudyError]
    allow_unverified: bool = True


# ----------------------------------------------------------------------------------------- text defects


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").splitlines(keepends=True)


def _edit_line(number: int, edit: Callable[[str], str]) -> Callable[[Path], list[str]]:
    """Alter one line (0-based) of a text file; `edit` returns the new line."""
    def alter(path: Path) -> list[str]:
        lines = _lines(path)
        lines[number] = edit(lines[number])
        path.write_text("".join(lines), encoding="ascii")
        return []
    return alter


def _adult_field(number: int, column: int, value: str, expect: list[str]) -> Callable[[Path], list[str]]:
    """Set field `column` of line `number` of an Adult file to `value`."""
    def edit(line: str) -> str:
        fields = line.rstrip("\n").split(", ")
        fields[column] = value
        return ", ".join(fields) + "\n"

    def alter(path: Path) -> list[str]:
        _edit_line(number, edit)(path)
        return expect
    return alter


def _boston_field(number: int, column: int, value: str, expect: list[str]) -> Callable[[Path], list[str]]:
    """Set field `column` of line `number` of housing.data to `value`."""
    def edit(line: str) -> str:
        fields = line.split()
        fields[column] = value
        return " " + "  ".join(fields) + "\n"

    def alter(path: Path) -> list[str]:
        _edit_line(number, edit)(path)
        return expect
    return alter


def truncated_mid_line(path: Path) -> list[str]:
    data = path.read_bytes()
    cut = data[: int(len(data) * 0.4)]
    if cut.endswith(b"\n"):
        cut = cut[:-1]
    path.write_bytes(cut)
    last_line, last = cut.count(b"\n") + 1, cut.rsplit(b"\n", 1)[-1].decode()
    return [f"line {last_line}", "the line ends before column", repr(last[:20])[:-1]]


def truncated_at_line_end(path: Path) -> list[str]:
    lines = _lines(path)
    path.write_text("".join(lines[:13_000]), encoding="ascii")
    return ["expect_table_row_count_to_equal", "observed 13000", "expected value=32561"]


def corrupted_bytes(path: Path) -> list[str]:
    data = bytearray(path.read_bytes())
    line_start = data.index(b"\n", 5000) + 1      # a line start somewhere inside the file
    occupation = line_start + sum(len(f) + 2 for f in bytes(data[line_start:]).split(b", ")[:6])
    data[occupation: occupation + 3] = b"\xff\xfe\x00"
    path.write_bytes(bytes(data))
    return ["byte 0xff", f"byte offset {occupation}", "column 'occupation' (field 7)"]


def emptied(path: Path) -> list[str]:
    path.write_bytes(b"")
    return ["contains no data rows", "holds 0 bytes"]


def adult_column_dropped(path: Path) -> list[str]:
    lines = [line for line in _lines(path) if line.strip() and not line.startswith("|")]
    path.write_text("".join(", ".join(line.split(", ")[:2] + line.split(", ")[3:]) for line in lines),
                    encoding="ascii")
    return ["line 1", "found 14 fields, expected 15", "column 'income' (field 15)", repr(lines[0][:12])[:-1]]


def adult_column_added(path: Path) -> list[str]:
    lines = [line for line in _lines(path) if line.strip()]
    path.write_text("".join(line.rstrip("\n") + ", 7\n" for line in lines), encoding="ascii")
    return ["line 1", "found 16 fields", "field 16 holds '7'", "after the last column 'income'"]


def in_utf16(path: Path) -> list[str]:
    path.write_bytes(path.read_text(encoding="ascii").encode("utf-16"))
    return ["not a UTF-8/ASCII text file", "byte 0xff at byte offset 0", "column 'age' (field 1)"]


def in_latin1(path: Path) -> list[str]:
    lines = _lines(path)
    fields = lines[7].rstrip("\n").split(", ")
    fields[13] = "C\u00f4te-d'Ivoire"
    lines[7] = ", ".join(fields) + "\n"
    path.write_bytes("".join(lines).encode("latin-1"))
    return ["byte 0xf4", "line 8", "column 'native-country' (field 14)", "Ivoire"]


def boston_13_columns(path: Path) -> list[str]:
    path.write_text("".join(" ".join(line.split()[:13]) + "\n" for line in _lines(path)), encoding="ascii")
    return ["line 1", "found 13 fields, expected 14", "column 'MEDV' (field 14)", "'0.00632 18.00"]


def boston_extra_column(path: Path) -> list[str]:
    path.write_text("".join(line.rstrip("\n") + "  1.5\n" for line in _lines(path)), encoding="ascii")
    return ["found 15 fields", "field 15 holds '1.5'", "after the last column 'MEDV'"]


def checksum_only(path: Path) -> list[str]:
    """An extra blank line: parses the same, but it is not the catalog's file."""
    with open(path, "ab") as handle:
        handle.write(b"\n")
    return ["Checksum mismatch", "expected md5 d4accdce7a25600298819f8e28e8d593", f"got {file_digests(path)[0]}",
            "--allow-unverified"]


# ----------------------------------------------------------------------------------------- IDX defects


def _rewrite_idx(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


def idx_wrong_magic(path: Path) -> list[str]:
    _rewrite_idx(path, lambda data: b"\x12\x34" + data[2:])
    return ["not an IDX file", "magic number", "0x12340801"]


def idx_length_disagrees(path: Path) -> list[str]:
    _rewrite_idx(path, lambda data: data[:-10])
    return ["too short", "dimensions [5000]", "4990 bytes follow the header"]


def idx_header_and_labels_shorter(path: Path) -> list[str]:
    _rewrite_idx(path, lambda data: data[:4] + struct.pack(">I", 4999) + data[8:-1])
    return ["5000 images in", "4999 labels in", "train-images-idx3-ubyte.gz"]


def idx_gzip_truncated(path: Path) -> list[str]:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return ["corrupt or truncated gzip", "Delete it"]


def label_out_of_range(path: Path) -> list[str]:
    _rewrite_idx(path, lambda data: data[:8 + 41] + bytes([11]) + data[8 + 42:])
    return [f"label_range[y_train] in {path}", "e.g. [11]", "expected 0..9"]


CORPUS = {
    # Adult
    "adult-truncated-mid-line": Broken("adult", "adult.data", truncated_mid_line, DataFormatError),
    "adult-truncated-at-line-end": Broken("adult", "adult.data", truncated_at_line_end, ValidationFailed),
    "adult-corrupted-bytes": Broken("adult", "adult.data", corrupted_bytes, DataFormatError),
    "adult-empty-test-file": Broken("adult", "adult.test", emptied, DataFormatError),
    "adult-missing-column": Broken("adult", "adult.test", adult_column_dropped, DataFormatError),
    "adult-extra-column": Broken("adult", "adult.data", adult_column_added, DataFormatError),
    "adult-non-numeric-age": Broken("adult", "adult.data", _adult_field(
        4, 0, "forty", ["line 5", "column 'age'", "'forty'", "not an integer"]), DataFormatError),
    "adult-fractional-hours": Broken("adult", "adult.test", _adult_field(
        9, 12, "40.5", ["line 10", "column 'hours-per-week'", "'40.5'"]), DataFormatError),
    "adult-age-out-of-range": Broken("adult", "adult.data", _adult_field(
        3, 0, "150", ["expect_column_values_to_be_between[age]", "e.g. [150]", "max_value=90.0"]), ValidationFailed),
    "adult-unknown-sex": Broken("adult", "adult.data", _adult_field(
        10, 9, "M", ["expect_column_values_to_be_in_set[sex]", "e.g. ['M']"]), ValidationFailed),
    "adult-unknown-income": Broken("adult", "adult.test", _adult_field(
        20, 14, "unknown.", ["expect_column_values_to_be_in_set[income]", "e.g. ['unknown']"]), ValidationFailed),
    "adult-utf16": Broken("adult", "adult.data", in_utf16, DataFormatError),
    "adult-latin1": Broken("adult", "adult.test", in_latin1, DataFormatError),
    # Boston
    "boston-13-columns": Broken("boston", "housing.data", boston_13_columns, DataFormatError),
    "boston-extra-column": Broken("boston", "housing.data", boston_extra_column, DataFormatError),
    "boston-truncated-mid-line": Broken("boston", "housing.data", truncated_mid_line, DataFormatError),
    "boston-empty": Broken("boston", "housing.data", emptied, DataFormatError),
    "boston-non-numeric-tax": Broken("boston", "housing.data", _boston_field(
        6, 9, "n/a", ["line 7", "column 'TAX'", "'n/a'", "not a finite number"]), DataFormatError),
    "boston-medv-out-of-range": Broken("boston", "housing.data", _boston_field(
        4, 13, "60.00", ["expect_column_values_to_be_between[MEDV]", "e.g. [60.0]"]), ValidationFailed),
    "boston-unknown-chas": Broken("boston", "housing.data", _boston_field(
        7, 3, "2", ["expect_column_values_to_be_in_set[CHAS]", "e.g. [2]", "value_set=[0, 1]"]), ValidationFailed),
    "boston-checksum": Broken("boston", "housing.data", checksum_only, DataIntegrityError, allow_unverified=False),
    # MNIST (IDX)
    "idx-wrong-magic": Broken("mnist", "t10k-labels-idx1-ubyte.gz", idx_wrong_magic, DataFormatError),
    "idx-length-disagrees-with-header": Broken("mnist", "train-labels-idx1-ubyte.gz", idx_length_disagrees,
                                               DataFormatError),
    "idx-fewer-labels-than-images": Broken("mnist", "train-labels-idx1-ubyte.gz", idx_header_and_labels_shorter,
                                           DataFormatError),
    "idx-truncated-gzip": Broken("mnist", "train-images-idx3-ubyte.gz", idx_gzip_truncated, DataFormatError),
    "idx-label-out-of-range": Broken("mnist", "train-labels-idx1-ubyte.gz", label_out_of_range, ValidationFailed),
}


def make_broken(mirror: Path, base: Path, case: Broken) -> tuple[Path, Path, list[str]]:
    """Copy the case's entry from the mirror to base/data/<entry>/ and break one file: (data dir, file, fragments)."""
    data_dir = base / "data"
    entry = ENTRY_OF[case.dataset]
    shutil.copytree(mirror / entry, data_dir / entry)
    broken = data_dir / entry / case.file
    fragments = case.alter(broken)
    return data_dir, broken, fragments


def check_data(dataset: str, *, data_dir: Path, raw_dir: Path, allow_unverified: bool) -> None:
    """What a run does before training: resolve (checksums), parse, validate, refuse."""
    resolved = resolve_dataset(dataset, data_dir=data_dir, raw_dir=raw_dir, allow_unverified=allow_unverified,
                               accept_subsample=True, allow_download=False)
    raise_if_failed(validate_raw(resolved, load_raw(resolved), expected_rows(resolved)))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def assert_one_paragraph(message: str, broken: Path, fragments: list[str]) -> None:
    assert str(broken) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize("name", list(CORPUS))
def test_broken_input_is_refused_naming_file_field_and_value(mirror_dir: Path, tmp_path: Path, name: str) -> None:
    case = CORPUS[name]
    data_dir, broken, fragments = make_broken(mirror_dir, tmp_path, case)
    before = snapshot(tmp_path)
    with pytest.raises(NnstudyError) as caught:
        check_data(case.dataset, data_dir=data_dir, raw_dir=tmp_path / "home" / "raw",
                   allow_unverified=case.allow_unverified)
    assert type(caught.value) is case.error, caught.value
    assert_one_paragraph(str(caught.value), broken, fragments)
    assert snapshot(tmp_path) == before, "checking the data wrote or changed a file"


def test_the_unaltered_copies_pass(mirror_dir: Path, tmp_path: Path) -> None:
    # The corpus proves something only if the same path accepts the originals.
    for dataset, entry in ENTRY_OF.items():
        shutil.copytree(mirror_dir / entry, tmp_path / "data" / entry)
        check_data(dataset, data_dir=tmp_path / "data", raw_dir=tmp_path / "raw", allow_unverified=False)


# ----------------------------------------------------------------------------------------- through the CLI

PREVIOUS = {"report.md": b"# an earlier report\n", "results.parquet": b"PAR1 earlier results PAR1",
            "validation/boston.json": b"[]\n", "data.json": b"[]\n"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["boston-13-columns", "boston-unknown-chas", "idx-wrong-magic"])
def test_cli_refuses_broken_input_and_leaves_earlier_outputs_alone(mirror_dir: Path, tmp_path: Path,
                                                                   name: str) -> None:
    case = CORPUS[name]
    data_dir, broken, fragments = make_broken(mirror_dir, tmp_path, case)
    out, home = tmp_path / "out", tmp_path / "home"
    for relative, content in PREVIOUS.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NNSTUDY_"))}
    env["NNSTUDY_HOME"] = str(migrated_state_root(home))
    done = subprocess.run([sys.executable, "-m", "nnstudy.cli", "run", "--datasets", case.dataset,
                           "--data-dir", str(data_dir), "--out", str(out), "--allow-unverified"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    error = done.stderr.split("nnstudy: error: ", 1)[1]
    assert_one_paragraph(" ".join(error.split()), broken, [" ".join(f.split()) for f in fragments])
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == set(PREVIOUS)
    assert all((out / relative).read_bytes() == content for relative, content in PREVIOUS.items())
    assert not {"raw", "cache", "trials"} & {p.name for p in home.iterdir()}
