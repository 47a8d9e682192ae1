"""The one way medcl starts Ray Train: ``medcl run``, ``medcl pretrain``, sweep trials and the tests.

    trainer = make_trainer(train_sequence, loop_config, run_path, Workers.of(config.train))
    trainer = make_trainer(train_sequence, loop_config, run_path, Workers.local())   # in this process

Every caller gets the same ``TorchTrainer``: checkpoints owned by Ray Train under the run's location
(``RunConfig(name="checkpoints", **ray_storage(run))``, a local path or an object store,
:mod:`medcl.storage`), fault variables forwarded to the workers, Ray Train's log level, the failure
policy, and the workers' rendezvous chosen from the cluster's layout (:func:`rendezvous`):

* ``file``: every alive node is on 127.0.0.1 (one machine: a local Ray, ``ray start
  --node-ip-address 127.0.0.1``): the workers meet through a ``file://`` store, so nothing listens
  on a network interface (:func:`medcl.engine.loopback.local_torch_config`);
* ``tcp``: nodes with other addresses (a real cluster, or the tests' 127.0.0.2/127.0.0.3 nodes):
  Ray Train's own TCP rendezvous, which reaches across machines.

Failures: ``train.max_failures`` worker failures are recovered from the last checkpoint (-1:
without limit), and ``controller_failure_limit`` follows it (a worker-group start that found no
nodes in time counts as one). Each start waits up to ``train.node_wait_s`` for nodes (an autoscaler
adding GPU nodes takes minutes): it sets Ray Train's ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``
(default 60 s), which Ray Train passes from the driver to its controller, unless the variable was
set otherwise (``cluster/runtime_env.yaml``, a sweep trial).

``Workers.local()`` is Ray Train's local mode (``num_workers=0``): the worker function runs in the
calling process with world size 1 (the tests' and benchmarks' short runs, a sweep trial without
Train workers); it needs no rendezvous.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Literal

Rendezvous = Literal["file", "tcp"]
START_TIMEOUT_VARIABLE = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # ray/train/v2/_internal/constants.py (2.60)
_set_here: set[str] = set()  # values of START_TIMEOUT_VARIABLE this module set (others are the user's)


@dataclass(frozen=True)
class Workers:
    """How many Ray Train workers, with what; ``count=0``: local mode (in this process)."""

    count: int
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 0
    controller_failure_limit: int = 3
    node_wait_s: float | None = None  # None: Ray Train's start timeout as it is

    @classmethod
    def of(cls, train, *, controller_failure_limit: int | None = None) -> "Workers":
        """From an experiment's or a pretraining's ``train`` section; ``controller_failure_limit``
        follows ``train.max_failures`` unless given."""
        limit = train.max_failures if controller_failure_limit is None else controller_failure_limit
        return cls(train.workers, train.use_gpu, train.cpus_per_worker, train.max_failures, limit,
                   getattr(train, "node_wait_s", None))

    @classmethod
    def local(cls) -> "Workers":
        return cls(0)


def rendezvous() -> Rendezvous:
    """``file`` when every alive node of the connected cluster is on 127.0.0.1, else ``tcp``."""
    from medcl.engine.cluster import loopback_only

    return "file" if loopback_only() else "tcp"


def make_trainer(train_fn: Callable, loop_config: dict, run_path, workers: Workers, *, callbacks=(),
                 num_to_keep: int | None = None, meet: Rendezvous | None = None, datasets: dict | None = None,
                 dataset_config=None):
    """The ``TorchTrainer`` of one run (Ray must be initialised); see the module docstring.
    ``meet``: the rendezvous, by default :func:`rendezvous`; ``num_to_keep``: checkpoints Ray
    Train keeps (None: all); ``datasets`` / ``dataset_config``: Ray Data streams the workers read
    with ``ray.train.get_dataset_shard`` and how they are split (``ray.train.DataConfig``), passed
    to the trainer as they are (None: none, Ray's default split)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from medcl.engine.localray import train_log_level
    from medcl.engine.loopback import local_torch_config
    from medcl.faults import forwarded_environment
    from medcl.storage import ray_storage

    _set_start_timeout(workers.node_wait_s)
    if workers.count:
        from medcl.engine.resume import drop_stale_ray_record
        from medcl.storage import place

        drop_stale_ray_record(place(run_path) / "checkpoints")  # Ray Train would refuse the run directory
    env = forwarded_environment()
    run_config = RunConfig(name="checkpoints", **ray_storage(run_path), callbacks=list(callbacks) or None,
                           worker_runtime_env={"env_vars": env} if env else None,
                           checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
                           logging_config=LoggingConfig(log_level=train_log_level()),
                           failure_config=FailureConfig(max_failures=workers.max_failures,
                                                        controller_failure_limit=workers.controller_failure_limit))
    ingest = {key: value for key, value in (("datasets", datasets), ("dataset_config", dataset_config))
              if value is not None}
    if workers.count == 0:
        return TorchTrainer(train_fn, train_loop_config=loop_config, scaling_config=ScalingConfig(num_workers=0),
                            run_config=run_config, **ingest)
    torch_config = local_torch_config(workers.use_gpu) if (meet or rendezvous()) == "file" else None
    return TorchTrainer(train_fn, train_loop_config=loop_config,
                        scaling_config=ScalingConfig(num_workers=workers.count, use_gpu=workers.use_gpu,
                                                     resources_per_worker={"CPU": workers.cpus_per_worker}),
                        run_config=run_config, **({"torch_config": torch_config} if torch_config is not None else {}),
                        **ingest)


def _set_start_timeout(node_wait_s: float | None) -> None:
    """``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S = node_wait_s`` for the trainer about to start,
    unless the variable holds a value this module did not set (the user's or a sweep's)."""
    current = os.environ.get(START_TIMEOUT_VARIABLE)
    if node_wait_s is None or (current is not None and current not in _set_here):
        return
    value = f"{node_wait_s:g}"
    _set_here.add(value)
    os.environ[START_TIMEOUT_VARIABLE] = value
