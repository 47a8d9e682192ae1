"""Joining or starting Ray, and refusing resource requests that could never be scheduled.

``RAY_ADDRESS`` set -> join that cluster: ``host:port`` of its head, ``auto`` for the cluster
``ray start`` started on this machine, or whatever ``ray job submit`` sets for the job's entrypoint;
the number of workers, their CPUs and GPUs then come from the experiment (``--set
train.workers=8 --set train.use_gpu=true``). Otherwise start a local Ray on loopback with this
machine's CPUs and no dashboard (tests and laptops): a cluster is never joined by accident. A
request for more CPUs or GPUs than the cluster has is an error naming the fields, not a hang.
"""
from __future__ import annotations

import os
import sys

from medcl.config import ExperimentConfig
from medcl.engine.localray import init_local_ray, ray_log_level
from medcl.errors import MedclError


class ResourceError(MedclError, RuntimeError):
    pass


def connect(config: ExperimentConfig | None = None, *, dashboard: bool = False) -> bool:
    """Initialise Ray if needed; return True when joined to an existing cluster.

    A local Ray serves its dashboard on 127.0.0.1 only when ``dashboard`` is true (it costs about
    1 GB of memory); it is started by :func:`medcl.engine.localray.init_local_ray`, which keeps
    Ray-internal noise off the terminal (``MEDCL_DEBUG=1`` / ``--verbose`` shows it).
    """
    import ray

    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # else every worker print is logged twice
    if ray.is_initialized():
        return bool(os.environ.get("RAY_ADDRESS"))
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _join(address)
        return True
    context = init_local_ray(os.cpu_count() or 1, dashboard=dashboard)
    if dashboard and context.dashboard_url:
        port = context.dashboard_url.rsplit(":", 1)[-1]
        print(f"medcl: Ray dashboard at http://{context.dashboard_url.split('://')[-1]} (loopback only; use "
              f"ssh -L {port}:127.0.0.1:{port} from another machine)", flush=True)
    return False


def auth_hint(address: str) -> str | None:
    """One line saying what to set to join the cluster at ``address`` when ``RAY_AUTH_MODE`` is
    unset, else None. A cluster started with ``ray start --head`` (Ray 2.5x-2.6x) requires token
    authentication; a driver without ``RAY_AUTH_MODE=token`` is refused (Ray logs
    ``InvalidAuthToken`` for about 15 s, then raises ``ConnectionError``)."""
    if os.environ.get("RAY_AUTH_MODE"):
        return None
    return (f"RAY_ADDRESS={address} is set but RAY_AUTH_MODE is not: a cluster started with `ray start` uses "
            "token authentication; run `export RAY_AUTH_MODE=token` (the token is read from RAY_AUTH_TOKEN or "
            "~/.ray/auth_token, see `ray get-auth-token`), or RAY_AUTH_MODE=disabled for a cluster without it")


def _join(address: str) -> None:
    """``ray.init(address)``; a refused connection is one :class:`ResourceError` saying what to set."""
    import ray

    hint = auth_hint(address)
    if hint:
        print(f"medcl: note: {hint}", file=sys.stderr, flush=True)  # above Ray's own lines while it retries
    env = job_runtime_env()
    try:
        ray.init(address=address, logging_level=ray_log_level(), **({"runtime_env": env} if env else {}))
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        raise ResourceError(f"could not join the Ray cluster at RAY_ADDRESS={address} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})" + (f"; {hint}" if hint else "")) from None


def job_runtime_env() -> dict | None:
    """``ray.init(runtime_env=...)`` of a driver joining a cluster: ``env_vars`` holding the image
    budgets set in this process (``MEDCL_MAX_IMAGE_PIXELS``, ``MEDCL_MAX_IMAGE_BYTES``:
    :func:`medcl.data.images.budget_environment`), so every task, actor, Train worker and Tune trial
    of the job, on any node, refuses images under the driver's budgets. A variable the job's own
    runtime env already sets (``ray job submit --runtime-env``, which Ray hands the entrypoint in
    ``RAY_JOB_CONFIG_JSON_ENV_VAR``) is left to it: Ray refuses a driver that sets one again. None
    when there is nothing to add. (A local Ray's workers inherit the driver's environment.)"""
    import json

    from medcl.data.images import budget_environment

    env = budget_environment()
    try:
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        already = ((job.get("runtime_env") or {}).get("env_vars") or {}) if isinstance(job, dict) else {}
    except json.JSONDecodeError:
        already = {}
    env = {name: value for name, value in env.items() if name not in already}
    return {"env_vars": env} if env else None


def loopback_only() -> bool:
    """True when every alive node of the connected cluster is on 127.0.0.1: one machine (a
    ``ray start --node-ip-address 127.0.0.1``, ``ray.cluster_utils.Cluster``), where Ray Train's
    workers can meet through a file instead of a TCP store listening on every interface."""
    import ray

    return all(node["NodeManagerAddress"] == "127.0.0.1" for node in ray.nodes() if node["Alive"])


def check_resources(config: ExperimentConfig) -> None:
    """Raise :class:`ResourceError` when the workers cannot fit the cluster as it is now.

    On an autoscaling cluster (``RAY_ADDRESS`` set) only a warning is printed, since nodes may
    still be added.
    """
    import ray

    have = ray.cluster_resources()
    train = config.train
    wanted = {"CPU": train.workers * train.cpus_per_worker, "GPU": train.workers if train.use_gpu else 0}
    short = [f"{k}: {wanted[k]:g} wanted (train.workers={train.workers} x "
             f"{'train.cpus_per_worker=' + format(train.cpus_per_worker, 'g') if k == 'CPU' else '1 GPU each'}), "
             f"{have.get(k, 0):g} in the cluster" for k in wanted if wanted[k] > have.get(k, 0) + 1e-9]
    if not short:
        return
    message = "not enough resources for the Train workers: " + "; ".join(short)
    if os.environ.get("RAY_ADDRESS"):
        print(f"medcl: warning: {message} (waiting for the autoscaler)", flush=True)
        return
    raise ResourceError(message + ". Lower train.workers or train.cpus_per_worker, or set use_gpu: false.")
