"""Where a sweep's trials run, how many at once, and how long they may wait: the sweep's plan.

Chosen once, on the driver, from the cluster's layout (``ray.nodes()``) and, when known, the file
its autoscaler reads (``resources.cluster``, else ``~/ray_bootstrap_config.yaml`` on a cluster
launcher's head node; see :mod:`medcl.sweep.capacity`):

=====================  ======================================  ====================================
                       fixed (local Ray, or a joined cluster     autoscaling (a cluster file whose
                       without a cluster file)                   node types can grow)
=====================  ======================================  ====================================
trials at once         ``max_concurrent_trials``, lowered to     lowered to what the largest layout
                       what fits the nodes now                   the autoscaler may reach holds
a trial can never fit  error naming the ``resources`` fields     the same error, for that layout
Train worker start     ``LOCAL_START_TIMEOUT_S``, 1 retry        ``resources.node_wait_s`` per try,
                                                                 3 retries: waiting for nodes is
                                                                 not a failure
=====================  ======================================  ====================================

A joined cluster with no cluster file on which a trial does not fit *now* is taken to be
autoscaling (a warning says so and asks for ``resources.cluster``). Workers rendezvous through a
file when every node is on 127.0.0.1 (one machine), else through Ray's TCP rendezvous, whatever the
trial's environment says. Trials are retried ``resources.trial_retries`` times after an error or a
lost node (default 2 on a joined cluster, 0 on a local Ray) and resume after their last finished task.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medcl.engine.cluster import ResourceError
from medcl.sweep.capacity import (ClusterSpec, describe, largest_fit, node_text, read_cluster_file, trial_bundles,
                                  trials_that_fit)

LOCAL_START_TIMEOUT_S = 180.0  # worker processes starting on a busy machine; the bundles are reserved
BOOTSTRAP_FILE = "~/ray_bootstrap_config.yaml"  # the autoscaler's config on a cluster launcher head


@dataclass(frozen=True)
class TrialPlan:
    """What each trial is told: ``rendezvous`` (``file`` or ``tcp``), Train's worker-group start
    time-out and how many starts may fail, and environment variables to set (fault injection)."""

    rendezvous: str
    start_timeout_s: float
    controller_failure_limit: int
    environment: dict


@dataclass(frozen=True)
class SweepPlan:
    concurrency: int
    trial_retries: int
    autoscaling: bool
    trial: TrialPlan
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Node:
    resources: dict
    loopback: bool


def current_nodes() -> list[Node]:
    """The alive nodes of the connected Ray (``ray.nodes()``)."""
    import ray

    return [Node({k: float(n["Resources"].get(k, 0.0)) for k in ("CPU", "GPU")}, n["NodeManagerAddress"] == "127.0.0.1")
            for n in ray.nodes() if n.get("Alive")]


def cluster_spec(cluster_file: str | None, joined: bool) -> ClusterSpec | None:
    """The autoscaler's layout: ``resources.cluster`` (must exist), else the launcher head's
    bootstrap file when joined to a cluster, else None."""
    if cluster_file:
        if not Path(cluster_file).is_file():
            raise ResourceError(f"resources.cluster: no such cluster file {cluster_file!r}")
        return read_cluster_file(cluster_file)
    bootstrap = Path(os.path.expanduser(BOOTSTRAP_FILE))
    return read_cluster_file(bootstrap) if joined and bootstrap.is_file() else None


def plan_sweep(sweep, *, nodes: list[Node], joined: bool, spec: ClusterSpec | None) -> SweepPlan:
    """The plan for ``sweep`` (a SweepConfig); raises :class:`ResourceError` when no trial can
    ever fit. Pure: the layout is given."""
    from medcl.faults import forwarded_environment

    res = sweep.resources
    bundles = trial_bundles(res.trial_cpus, res.train_workers, res.worker_cpus, res.worker_gpus)
    limit = sweep.max_concurrent_trials
    now = [n.resources for n in nodes]
    notes = []
    if spec is not None:
        fit, layout = largest_fit(spec, bundles, limit)
        where = f"{spec.source} at its largest ({describe(layout)})" if fit else _largest(spec)
        autoscaling = spec.can_grow
    else:
        fit, where = trials_that_fit(now, bundles, limit), f"the cluster now ({describe(now)})"
        autoscaling = False
        if fit == 0 and joined:
            notes.append(f"warning: {_shortfall(res, where)}; no cluster file, so medcl cannot tell whether the "
                         "autoscaler can add nodes: waiting for it (set resources.cluster to check and cap the sweep)")
            fit, autoscaling = limit, True
    if fit == 0:
        raise ResourceError(_shortfall(res, where))
    if fit < limit:
        notes.append(f"running at most {fit} trial(s) at once: {where} holds no more "
                     f"(max_concurrent_trials={limit}, {_shape(res)} each)")
    loopback = spec is None and all(n.loopback for n in nodes)
    trial = TrialPlan(rendezvous="file" if loopback else "tcp",
                      start_timeout_s=res.node_wait_s if autoscaling else LOCAL_START_TIMEOUT_S,
                      controller_failure_limit=3 if autoscaling else 1, environment=forwarded_environment())
    retries = res.trial_retries if res.trial_retries is not None else (2 if joined else 0)
    return SweepPlan(concurrency=min(fit, limit), trial_retries=retries, autoscaling=autoscaling, trial=trial,
                     notes=tuple(notes))


def _shape(res) -> str:
    own = f"resources.trial_cpus={res.trial_cpus:g} CPU"
    if res.train_workers == 0:
        return own + (f" + resources.worker_gpus={res.worker_gpus} GPU" if res.worker_gpus else "")
    worker = f"resources.worker_cpus={res.worker_cpus:g} CPU" + (
        f" + resources.worker_gpus={res.worker_gpus} GPU" if res.worker_gpus else "")
    return f"{own} + resources.train_workers={res.train_workers} x ({worker}), each within one node"


def _shortfall(res, where: str) -> str:
    return f"a trial cannot fit: it needs {_shape(res)}; {where} cannot hold it"


def _largest(spec: ClusterSpec) -> str:
    biggest = [spec.head] + [t.resources for t in spec.types if t.max_count > 0]
    return f"{spec.source} (largest node {node_text(max(biggest, key=lambda n: (n['GPU'], n['CPU'])))})"
