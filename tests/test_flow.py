"""The study flow against a real (temporary, loopback) Prefect server, on the local data mirror."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from nnstudy.errors import DataIntegrityError, ValidationFailed
from tasks import fused, preprocess, train
from tasks.results import RESULT_COLUMNS

pytestmark = pytest.mark.slow
TINY_STUDY = str(Path(__file__).parent / "data" / "tiny_study.yaml")


@pytest.fixture
def counters(monkeypatch):
    """Counts real training (per Keras trial, per fused group) and preprocessing calls."""
    calls = {"fit": 0, "group": 0, "prepare": 0}
    real_fit, real_group, real_prepare = train.fit_and_evaluate, fused.train_group, preprocess.prepare_experiment

    def counting_fit(*args, **kwargs):
        calls["fit"] += 1
        return real_fit(*args, **kwargs)

    def counting_group(*args, **kwargs):
        calls["group"] += 1
        return real_group(*args, **kwargs)

    def counting_prepare(*args, **kwargs):
        calls["prepare"] += 1
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(train, "fit_and_evaluate", counting_fit)
    monkeypatch.setattr(fused, "train_group", counting_group)
    monkeypatch.setattr(preprocess, "prepare_experiment", counting_prepare)
    return calls


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NNSTUDY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NNSTUDY_DATA_DIR", raising=False)
    return tmp_path / "home"


def run_study(**kwargs):
    from flows.study import study

    return study(profile="quick", study_file=TINY_STUDY, **kwargs)


def altered_copy(mirror: Path, tmp_path: Path, edit) -> Path:
    """A data dir whose boston/housing.data has one line changed by `edit`."""
    data_dir = tmp_path / "altered"
    shutil.copytree(mirror / "boston", data_dir / "boston")
    path = data_dir / "boston" / "housing.data"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = edit(lines[3])
    path.write_text("".join(lines))
    return data_dir


def test_flow_writes_results_and_report_and_a_rerun_recomputes_nothing(
        prefect_server, mirror_dir, home, tmp_path, counters):
    out = tmp_path / "out"
    report = Path(run_study(datasets=["boston", "adult"], data_dir=str(mirror_dir), out=str(out)))
    assert report == out / "report.md"
    # Fused engine: one run per (experiment, batch size); Adult's 1- and 2-epoch cells share one run.
    assert counters == {"fit": 0, "group": 2, "prepare": 2}
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns) == RESULT_COLUMNS
    assert len(results) == 8 and set(results["split"]) == {"train", "test"}
    assert set(results["engine"]) == {"fused"}
    assert [len(curve) for curve in results["loss_curve"]] == (results["epochs"]).tolist()
    boston = results[results["experiment"] == "boston"]
    assert boston["rmse"].notna().all() and boston["f1"].isna().all()
    assert (boston["rmse"] ** 2 != boston["mae"]).all()
    assert boston["n_rows"].tolist() == [102, 102, 404, 404]
    text = report.read_text()
    for table in ("Table 5", "Table 6", "Table 9"):
        assert table in text
    assert "(1, 128)" in text and "(2, 128)" in text
    assert (out / "validation" / "boston.json").exists() and (out / "validation" / "adult.json").exists()
    first_mtime = (out / "results.parquet").stat().st_mtime_ns

    run_study(datasets=["boston", "adult"], data_dir=str(mirror_dir), out=str(out))
    assert counters == {"fit": 0, "group": 2, "prepare": 2}, "the rerun trained or preprocessed again"
    again = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(results, again)
    assert (out / "results.parquet").stat().st_mtime_ns >= first_mtime
    assert "4 trials (4 from cache)" in (out / "report.md").read_text()


def test_altered_file_is_refused_before_anything_is_written(prefect_server, mirror_dir, home, tmp_path, counters):
    data_dir = altered_copy(mirror_dir, tmp_path, lambda line: line.replace("0", "1", 1))
    out = tmp_path / "out"
    with pytest.raises(DataIntegrityError) as caught:
        run_study(datasets=["boston"], data_dir=str(data_dir), out=str(out))
    message = str(caught.value)
    assert str(data_dir / "boston" / "housing.data") in message
    assert "d4accdce7a25600298819f8e28e8d593" in message
    assert counters == {"fit": 0, "group": 0, "prepare": 0}
    assert not out.exists() and not (home / "cache").exists()


def test_invalid_values_stop_the_run_before_training(prefect_server, mirror_dir, home, tmp_path, counters):
    # MEDV is the last field; 60 is above the data's 50.0 cap.
    data_dir = altered_copy(mirror_dir, tmp_path, lambda line: line.rsplit(None, 1)[0] + "  60.00\n")
    out = tmp_path / "out"
    with pytest.raises(ValidationFailed) as caught:
        run_study(datasets=["boston"], data_dir=str(data_dir), out=str(out), allow_unverified=True)
    message = str(caught.value)
    assert "housing.data" in message and "MEDV" in message and "60.0" in message
    assert counters == {"fit": 0, "group": 0, "prepare": 0}
    assert not out.exists() and not (home / "cache").exists()


def test_keras_engine_trains_one_model_per_trial(prefect_server, mirror_dir, home, tmp_path, counters):
    out = tmp_path / "out"
    run_study(datasets=["adult"], data_dir=str(mirror_dir), out=str(out), engine="keras")
    assert counters == {"fit": 2, "group": 0, "prepare": 1}
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["engine"]) == {"keras"}
    assert [len(curve) for curve in results["loss_curve"]] == (results["epochs"]).tolist()


def test_failed_trial_fails_the_run_and_a_rerun_trains_only_what_failed(
        prefect_server, mirror_dir, home, tmp_path, counters, monkeypatch):
    from nnstudy.errors import TrialsFailed

    counting_fit = train.fit_and_evaluate

    def failing_for_sigmoid(arrays, spec, **kwargs):
        if spec.activation == "sigmoid":
            raise RuntimeError("simulated out-of-memory")
        return counting_fit(arrays, spec, **kwargs)

    monkeypatch.setattr(train, "fit_and_evaluate", failing_for_sigmoid)
    out = tmp_path / "out"
    with pytest.raises(TrialsFailed) as caught:
        run_study(datasets=["boston"], data_dir=str(mirror_dir), out=str(out), engine="keras")
    assert "1 of 2 training tasks failed" in str(caught.value)
    assert "boston L1 U8 sigmoid e2 b64 s0" in str(caught.value) and "simulated out-of-memory" in str(caught.value)
    assert not out.exists()
    assert counters["fit"] == 1

    monkeypatch.setattr(train, "fit_and_evaluate", counting_fit)
    run_study(datasets=["boston"], data_dir=str(mirror_dir), out=str(out), engine="keras")
    assert counters["fit"] == 2, "the rerun should train only the trial that failed"
    assert len(pd.read_parquet(out / "results.parquet")) == 4


def test_failed_group_fails_the_run_and_a_rerun_trains_only_that_group(
        prefect_server, mirror_dir, home, tmp_path, counters, monkeypatch):
    from nnstudy.errors import TrialsFailed

    counting_group = fused.train_group

    def failing_for_boston(arrays, trials, **kwargs):
        if trials[0].experiment == "boston":
            raise RuntimeError("simulated out-of-memory")
        return counting_group(arrays, trials, **kwargs)

    monkeypatch.setattr(fused, "train_group", failing_for_boston)
    out = tmp_path / "out"
    with pytest.raises(TrialsFailed) as caught:
        run_study(datasets=["boston", "adult"], data_dir=str(mirror_dir), out=str(out))
    assert "1 of 2 training tasks failed" in str(caught.value)
    assert "boston b64 [L1 U8 relu,sigmoid e2 s0]" in str(caught.value)
    assert not out.exists() and counters["group"] == 1

    monkeypatch.setattr(fused, "train_group", counting_group)
    run_study(datasets=["boston", "adult"], data_dir=str(mirror_dir), out=str(out))
    assert counters["group"] == 2, "the rerun should train only the group that failed"
    assert len(pd.read_parquet(out / "results.parquet")) == 8
