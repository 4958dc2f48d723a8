"""What the Prefect UI shows (names, tags, artifact contents), the deployments in prefect.yaml, and the
orchestration's resilience settings; no server needed."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.states import Completed, Failed

from nnstudy.errors import DataIntegrityError, DataNotFoundError, DownloadError
from nnstudy.service import POOL, TRAIN_TAG
from schemas.study import TrialSpec, load_study
from tasks import prefect_ui
from tasks.validate import ValidationReport

ROOT = Path(__file__).resolve().parents[1]
SPEC = TrialSpec(experiment="mnist", dataset="mnist", task="classification", hidden_layers=2, units=64,
                 activation="relu", epochs=10, batch_size=128, seed=0)


def test_trial_run_name_and_tags():
    assert prefect_ui.trial_run_name({"spec": SPEC, "ref": None}) == "train mnist L2 U64 relu e10 b128 s0"
    assert prefect_ui.dataset_tags("mnist", "adult", "mnist") == ["adult", "mnist"]


def test_train_task_carries_name_tag_timeout_and_keeps_its_tag_when_tagged():
    from tasks.steps import train_trial

    assert prefect_ui.TRAIN_CONCURRENCY_TAG == TRAIN_TAG
    assert train_trial.task_run_name is prefect_ui.trial_run_name
    assert train_trial.timeout_seconds and train_trial.timeout_seconds > 0
    tagged = prefect_ui.tagged(train_trial, "boston")
    assert tagged.tags == {"nnstudy-train", "boston"} and train_trial.tags == {"nnstudy-train"}


def test_results_table_leads_with_the_cell_and_metrics_and_keeps_only_scalars():
    rows = [{"dataset": "mnist", "experiment": "mnist", "split": "test", "hidden_layers": np.int64(2),
             "f1": np.float64(0.912345678), "rmse": float("nan"), "loss_curve": [0.5, 0.4], "trial_key": "ab12"}]
    table = prefect_ui.results_table(rows)
    assert table == [{"experiment": "mnist", "split": "test", "hidden_layers": 2, "f1": 0.9123, "rmse": None,
                      "dataset": "mnist", "trial_key": "ab12"}]
    assert list(table[0])[:4] == ["experiment", "split", "hidden_layers", "f1"]
    assert type(table[0]["hidden_layers"]) is int
    assert rows[0]["loss_curve"] == [0.5, 0.4]  # the input is left as it was


def _report(success: bool, failures: list[str]) -> ValidationReport:
    return ValidationReport(dataset="boston", file="boston/housing.data", suite="boston", success=success,
                            evaluated=44, failed=len(failures), failures=failures, result={})


def test_validation_markdown_says_passed_or_lists_failures():
    passed = prefect_ui.validation_markdown("boston", [_report(True, [])])
    assert passed.startswith("# Validation of boston: passed")
    assert "| `boston/housing.data` | boston | 44 | 0 | passed |" in passed
    failed = prefect_ui.validation_markdown("boston", [_report(True, []), _report(False, ["CRIM > 100 (a|b)"])])
    assert failed.startswith("# Validation of boston: FAILED")
    assert "| 44 | 1 | CRIM > 100 (a\\|b) |" in failed


def test_progress_text():
    assert prefect_ui.progress_text(4, 6, 1, 0) == "4/6 trials finished (1 cached, 0 failed)"


def _failed_with(exc: Exception, cause: Exception | None = None):
    exc.__cause__ = cause
    return Failed(data=exc, message=str(exc))


@pytest.mark.parametrize("state, retried", [
    (_failed_with(DataNotFoundError("boston not found"), DownloadError("timed out")), True),
    (_failed_with(DataNotFoundError("boston not found, downloads are off")), False),
    (_failed_with(DataIntegrityError("expected md5 X, got Y")), False),
    (Completed(data=1), False),
])
def test_resolving_is_retried_only_after_a_failed_download(state, retried):
    from tasks.steps import download_failed

    assert download_failed(None, None, state) is retried


# ------------------------------------------------------------------ prefect.yaml

@pytest.fixture(scope="module")
def project():
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_prefect_yaml_runs_from_the_checkout_without_network(project):
    assert project["build"] is None and project["push"] is None
    assert project["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}]


def test_prefect_yaml_deployments_have_valid_parameters_schedules_and_pool(project):
    from flows.study import study

    deployments = {d["name"]: d for d in project["deployments"]}
    assert {"quick", "sample", "full"} <= set(deployments)
    profiles = set(load_study().profiles)
    for name, deployment in deployments.items():
        path, function = deployment["entrypoint"].split(":")
        assert (ROOT / path).is_file() and function == "study"
        parameters = deployment["parameters"]
        assert parameters["profile"] == name and name in profiles
        assert {"data_dir", "datasets", "seeds"} <= set(parameters)
        study.validate_parameters(parameters)  # raises on a value the flow's typed signature refuses
        assert deployment["work_pool"]["name"] == POOL
        assert deployment["work_pool"]["job_variables"]["env"]["TF_CPP_MIN_LOG_LEVEL"] == "3"
        assert deployment["schedules"], f"deployment {name} has no schedule"
        for schedule in deployment["schedules"]:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert deployments["sample"]["schedules"][0]["cron"] == "0 3 * * 0"
