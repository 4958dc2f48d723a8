"""The study specification: the published grid, profiles, and clear errors for bad files."""

import pytest

from nnstudy.errors import StudySpecError
from schemas.study import TrialSpec, load_study


@pytest.fixture(scope="module")
def study():
    return load_study()


def test_default_study_is_the_published_grid(study):
    sizes = {name: study.grid_for(name, "sample").size() for name in study.experiments}
    assert sizes == {"mnist": 24, "boston": 72, "adult-hours": 24, "adult-income": 4}
    assert len(study.trials("sample")) == 124 * 3  # three seeds per cell
    assert len(study.trials("sample", seeds=[0])) == 124 and len(study.trials("quick")) == 6
    assert study.grid_for("boston", "full") == study.experiments["boston"].grid


def test_quick_profile_is_small_and_covers_every_experiment(study):
    trials = study.trials("quick")
    assert {t.experiment for t in trials} == set(study.experiments)
    assert len(trials) <= 10
    assert study.profile("quick").max_train_rows is not None


def test_seeds_multiply_trials_and_datasets_select_experiments(study):
    trials = study.trials("sample", datasets=["adult"], seeds=[0, 1, 2])
    assert len(trials) == 3 * (24 + 4)
    assert {t.experiment for t in trials} == {"adult-hours", "adult-income"}


def test_trial_label_slug_and_digest():
    spec = TrialSpec(experiment="mnist", dataset="mnist", task="classification", hidden_layers=2, units=64,
                     activation="relu", epochs=10, batch_size=128, seed=0)
    assert spec.label == "mnist L2 U64 relu e10 b128 s0"
    assert spec.slug.startswith("activation=relu,batch_size=128,dataset=mnist,epochs=10")
    assert spec.digest() != spec.model_copy(update={"seed": 1}).digest()
    assert spec.digest() == TrialSpec(**spec.model_dump()).digest()


@pytest.mark.parametrize("text, fragment", [
    ("experiments: {}\nprofiles: {}\n", "experiments"),
    ("experiments:\n  m: {dataset: cifar, task: classification, target: y, grid: "
     "{hidden_layers: [1], units: [8], activation: [relu], epochs: [1], batch_size: [8]}}\n"
     "profiles: {quick: {seeds: [0]}}\n", "experiments.m.dataset"),
    ("experiments:\n  m: {dataset: mnist, task: classification, target: y, grid: "
     "{hidden_layers: [0], units: [8], activation: [relu], epochs: [1], batch_size: [8]}}\n"
     "profiles: {quick: {seeds: [0]}}\n", "experiments.m.grid.hidden_layers.0"),
    ("experiments:\n  m: {dataset: mnist, task: classification, target: y, grid: "
     "{hidden_layers: [1], units: [8], activation: [relu], epochs: [1], batch_size: [8]}}\n"
     "profiles: {quick: {seeds: [0], grids: {nope: {epochs: [1]}}}}\n", "unknown experiments ['nope']"),
    ("experiments: [\n", "not valid YAML"),
])
def test_invalid_study_file_names_file_and_field(tmp_path, text, fragment):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(StudySpecError) as caught:
        load_study(path)
    assert str(path) in str(caught.value)
    assert fragment in str(caught.value)


def test_unknown_profile_and_dataset_are_refused(study):
    with pytest.raises(StudySpecError, match="Unknown profile 'huge'"):
        study.profile("huge")
    with pytest.raises(StudySpecError, match=r"Unknown data set\(s\) \['cifar'\]"):
        study.experiments_for(["cifar"])
