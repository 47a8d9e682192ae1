"""Starting the local Ray that ``medcl run``, ``medcl pretrain`` and ``medcl sweep`` use without
``RAY_ADDRESS``: loopback only, a readable terminal, nothing that could reach another Ray.

Why Ray used to print dozens of internal lines on a plain run, and what is done about each:

* Ray Train V2 starts a detached ``PlacementGroupCleaner`` that asks Ray's state API, every second,
  whether the Train controller is still alive. The state API is served by the dashboard process.
  Without a dashboard the question cannot be answered and the cleaner logs "Failed to query Ray
  Train Controller actor state" every second; its client finds "the" cluster by looking for Ray
  processes on the machine, so with two Rays on one machine it dies with a traceback, and a
  dashboard-less Ray advertises ``127.0.0.1:8265``, where another Ray's dashboard may answer "no
  such actor" and make the cleaner remove *this* run's placement group. Fix: the cleaner (every
  process of this Ray) is pointed at this Ray's own dashboard port (``RAY_API_SERVER_ADDRESS``,
  a free port chosen here and passed as ``dashboard_port``); without a dashboard nothing listens
  there, the cleaner can never act on another cluster's answer, and its expected "cannot query"
  warning is dropped in the worker processes (:func:`quiet_worker`, a ``worker_process_setup_hook``);
  every other record of that logger, and every other Ray log, still shows.
* Ray Train's ``PreemptionWatcher`` polls for node drains; creating it makes Ray core log an error
  (``core_worker.cc: ... constructor arguments in the object store and max_restarts > 0``). A local
  Ray on one machine is never drained, so the watcher is switched off there
  (``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0``, Ray Train's own flag); on a cluster it stays on.
* Ray warns that token authentication was enabled by default; medcl asks for it explicitly
  (``RAY_AUTH_MODE=token``, set before ``import ray`` by :mod:`medcl.engine.loopback`).
* Ray Train and Tune log INFO lines in the worker processes (a sweep trial's "Running in local
  mode..."), while the driver runs Ray at WARNING: the ``ray.train`` and ``ray.tune`` loggers of
  the workers are set to WARNING too (Ray Train's own ``LoggingConfig`` does the same for Train's
  controller and workers). Warnings and errors still show.
* Ray Tune's progress engine prints its header (a configuration table, where results and
  TensorBoard logs are) even at ``verbose=0``; ``medcl sweep`` uses Tune's plain reporter, which
  is silent at ``verbose=0`` (``RAY_AIR_NEW_OUTPUT=0``, :func:`quiet_tune_output`).

* Ray colours the ``(pid=...)`` prefix of every worker line; in a log redirected to a file those are
  escape codes. ``medcl`` sets Ray's ``RAY_COLOR_PREFIX=0`` when stdout is not a terminal or
  ``NO_COLOR`` is set (:func:`plain_output_unless_terminal`).

``MEDCL_DEBUG=1`` or ``--verbose`` (``MEDCL_VERBOSE=1``) keeps every Ray log line: no filter,
Ray and Ray Train at INFO.
"""
from __future__ import annotations

import logging
import os
import socket
import sys

from medcl.engine.loopback import prepare_local_environment

CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
CLEANER_UNAVAILABLE = "Failed to query Ray Train Controller actor state"
LIBRARY_LOGGERS = ("ray.train", "ray.tune")  # INFO chatter of Ray's libraries in worker processes
NO_DASHBOARD_VARIABLE = "MEDCL_RAY_NO_DASHBOARD"  # set for the workers of a dashboard-less local Ray
API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"
PREEMPTION_WATCHER_VARIABLE = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
COLOUR_VARIABLE = "RAY_COLOR_PREFIX"  # Ray: "0" prints worker-line prefixes without colour codes
_api_server_set_here: str | None = None


def plain_output_unless_terminal(stream=None) -> None:
    """No ANSI colour in what Ray prints for its processes (the ``(pid=...)`` prefixes of worker
    lines) when ``stream`` (default: stdout) is not a terminal or ``NO_COLOR`` is set
    (no-color.org): sets Ray's ``RAY_COLOR_PREFIX=0`` unless the user set it. Logs redirected to a
    file then carry no escape codes. Call before Ray starts (``medcl``'s entry point does)."""
    stream = sys.stdout if stream is None else stream
    terminal = bool(getattr(stream, "isatty", lambda: False)())
    if os.environ.get("NO_COLOR") or not terminal:
        os.environ.setdefault(COLOUR_VARIABLE, "0")


def verbose() -> bool:
    """True when every Ray log line should reach the terminal (``MEDCL_DEBUG`` or ``MEDCL_VERBOSE``)."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("MEDCL_DEBUG", "MEDCL_VERBOSE"))


def ray_log_level() -> int:
    """Level of the driver's Ray loggers: WARNING, INFO when :func:`verbose`."""
    return logging.INFO if verbose() else logging.WARNING


def train_log_level() -> str:
    """``ray.train.LoggingConfig`` level of the controller and workers: WARNING, INFO when verbose."""
    return "INFO" if verbose() else "WARNING"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_init_kwargs(num_cpus: int, *, dashboard: bool) -> dict:
    """``ray.init`` arguments of a new local Ray (see the module doc); sets, in this process's
    environment, which the Ray processes inherit, the state API address of this Ray (unless the
    user set one) and, unless set, ``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0``."""
    global _api_server_set_here
    port = free_port()
    if os.environ.get(API_SERVER_VARIABLE) in (None, _api_server_set_here):
        _api_server_set_here = os.environ[API_SERVER_VARIABLE] = f"http://127.0.0.1:{port}"
    os.environ.setdefault(PREEMPTION_WATCHER_VARIABLE, "0")
    kwargs = dict(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", dashboard_port=port,
                  _node_ip_address="127.0.0.1", logging_level=ray_log_level())
    if not verbose():
        kwargs["runtime_env"] = {"worker_process_setup_hook": f"{__name__}.quiet_worker",
                                 "env_vars": {NO_DASHBOARD_VARIABLE: "0" if dashboard else "1"}}
    return kwargs


def quiet_tune_output() -> None:
    """Let Ray Tune use its plain reporter (silent at ``verbose=0``) unless :func:`verbose`; call
    before ``Tuner.fit`` in a command that prints its own summary (``medcl sweep``)."""
    if not verbose():
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def init_local_ray(num_cpus: int, *, dashboard: bool = False):
    """Start a local Ray on loopback (:func:`local_init_kwargs`); returns ``ray.init``'s context.
    Its processes inherit :func:`~medcl.engine.loopback.prepare_local_environment`'s variables (the
    ``medcl`` command has set them already, before Ray was imported)."""
    prepare_local_environment()
    import ray

    return ray.init(**local_init_kwargs(num_cpus, dashboard=dashboard))


class _DropCleanerUnavailable(logging.Filter):
    """Drops the placement-group cleaner's "cannot query the state API" warning (no dashboard)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(CLEANER_UNAVAILABLE)


def quiet_worker() -> None:
    """``worker_process_setup_hook`` of a local Ray (not verbose): Ray Train and Tune at WARNING in
    every Ray worker process and, without a dashboard, the filter above on the cleaner's logger.
    Never raises (a failing hook fails the worker)."""
    try:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        logger = logging.getLogger(CLEANER_LOGGER)
        if os.environ.get(NO_DASHBOARD_VARIABLE) == "1" and not any(
                isinstance(f, _DropCleanerUnavailable) for f in logger.filters):
            logger.addFilter(_DropCleanerUnavailable())
    except Exception:  # pragma: no cover - best effort only
        pass
