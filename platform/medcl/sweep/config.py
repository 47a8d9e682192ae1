"""Sweep files: pydantic models, YAML loading, ``--set`` overrides, errors that name the field.

A sweep file holds a base experiment (a path to an experiment file, relative to the sweep file, or
the experiment inline), a search space over the experiment's dotted fields, task orders, the
objective, the searcher, the ASHA scheduler and the resources::

    name: tiny_synthmed
    experiment: ../quickstart.yaml          # or an inline mapping
    space:
      train.lr: {loguniform: [1.0e-4, 1.0e-2]}
      strategy.buffer_size: {int: [10, 200]}
      strategy.policy: {choice: [reservoir, class_balanced]}
    order: {permutations: 3, seed: 0}       # or "permutations" (all), or [[a, b], [b, a]]
    objective: [{metric: avg}, {metric: transfer}]   # mode: max by default (min for forgetting)
    searcher: {name: tpe, seed: 0}
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
    num_samples: 8
    max_concurrent_trials: 2
    resources: {trial_cpus: 0.25, train_workers: 1, worker_cpus: 1}

``--set`` paths address the sweep file (``num_samples=4``); ``experiment.<path>`` addresses the base
experiment even when it is given as a file (``--set experiment.train.steps_per_task=5``).
Reading and checking a whole file (the space against the base experiment) is :mod:`.loading`.
"""
from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medcl.config import ConfigError
from medcl.metrics import ALL_METRIC_KEYS
from medcl.names import FolderName
from medcl.paths import PathStr

METRICS = ALL_METRIC_KEYS  # accuracy metrics, then auc_<metric> on the AUC matrix
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
ORDER_PARAM = "order"  # the search-space name of the task-order dimension (sets benchmark.order)


class SweepConfigError(ConfigError):
    """An invalid sweep file; ``problems`` is a list of ``(dotted field, message)``."""

    what = "invalid sweep"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Model):
    """One search dimension: exactly one of ``uniform: [low, high]``, ``loguniform: [low, high]``
    (low > 0), ``int: [low, high]`` (inclusive; optional ``step``), ``choice: [v1, v2, ...]``
    (numbers, strings, booleans, null; lists or mappings of them, e.g. ``benchmark.classes``, are
    given to Optuna as their JSON text)."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None
    choice: list[Any] | None = None
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, value):
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping such as {{loguniform: [1e-4, 1e-2]}}; allowed kinds: "
                             f"{', '.join(DISTRIBUTIONS)} (got {value!r})")
        kinds = [k for k in value if k != "step"]
        unknown = [k for k in kinds if k not in DISTRIBUTIONS]
        if unknown:
            raise ValueError(f"unknown distribution {unknown[0]!r}; allowed kinds: {', '.join(DISTRIBUTIONS)}")
        if len(kinds) != 1:
            raise ValueError(f"give exactly one distribution kind (got {kinds or 'none'}); "
                             f"allowed kinds: {', '.join(DISTRIBUTIONS)}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> "Distribution":
        low_high = self.uniform or self.loguniform or self.int
        if low_high is not None and not low_high[0] < low_high[1]:
            raise ValueError(f"{self.kind}: low must be below high (got {list(low_high)})")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: low must be > 0 (got {self.loguniform[0]})")
        if self.choice is not None:
            if not self.choice:
                raise ValueError("choice: give at least one value")
            bad = [v for v in self.choice if not _plain(v)]
            if bad:
                raise ValueError(f"choice: values must be numbers, strings, booleans, null, or lists/mappings "
                                 f"of them, got {bad[0]!r}")
        if self.step is not None and self.kind in ("loguniform", "choice"):
            raise ValueError(f"step is not allowed with {self.kind}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if getattr(self, k) is not None)


def _plain(value) -> bool:
    if value is None or isinstance(value, (bool, builtins.int, float, str)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _plain(v) for k, v in value.items())


class Objective(_Model):
    """A metric of :func:`medcl.metrics.summarize` on the accuracy matrix, or ``auc_<metric>`` on the
    AUC matrix (``auc_last``...), to optimise; ``mode`` defaults to ``max`` (``min`` for forgetting)."""

    metric: Literal[METRICS]
    mode: Literal["max", "min"] | None = None

    @model_validator(mode="after")
    def _default_mode(self) -> "Objective":
        if self.mode is None:
            self.mode = "min" if self.metric in ("forgetting", "auc_forgetting") else "max"
        return self


class Searcher(_Model):
    """Optuna's sampler: ``tpe`` (default; ``n_startup_trials`` random trials first) or ``random``."""

    name: Literal["tpe", "random"] = "tpe"
    seed: int | None = 0
    n_startup_trials: int = Field(default=10, ge=0)


class Scheduler(_Model):
    """ASHA over the task index (``grace_period`` tasks before a trial can be stopped; a trial
    continues at a rung when its running objective is in the top 1/``reduction_factor`` so far), or
    ``none``. ``metric``: which objective prunes (default: the first)."""

    name: Literal["asha", "none"] = "asha"
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1)
    metric: Literal[METRICS] | None = None


class Resources(_Model):
    """What each trial takes from the cluster, and how the sweep fits the cluster.

    ``trial_cpus``: CPUs the Tune trial reserves (it drives its Train run). ``train_workers``: Ray
    Train workers per trial (each ``worker_cpus`` CPUs and ``worker_gpus`` 0 or 1 GPU), placed by
    Ray Train in their own placement group; with ``train_workers: 0`` the sequence trains inside
    the trial process (Ray Train local mode, one worker; ``trial_cpus`` should then be at least 1).
    The sweep never runs more trials at once than the cluster (at its largest, when its autoscaler
    is known) holds; see :mod:`medcl.sweep.placement`.

    ``cluster``: the cluster file the autoscaler reads (launcher YAML or KubeRay RayCluster/RayJob;
    default on a launcher head: ``~/ray_bootstrap_config.yaml``). ``node_wait_s``: how long a
    trial's workers may wait for autoscaled nodes per try. ``trial_retries``: runs of a trial after
    an error or a lost node, each resuming after its last finished task (default: 2 on a joined
    cluster, 0 on a local Ray)."""

    trial_cpus: float = Field(default=0.25, gt=0)
    train_workers: int = Field(default=1, ge=0)
    worker_cpus: float = Field(default=1.0, gt=0)
    worker_gpus: Literal[0, 1] = 0
    cluster: PathStr | None = None
    node_wait_s: float = Field(default=1800.0, gt=0)
    trial_retries: int | None = Field(default=None, ge=0)

    @property
    def cpus_per_trial(self) -> float:
        return self.trial_cpus + self.train_workers * self.worker_cpus

    @property
    def gpus_per_trial(self) -> int:
        return self.train_workers * self.worker_gpus


class OrderSpec(_Model):
    """``permutations``: ``all`` or how many to sample (with ``seed``)."""

    permutations: Literal["all"] | int = "all"
    seed: int = 0

    @field_validator("permutations")
    @classmethod
    def _positive(cls, value):
        if isinstance(value, int) and value < 1:
            raise ValueError(f"permutations: give 'all' or a count >= 1 (got {value})")
        return value


class SweepConfig(_Model):
    name: FolderName  # the sweep directory output_dir/name: never ".", ".." or a path (medcl.names)
    experiment: dict[str, Any]
    space: dict[str, Distribution] = {}
    order: OrderSpec | list[list[str]] | None = None
    orders_only: bool = False
    objective: list[Objective] = [Objective(metric="avg")]
    searcher: Searcher = Searcher()
    scheduler: Scheduler = Scheduler()
    num_samples: int = Field(default=8, ge=1)
    max_concurrent_trials: int = Field(default=1, ge=1)
    resources: Resources = Resources()
    enqueue: list[dict[str, Any]] = []
    storage: str | None = None
    output_dir: PathStr = "sweeps"

    @field_validator("storage")
    @classmethod
    def _not_a_masked_copy(cls, value):
        from medcl.redact import MASK, has_masked_password

        if has_masked_password(value):
            raise ValueError(f"the password is masked ({MASK!r}): this is a copy medcl saved (sweep.yaml), which never "
                             "holds it; resume with your own sweep file, or write the password as ${NAME} and "
                             "export NAME (docs/sweeps.md)")
        return value

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_list(cls, value):
        if isinstance(value, (str, dict)):
            value = [value]
        return [{"metric": v} if isinstance(v, str) else v for v in value]

    @field_validator("order", mode="before")
    @classmethod
    def _order_shorthand(cls, value):
        return {"permutations": "all"} if value == "permutations" else value

    @model_validator(mode="after")
    def _consistent(self) -> "SweepConfig":
        metrics = [o.metric for o in self.objective]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objective: a metric is listed twice ({metrics})")
        if self.scheduler.metric is not None and self.scheduler.metric not in metrics:
            raise ValueError(f"scheduler.metric {self.scheduler.metric!r} is not an objective metric ({metrics})")
        if self.orders_only and self.order is None:
            raise ValueError("orders_only: true needs an 'order' (permutations or a list of orders)")
        if self.orders_only and self.space:
            raise ValueError("orders_only: true runs each order once with the base experiment; remove 'space'")
        if ORDER_PARAM in self.space:
            raise ValueError("space: 'order' is reserved; give task orders in the top-level 'order' field")
        return self

    @property
    def prune_metric(self) -> str:
        return self.scheduler.metric or self.objective[0].metric

    @property
    def directions(self) -> list[str]:
        return ["maximize" if o.mode == "max" else "minimize" for o in self.objective]

    @property
    def sweep_dir(self):
        """``<output_dir>/<name>``: a local :class:`~pathlib.Path`, or a
        :class:`~medcl.storage.Location` when ``output_dir`` is an object-store URI (``s3://...``)."""
        from medcl.storage import Location, place

        where = place(self.output_dir) / self.name
        return where if isinstance(where, Location) else Path(where).resolve()

    @property
    def storage_url(self) -> str:
        """The study's SQLAlchemy URL (:mod:`medcl.sweep.study_store` says where each kind lives)."""
        from medcl.sweep.study_store import study_url

        return study_url(self)
