"""The study specification: experiments, their hyperparameter grids and run profiles."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from nnstudy.errors import StudySpecError

DEFAULT_STUDY_FILE = Path(__file__).with_name("study.yaml")

Dataset = Literal["mnist", "boston", "adult"]
Task = Literal["classification", "regression"]
Activation = Literal["relu", "sigmoid", "tanh"]
ProfileName = Literal["quick", "sample", "full"]
Split = Literal["train", "test"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Grid(_Strict):
    """A full-factorial hyperparameter grid: every combination of the listed values."""

    hidden_layers: list[PositiveInt] = Field(min_length=1)
    units: list[PositiveInt] = Field(min_length=1)
    activation: list[Activation] = Field(min_length=1)
    epochs: list[PositiveInt] = Field(min_length=1)
    batch_size: list[PositiveInt] = Field(min_length=1)

    def size(self) -> int:
        """Number of cells in the grid."""
        return (len(self.hidden_layers) * len(self.units) * len(self.activation)
                * len(self.epochs) * len(self.batch_size))


class GridOverride(_Strict):
    """Replaces some axes of an experiment's grid in one profile."""

    hidden_layers: list[PositiveInt] | None = None
    units: list[PositiveInt] | None = None
    activation: list[Activation] | None = None
    epochs: list[PositiveInt] | None = None
    batch_size: list[PositiveInt] | None = None

    def apply(self, grid: Grid) -> Grid:
        """Return the grid with this override's axes replacing the originals."""
        return grid.model_copy(update=self.model_dump(exclude_none=True))


class Experiment(_Strict):
    """One learning task of the study: a data set, a target and a grid."""

    dataset: Dataset
    task: Task
    target: str
    positive_label: str | None = None
    tables: dict[Split, int] = Field(default_factory=dict)
    note: str = ""
    grid: Grid

    @model_validator(mode="after")
    def _classification_of_adult_needs_positive_label(self) -> Experiment:
        if self.task == "classification" and self.dataset == "adult" and not self.positive_label:
            raise ValueError("an Adult classification needs positive_label (for example '>50K')")
        return self


class Profile(_Strict):
    """How much of the study to run: seeds, data limits and grid overrides."""

    description: str = ""
    seeds: list[int] = Field(min_length=1)
    accept_mnist_subsample: bool = False
    max_train_rows: PositiveInt | None = None
    max_test_rows: PositiveInt | None = None
    grids: dict[str, GridOverride] = Field(default_factory=dict)


class TrialSpec(_Strict):
    """One grid cell and seed: what a single training run needs to know."""

    experiment: str
    dataset: Dataset
    task: Task
    hidden_layers: PositiveInt
    units: PositiveInt
    activation: Activation
    epochs: PositiveInt
    batch_size: PositiveInt
    seed: int

    @property
    def label(self) -> str:
        """Short human name, used for Prefect task-run names and logs."""
        return (f"{self.experiment} L{self.hidden_layers} U{self.units} {self.activation} "
                f"e{self.epochs} b{self.batch_size} s{self.seed}")

    @property
    def slug(self) -> str:
        """Sorted key=value pairs, usable as a folder or cache-key name."""
        params = self.model_dump()
        return ",".join(f"{k}={params[k]}" for k in sorted(params))

    def digest(self) -> str:
        """Hash of the sorted parameters: a changed grid point is a new trial."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()


class StudySpec(_Strict):
    """The whole study file: experiments and profiles."""

    experiments: dict[str, Experiment] = Field(min_length=1)
    profiles: dict[ProfileName, Profile]

    @model_validator(mode="after")
    def _overrides_name_known_experiments(self) -> StudySpec:
        for profile_name, profile in self.profiles.items():
            unknown = sorted(set(profile.grids) - set(self.experiments))
            if unknown:
                raise ValueError(f"profile {profile_name!r} overrides unknown experiments {unknown}; "
                                 f"known: {sorted(self.experiments)}")
        return self

    def profile(self, name: str) -> Profile:
        """The named profile, or a StudySpecError listing the known ones."""
        if name not in self.profiles:
            raise StudySpecError(f"Unknown profile {name!r}; choose one of {sorted(self.profiles)}.")
        return self.profiles[name]

    def experiments_for(self, datasets: list[str] | None) -> dict[str, Experiment]:
        """Experiments whose data set is in `datasets` (all when None), in file order."""
        known = {e.dataset for e in self.experiments.values()}
        unknown = sorted(set(datasets or []) - known)
        if unknown:
            raise StudySpecError(f"Unknown data set(s) {unknown} in --datasets; choose from {sorted(known)}.")
        return {name: e for name, e in self.experiments.items() if datasets is None or e.dataset in datasets}

    def grid_for(self, experiment: str, profile: str) -> Grid:
        """An experiment's grid as the profile runs it."""
        grid = self.experiments[experiment].grid
        override = self.profile(profile).grids.get(experiment)
        return override.apply(grid) if override else grid

    def trials(self, profile: str, datasets: list[str] | None = None,
               seeds: list[int] | None = None) -> list[TrialSpec]:
        """Every grid cell times every seed, for the selected experiments."""
        seeds = seeds or self.profile(profile).seeds
        out = []
        for name, experiment in self.experiments_for(datasets).items():
            grid = self.grid_for(name, profile)
            for layers, units, activation, epochs, batch, seed in itertools.product(
                    grid.hidden_layers, grid.units, grid.activation, grid.epochs, grid.batch_size, seeds):
                out.append(TrialSpec(experiment=name, dataset=experiment.dataset, task=experiment.task,
                                     hidden_layers=layers, units=units, activation=activation,
                                     epochs=epochs, batch_size=batch, seed=seed))
        return out


def load_study(path: Path | None = None) -> StudySpec:
    """Read and validate a study YAML file; errors name the file and the field."""
    path = Path(path or DEFAULT_STUDY_FILE)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudySpecError(f"Study file {path} does not exist.") from None
    except yaml.YAMLError as exc:
        raise StudySpecError(f"Study file {path} is not valid YAML: {exc}") from None
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors())
        raise StudySpecError(f"Study file {path} is invalid: {problems}.") from None
