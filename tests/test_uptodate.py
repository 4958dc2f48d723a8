"""The up-to-date check that lets an identical `nnstudy run` return the existing report at once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nnstudy import uptodate
from nnstudy.uptodate import STAMP_NAME, request_key, why_stale, write_stamp


def key_for(tmp_path: Path, **changes) -> dict:
    arguments = dict(profile="quick", datasets=["boston"], seeds=None, study_file=None, engine="fused",
                     allow_unverified=False, data_dir=tmp_path / "data")
    return request_key(**dict(arguments, **changes))


@pytest.fixture
def finished_run(tmp_path: Path) -> tuple[Path, Path, dict]:
    """An output folder with a report, a figure and the stamp of the run that wrote them."""
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "boston").mkdir(parents=True)
    (data / "boston" / "housing.data").write_text("0.1 0.2\n")
    (out / "figures").mkdir(parents=True)
    (out / "report.md").write_text("# report\n")
    (out / "figures" / "a.png").write_bytes(b"png")
    key = key_for(tmp_path)
    write_stamp(out, key, [data / "boston" / "housing.data"], {"started": "2026-01-01T00:00:00+00:00", "n_trials": 2})
    return data, out, key


def test_outputs_written_for_the_same_key_are_up_to_date(finished_run, tmp_path):
    data, out, key = finished_run
    assert why_stale(out, key_for(tmp_path)) is None
    assert uptodate.last_run(out)["n_trials"] == 2
    stamp = json.loads((out / STAMP_NAME).read_text())
    assert set(stamp["outputs"]) == {"report.md", "figures/a.png"}  # the stamp is not its own output


@pytest.mark.parametrize("change, field", [
    ({"seeds": [0, 1]}, "trials"),
    ({"datasets": ["adult"]}, "trials"),
    ({"profile": "sample"}, "profile"),
    ({"engine": "keras"}, "engine"),
    ({"allow_unverified": True}, "allow_unverified"),
])
def test_a_different_request_is_not_up_to_date(finished_run, tmp_path, change, field):
    _, out, _ = finished_run
    reason = why_stale(out, key_for(tmp_path, **change))
    assert reason is not None and field in reason


def test_a_changed_study_file_is_not_up_to_date(finished_run, tmp_path):
    _, out, _ = finished_run
    study = tmp_path / "study.yaml"
    study.write_text((Path(uptodate.__file__).parents[1] / "schemas" / "study.yaml").read_text())
    assert "study_file" in why_stale(out, key_for(tmp_path, study_file=str(study)))


def test_a_new_file_in_the_data_folder_is_noticed(finished_run, tmp_path):
    data, out, _ = finished_run
    (data / "mnist").mkdir()
    (data / "mnist" / "mnist.npz").write_bytes(b"x")
    assert "data_dir_listing" in why_stale(out, key_for(tmp_path))


def test_a_data_file_rewritten_in_place_is_noticed(finished_run, tmp_path):
    data, out, key = finished_run
    path = data / "boston" / "housing.data"
    stat = path.stat()
    path.write_text("0.1 0.3\n")  # same size; put the old modification time back so the listing agrees
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert why_stale(out, key_for(tmp_path)) == f"the data file {path} changed"


@pytest.mark.parametrize("edit", ["change", "delete", "add"])
def test_changed_outputs_are_not_up_to_date(finished_run, tmp_path, edit):
    _, out, key = finished_run
    if edit == "change":
        (out / "report.md").write_text("# edited\n")
        name = "report.md"
    elif edit == "delete":
        (out / "figures" / "a.png").unlink()
        name = "figures/a.png"
    else:
        (out / "results.parquet").write_bytes(b"other")
        name = "results.parquet"
    assert why_stale(out, key) == f"the output {out / name} was changed, added or removed"


def test_no_stamp_or_an_unreadable_one_means_run(finished_run, tmp_path):
    _, out, key = finished_run
    (out / STAMP_NAME).write_text("{not json")
    assert "unreadable" in why_stale(out, key)
    (out / STAMP_NAME).unlink()
    assert why_stale(out, key) == "no earlier run wrote to this folder"


def test_the_key_covers_the_code_and_package_versions(tmp_path, monkeypatch):
    key = key_for(tmp_path)
    assert len(key["code"]) == 64 and "pandas" in key["packages"]
    monkeypatch.setattr(uptodate, "CODE_SUFFIXES", {".py"})  # fewer files hashed: a different digest
    assert uptodate.code_digest() != key["code"]
