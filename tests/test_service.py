"""End to end as a service: a real Prefect server and process worker on 127.0.0.1, the deployments of
prefect.yaml, the quick deployment run twice (the second time every trial is cached)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnstudy.service import POOL, LocalService, ServiceError, free_port, processes_with_home, stop_leftovers
from schemas.study import load_study
from tasks.fused import fusion_groups, group_label

ROOT = Path(__file__).resolve().parents[1]
QUICK_TRIALS = len(load_study().trials("quick"))
# The default (fused) engine runs one training task per fusion group, named after what it holds.
QUICK_TASKS = {f"train {group_label(group)}" for group in fusion_groups(load_study().trials("quick"))}


@pytest.fixture
def service(tmp_path, mirror_dir):
    """Server and worker on a free port with a temporary PREFECT_HOME and state root; both stopped by PID."""
    local = LocalService(state_dir=tmp_path / "service", port=free_port())
    # The state root (trial cache, preprocessed data) is temporary too, so the first run trains for real.
    # The scheduler is off: deploying creates scheduled runs that this test must not race with.
    env = {"NNSTUDY_HOME": str(tmp_path / "home"), "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
    with local.running(ROOT, worker_name="e2e-worker", env=env):
        yield local, env
    assert not local.left_running, f"processes left running after SIGTERM and SIGKILL: {local.left_running}"


def run_quick(local: LocalService, env: dict, mirror: Path, out: Path) -> dict:
    flow_run_id = local.run_deployment("quick", ROOT, {"data_dir": str(mirror), "out": str(out)}, env=env)
    run = local.wait_for_flow_run(flow_run_id, timeout=600)
    worker_log = (local.state_dir / "worker.log").read_text(errors="replace")[-4000:]
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\nworker log:\n{worker_log}"
    return run


def train_states(local: LocalService, flow_run_id: str) -> dict[str, str]:
    return {t["name"]: t["state"]["name"] for t in local.flow_run_task_runs(flow_run_id)
            if t["name"].startswith("train ")}


@pytest.mark.slow
@pytest.mark.mirror
def test_quick_deployment_runs_on_a_worker_with_artifacts_and_reruns_from_cache(service, mirror_dir, tmp_path):
    local, env = service
    deployments = {d["name"]: d for d in local.api("POST", "/deployments/filter", {})}
    assert {"quick", "sample", "full"} <= set(deployments)
    quick = deployments["quick"]
    assert quick["work_pool_name"] == POOL
    assert quick["parameters"]["profile"] == "quick" and quick["parameters"]["data_dir"] == "../shared/datasets"
    assert quick["parameter_openapi_schema"]["properties"]["profile"]["enum"] == ["quick", "sample", "full"]
    assert [s["schedule"]["cron"] for s in deployments["sample"]["schedules"]] == ["0 3 * * 0"]
    assert quick["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)

    out = tmp_path / "reports"
    first = run_quick(local, env, mirror_dir, out)
    assert (out / "report.md").is_file() and (out / "results.parquet").is_file()

    artifacts = {a["key"]: a for a in local.flow_run_artifacts(first["id"])}
    assert artifacts["nnstudy-report-quick"]["type"] == "markdown"
    assert artifacts["nnstudy-report-quick"]["data"] == (out / "report.md").read_text()
    table = artifacts["nnstudy-results-quick"]
    assert table["type"] == "table"
    assert '"split": "test"' in table["data"] and table["data"].count('"split"') == 2 * QUICK_TRIALS
    progress = artifacts["nnstudy-progress"]
    assert progress["type"] == "progress" and progress["data"] == 100.0
    assert progress["description"].startswith(f"{QUICK_TRIALS}/{QUICK_TRIALS} trials finished")
    for dataset in ("mnist", "boston", "adult"):
        assert artifacts[f"nnstudy-validation-{dataset}"]["data"].startswith(f"# Validation of {dataset}: passed")

    states = train_states(local, first["id"])
    assert set(states) == QUICK_TASKS and set(states.values()) == {"Completed"}
    assert "train boston b32 [L1 U32 relu,sigmoid e20 s0]" in states
    task_runs = local.flow_run_task_runs(first["id"])
    boston = next(t for t in task_runs if t["name"] == "train boston b32 [L1 U32 relu,sigmoid e20 s0]")
    assert set(boston["tags"]) == {"boston", "nnstudy-train"}

    second = run_quick(local, env, mirror_dir, out)
    assert set(train_states(local, second["id"]).values()) == {"Cached"}
    worker_log = (local.state_dir / "worker.log").read_text(errors="replace")
    assert "Finished in state Completed" in worker_log
    assert "worker thread" not in worker_log and "oneDNN" not in worker_log


def test_a_busy_port_is_refused_naming_it(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServiceError, match=f"Port {port} on 127.0.0.1 is already in use"):
            LocalService(state_dir=tmp_path, port=port).start_server()


def test_processes_left_with_a_service_home_are_found_and_stopped(tmp_path):
    import os
    import subprocess

    home = tmp_path / "prefect-home"
    # The shell exits at once: the sleep it leaves behind is nobody's child here, like an orphaned flow run.
    started = subprocess.run(["sh", "-c", "sleep 120 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                             env={**os.environ, "PREFECT_HOME": str(home)}, check=True)
    orphan = int(started.stdout)
    try:
        assert processes_with_home(home) == [orphan]
        assert processes_with_home(tmp_path / "other") == []
        assert stop_leftovers(home) == [orphan]
        assert processes_with_home(home) == []
    finally:
        try:
            os.kill(orphan, 9)
        except ProcessLookupError:
            pass
