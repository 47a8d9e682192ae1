"""Study files: pydantic models, errors that name the field (as :mod:`medcl.sweep.config`).

A study is the comparison table of a paper as one file::

    name: tiny_study
    experiment: ../quickstart.yaml            # the base experiment: a file (relative to this one) or inline
    methods:
      - label: finetune                       # a folder name; also the strategy's name unless strategy.name is given
      - label: rehearsal
        strategy: {buffer_size: 50}           # fixed parameters of the strategy section
        set: {train.lr: 3.0e-3}               # fixed experiment fields for this method only (dotted)
        space:                                # optional: tuned on validation data (the sweep's syntax)
          strategy.replay_fraction: {uniform: [0.2, 0.8]}
    baseline: finetune                        # paired differences are against this label
    claims:                                   # optional: findings checked as paired differences
      - {claim: "rehearsal keeps more than finetune", left: rehearsal, right: finetune, metric: last}
    ablations:                                # optional: a method with one choice switched, against it
      - {label: rehearsal_small, of: rehearsal}
    seeds: [0, 1, 2]
    orders: [[xray, ultrasound], [ultrasound, xray]]   # optional; default: the benchmark's own order
    tuning: {trials: 8, objective: avg, searcher: {name: tpe, seed: 0}}
    resources: {trial_cpus: 1, train_workers: 0}       # per run (the sweep's Resources)
    max_concurrent_runs: 2
    output_dir: studies

Every method with a ``space`` gets exactly ``tuning.trials`` trials (equal budgets); a method with
none is run with its fixed parameters. ``--set`` paths address the study file
(``tuning.trials=4``, ``experiment.train.steps_per_task=5``, ``methods.1.strategy.buffer_size=20``).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medcl.config import ConfigError
from medcl.names import FolderName
from medcl.paths import PathStr
from medcl.sweep.config import Distribution, Objective, Resources, Searcher

STUDY_METRICS = ("transfer", "avg", "last", "bwt")  # reported for every study; auc_<m> too when every run has them
LOWER_IS_BETTER = ("forgetting", "auc_forgetting")


class StudyConfigError(ConfigError):
    """An invalid study file; ``problems`` is a list of ``(dotted field, message)``."""

    what = "invalid study"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Method(_Model):
    """One row of the table: ``label`` (a folder name), the ``strategy`` section's fixed parameters
    (``name`` defaults to ``label``), ``set`` (other fixed experiment fields, dotted) and an
    optional search ``space`` over dotted experiment fields (:class:`medcl.sweep.config.Distribution`)."""

    label: FolderName
    strategy: dict[str, Any] = {}
    set: dict[str, Any] = {}
    space: dict[str, Distribution] = {}

    @property
    def tuned(self) -> bool:
        return bool(self.space)

    @property
    def strategy_section(self) -> dict[str, Any]:
        return {"name": self.label, **self.strategy}


class Claim(_Model):
    """A finding the study checks: ``left`` beats ``right`` on ``metric`` (``direction`` higher: left >
    right; lower: left < right), decided on the per-seed paired differences ``left - right``:
    holds / fails / inconclusive (:func:`medcl.stats.paired_difference`)."""

    claim: str = Field(min_length=1)
    left: str
    right: str
    metric: str
    direction: Literal["higher", "lower"] = "higher"


class Ablation(_Model):
    """Method ``label`` is method ``of`` with one choice switched: reported as the paired difference
    ``label - of`` on :data:`ABLATION_METRICS`, no direction claimed."""

    label: str
    of: str


ABLATION_METRICS = ("transfer", "avg", "last")


class Tuning(_Model):
    """The equal tuning budget: ``trials`` per method with a space, scored by ``objective`` on
    validation data (``train.eval_split: val``; ``val_fraction`` of each task's train split when the
    benchmark has no val split), with the experiment seed ``seed`` (default: the study's first seed)
    and the study's first order. ``searcher``: Optuna's sampler (as a sweep's)."""

    trials: int = Field(default=8, ge=1)
    objective: Objective = Objective(metric="avg")
    searcher: Searcher = Searcher(n_startup_trials=4)
    seed: int | None = Field(default=None, ge=0)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_shorthand(cls, value):
        return {"metric": value} if isinstance(value, str) else value


class StudyConfig(_Model):
    name: FolderName  # the study folder output_dir/name (medcl.names)
    experiment: dict[str, Any]
    methods: list[Method] = Field(min_length=1)
    baseline: str
    seeds: list[int] = Field(default=[0], min_length=1)
    orders: list[list[str]] | None = Field(default=None, min_length=1)
    tuning: Tuning = Tuning()
    resources: Resources = Resources(trial_cpus=1.0, train_workers=0)
    max_concurrent_runs: int = Field(default=2, ge=1)
    level: float = Field(default=0.95, gt=0, lt=1)
    claims: list[Claim] = []
    ablations: list[Ablation] = []
    output_dir: PathStr = "studies"

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value):
        if len(set(value)) != len(value) or any(s < 0 for s in value):
            raise ValueError(f"seeds must be distinct integers >= 0 (got {value})")
        return value

    @field_validator("output_dir")
    @classmethod
    def _local(cls, value):
        if "://" in str(value):
            raise ValueError(f"{value!r}: a study writes its tables, plots and board to a local folder or a shared "
                             "mount (on a cluster: a path every node sees); object-store URIs are not supported here")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "StudyConfig":
        labels = [m.label for m in self.methods]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"methods: label(s) {twice} appear more than once; labels name the table's rows")
        if self.baseline not in labels:
            raise ValueError(f"baseline: {self.baseline!r} is not a method label; labels: {', '.join(labels)}")
        _check_labels(self, labels)
        if self.orders is not None:
            names = sorted(self.orders[0])
            if any(sorted(o) != names or len(set(o)) != len(o) for o in self.orders):
                raise ValueError("orders: every order must list the same tasks once each")
            if len({tuple(o) for o in self.orders}) != len(self.orders):
                raise ValueError("orders: an order is listed twice")
        return self

    @property
    def tuning_seed(self) -> int:
        return self.seeds[0] if self.tuning.seed is None else self.tuning.seed

    @property
    def study_dir(self):
        """``<output_dir>/<name>``: a local absolute :class:`~pathlib.Path`."""
        from pathlib import Path

        return (Path(self.output_dir) / self.name).resolve()

    def method(self, label: str) -> Method:
        return next(m for m in self.methods if m.label == label)


def _check_labels(study: StudyConfig, labels: list[str]) -> None:
    """Every label a claim or an ablation names is a method; every claim's metric is a study metric."""
    metrics = [*STUDY_METRICS, *(f"auc_{m}" for m in STUDY_METRICS)]
    for i, claim in enumerate(study.claims):
        for side in ("left", "right"):
            if getattr(claim, side) not in labels:
                raise ValueError(f"claims.{i}.{side}: {getattr(claim, side)!r} is not a method label; "
                                 f"labels: {', '.join(labels)}")
        if claim.metric not in metrics:
            raise ValueError(f"claims.{i}.metric: {claim.metric!r} is not a study metric; allowed: {', '.join(metrics)}")
    for i, ablation in enumerate(study.ablations):
        for field in ("label", "of"):
            if getattr(ablation, field) not in labels:
                raise ValueError(f"ablations.{i}.{field}: {getattr(ablation, field)!r} is not a method label; "
                                 f"labels: {', '.join(labels)}")
