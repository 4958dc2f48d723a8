"""Unattended runs: killed mid-grid and rerun, two runs at once, output paths, locks and the trial store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import psutil
import pytest

from nnstudy.errors import SettingsError
from nnstudy.locks import LockTimeout, hold, try_lock
from nnstudy.settings import RunSettings
from tasks.results import RESULT_COLUMNS
from tests.helpers import migrated_state_root

RESUME_STUDY = str(Path(__file__).parent / "data" / "resume_study.yaml")
PROGRESS = re.compile(r"\[(\d+)/(\d+)\] (.+?): (trained in [\d.]+s|cached)")
# Training tasks of resume_study.yaml per engine: one per trial, or one per batch size (fusion group).
TASKS = {"keras": 6, "fused": 3}
# Where and how long a trial trained differ from run to run; everything else must be equal.
METRIC_COLUMNS = [c for c in RESULT_COLUMNS if c not in ("train_seconds", "worker")]


# ----------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("option", ["out", "home"])
def test_relative_output_paths_may_not_climb_out_of_the_working_directory(tmp_path: Path, option: str) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    with pytest.raises(SettingsError) as caught:
        RunSettings.resolve(profile="quick", cwd=cwd, environ={}, **{option: "../elsewhere"})
    message = str(caught.value)
    assert "'../elsewhere'" in message and str(tmp_path / "elsewhere") in message and "absolute path" in message


def test_home_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="from NNSTUDY_HOME"):
        RunSettings.resolve(profile="quick", cwd=tmp_path, environ={"NNSTUDY_HOME": "a/../../b"})


def test_absolute_output_paths_and_relative_input_paths_are_accepted(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    settings = RunSettings.resolve(profile="quick", cwd=cwd, out=str(tmp_path / "out"), data_dir="../shared",
                                   environ={"NNSTUDY_HOME": str(tmp_path / "state")})
    assert (settings.out_dir, settings.home, settings.data_dir) == (tmp_path / "out", tmp_path / "state",
                                                                     tmp_path / "shared")
    inside = RunSettings.resolve(profile="quick", cwd=cwd, out="reports/../mine", environ={})
    assert (inside.out_dir, inside.home) == (cwd / "mine", cwd / "data")


# ----------------------------------------------------------------------------------------- locks and files


def test_a_held_lock_makes_others_wait_then_time_out_with_a_clear_message(tmp_path: Path) -> None:
    lock = tmp_path / "out" / ".nnstudy.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from nnstudy.locks import try_lock\nh = try_lock(Path(sys.argv[1]))\n"
                               "print('held', flush=True)\ntime.sleep(60)", str(lock)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        assert try_lock(lock) is None
        with pytest.raises(LockTimeout) as caught, hold(lock, what="the output folder X", timeout=0.5):
            pass
        assert f"process {holder.pid}" in str(caught.value) and str(lock) in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
    # A lock dies with its process, however it ends: a killed run never blocks the next one.
    with hold(lock, what="the output folder X", timeout=5):
        assert try_lock(lock) is None


def test_a_run_that_loses_the_race_for_a_preprocessed_cache_entry_keeps_the_winners(tmp_path: Path) -> None:
    from tasks.preprocess import Prepared, read_manifest, write_prepared

    frame = pd.DataFrame({"x": [1.0, 2.0], "__target__": [0.0, 1.0]})
    prepared = Prepared(train=frame, test=frame, n_classes=2)
    directory = tmp_path / "cache" / "exp" / "key"
    barrier, manifests, errors = threading.Barrier(4), [], []

    def write() -> None:
        barrier.wait()
        try:
            manifests.append(write_prepared(prepared, directory, "key"))
        except Exception as exc:  # noqa: BLE001 (collected for the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(manifests) == 4
    assert read_manifest(directory) == manifests[0]
    assert [p.name for p in directory.parent.iterdir()] == ["key"]  # no staging folders left


# ----------------------------------------------------------------------------------------- whole runs


def cli(*args: str, home: Path, cwd: Path) -> subprocess.Popen:
    """Start the CLI in its own process group (so the group, its Prefect server included, can be killed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NNSTUDY_"))}
    env["NNSTUDY_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "nnstudy.cli", "run", "--profile", "quick", "--datasets", "boston",
                             "--study-file", RESUME_STUDY, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a CLI run; its output, after checking that it succeeded."""
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def progress(output: str) -> dict[str, str]:
    """Trial label -> 'trained' or 'cached', from the CLI's progress lines."""
    return {m.group(3): m.group(4).split()[0] for m in PROGRESS.finditer(output)}


def metrics(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)[METRIC_COLUMNS]


def kill_group(process: subprocess.Popen) -> list[psutil.Process]:
    """SIGKILL the process and everything it started (the temporary Prefect server too); return the group."""
    group = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return group


@pytest.mark.slow
@pytest.mark.mirror
@pytest.mark.parametrize("engine", ["fused", "keras"])
def test_killed_mid_grid_a_rerun_recomputes_no_finished_trial(mirror_dir: Path, tmp_path: Path, engine: str) -> None:
    home, out = migrated_state_root(tmp_path / "home"), tmp_path / "out"
    kill_after = TASKS[engine] // 3
    run = cli("--data-dir", str(mirror_dir), "--out", str(out), "--engine", engine, home=home, cwd=tmp_path)
    lines, finished = [], {}
    try:
        for line in run.stdout:
            lines.append(line)
            if (match := PROGRESS.search(line)) is not None:
                finished[match.group(3)] = match.group(4)
                if len(finished) == kill_after:
                    break
        group = kill_group(run)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert len(finished) == kill_after, "".join(lines)[-3000:]
    assert all(how.startswith("trained") for how in finished.values())
    _, alive = psutil.wait_procs(group, timeout=30)
    assert not alive, f"left running after the kill: {[p.cmdline() for p in alive]}"
    assert not out.exists(), "a killed run must not leave outputs"
    records = [json.loads(p.read_bytes()) for p in (home / "trials").iterdir()]
    assert len(records) >= kill_after and all(r["result"] for r in records)  # JSON records, nothing pickled

    rerun = progress(finish(cli("--data-dir", str(mirror_dir), "--out", str(out), "--engine", engine, home=home,
                                cwd=tmp_path)))
    assert len(rerun) == TASKS[engine]
    assert {label: rerun[label] for label in finished} == {label: "cached" for label in finished}
    assert sorted(label for label, how in rerun.items() if how == "trained") == sorted(set(rerun) - set(finished))
    assert not [p.name for p in out.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]

    fresh = progress(finish(cli("--data-dir", str(mirror_dir), "--out", str(tmp_path / "fresh"), "--engine", engine,
                                home=migrated_state_root(tmp_path / "fresh-home"), cwd=tmp_path)))
    assert set(fresh.values()) == {"trained"}
    pd.testing.assert_frame_equal(metrics(out / "results.parquet"), metrics(tmp_path / "fresh" / "results.parquet"))


@pytest.mark.slow
@pytest.mark.mirror
def test_two_runs_at_once_on_one_state_root_and_output_folder(mirror_dir: Path, tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    runs = [cli("--data-dir", str(mirror_dir), "--out", str(out), home=home, cwd=tmp_path) for _ in range(2)]
    try:
        outputs = [finish(run, timeout=900) for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    for output in outputs:
        assert len(progress(output)) == TASKS["fused"] and "Traceback" not in output and "database is locked" not in output
    # One run used the shared Prefect database, the other a private one, removed when it ended.
    assert (home / "prefect" / "prefect.db").is_file()
    assert list((home / "prefect-runs").iterdir()) == []
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns) == RESULT_COLUMNS and len(results) == 12
    assert "6 trials" in (out / "report.md").read_text()
    assert not [p.name for p in out.rglob("*.tmp")]
    # Both left complete trial records: a third run of the flow trains nothing...
    third = progress(finish(cli("--data-dir", str(mirror_dir), "--out", str(out), "--force", home=home, cwd=tmp_path)))
    assert set(third.values()) == {"cached"}
    # ...and without --force it does not even start: the outputs it left are up to date.
    fourth = finish(cli("--data-dir", str(mirror_dir), "--out", str(out), home=home, cwd=tmp_path))
    assert "nnstudy: up to date" in fourth and not progress(fourth)
