"""Fault injection for the fault-tolerance tests: stop a worker at a chosen point, once.

Switched on only by the environment (the runner forwards these variables to the Ray workers)::

    MEDCL_FAULT="after_stage=1"            # exit after stage 1's checkpoint is reported
    MEDCL_FAULT="step=5,stage=2,rank=1"    # exit at step 5 of stage 2, on rank 1 only
    MEDCL_FAULT="step=3,stage=2"           # ... on every rank
    MEDCL_FAULT="step=5,stage=1;after_stage=1;step=8,stage=2"   # three faults, in one run
    MEDCL_FAULT="trial=1,task=1"           # the sweep driver exits when trial 1 has reported task 1
                                           # (medcl.sweep.searcher): a driver killed mid-trial
    MEDCL_FAULT_ONCE=/tmp/marker           # fire only if this file does not exist; create it
                                           # (<marker>-rank<r> per rank when the fault names no rank;
                                           # <marker>-<i> for the i-th of several faults)

The process leaves with ``os._exit(MEDCL_FAULT_EXIT_CODE)`` (default 17): no cleanup, no
exception handling, as a SIGKILL or a preempted machine would.

A test that must act at a point the run is known to have reached (remove a node, kill the driver)
holds the worker there instead of letting it race on::

    MEDCL_FAULT_READY=/tmp/at    # on reaching the point, write /tmp/at-rank<r>.json (pid, node, rank...)
    MEDCL_FAULT_GO=/tmp/go       # then wait until this file exists before acting
    MEDCL_FAULT_ACTION=hold      # "exit" (default) leaves after the go; "hold" waits for its own death;
                                 # "raise" raises InjectedFault instead of leaving (a local-mode run in
                                 # the test process stops there, and the process lives on);
                                 # "interrupt" sends SIGINT to this process, as Ctrl-C would, and
                                 # carries on (its handler acts at the next bytecode: Tune's or
                                 # Python's KeyboardInterrupt)
    MEDCL_FAULT_WAIT_S=900       # longest wait (then exit anyway, so nothing is left behind)

The worker is then blocked at the point (its peers block in the next gradient all-reduce) until the
test acts, so the fault can never fire after the run has moved past it.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

FAULT_VARIABLES = ("MEDCL_FAULT", "MEDCL_FAULT_ONCE", "MEDCL_FAULT_EXIT_CODE", "MEDCL_FAULT_READY",
                   "MEDCL_FAULT_GO", "MEDCL_FAULT_ACTION", "MEDCL_FAULT_WAIT_S")
ACTIONS = ("exit", "hold", "raise", "interrupt")


class InjectedFault(RuntimeError):
    """What ``MEDCL_FAULT_ACTION=raise`` raises at the fault point."""


def parse_fault(spec: str) -> dict[str, int]:
    """``"step=5,stage=2"`` -> ``{"step": 5, "stage": 2}``; a malformed spec is a ValueError."""
    fault = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("after_stage", "step", "stage", "rank", "trial", "task") or not value.lstrip("-").isdigit():
            raise ValueError(f"MEDCL_FAULT: cannot read {part!r}; expected after_stage=N, step=N[,stage=N][,rank=N] "
                             "or trial=N[,task=N]")
        fault[key] = int(value)
    return fault


def matches(fault: dict[str, int], point: str, where: dict[str, int]) -> bool:
    """Whether ``fault`` names this ``point`` (``after_stage``, ``step`` or ``trial_result``) at ``where``."""
    if point == "after_stage":
        return fault.get("after_stage") == where.get("stage") and fault.get("rank", where.get("rank")) == where.get("rank")
    if point == "step":
        return "step" in fault and all(fault[k] == where.get(k) for k in ("step", "stage", "rank") if k in fault)
    if point == "trial_result":
        return "trial" in fault and all(fault[k] == where.get(k) for k in ("trial", "task") if k in fault)
    return False


def maybe_fail(point: str, **where: int) -> None:
    """Act if ``MEDCL_FAULT`` names this point (``after_stage`` or ``step``) and every coordinate it
    gives matches ``where`` (see the module doc); otherwise return at once."""
    specs = [part for part in os.environ.get("MEDCL_FAULT", "").split(";") if part.strip()]
    chosen = [(index, parse_fault(spec)) for index, spec in enumerate(specs)]
    chosen = [(index, fault) for index, fault in chosen if matches(fault, point, where)]
    if not chosen:
        return
    index, fault = chosen[0]
    marker = os.environ.get("MEDCL_FAULT_ONCE")
    if marker:
        marker = f"{marker}-{index}" if len(specs) > 1 else marker
        marker = marker if "rank" in fault else f"{marker}-rank{where.get('rank', 0)}"
        if Path(marker).exists():
            return
        Path(marker).touch()
    print(f"medcl: injected fault at {point} {where}", flush=True)
    _announce(point, where)
    _wait_for_go()
    if os.environ.get("MEDCL_FAULT_ACTION") == "raise":
        raise InjectedFault(f"injected fault at {point} {where}")
    if os.environ.get("MEDCL_FAULT_ACTION") == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
        return
    os._exit(int(os.environ.get("MEDCL_FAULT_EXIT_CODE", "17")))


def _announce(point: str, where: dict[str, int]) -> None:
    """Write ``<MEDCL_FAULT_READY>-rank<r>.json`` (atomically) saying where this process stands."""
    prefix = os.environ.get("MEDCL_FAULT_READY")
    if not prefix:
        return
    info = {"point": point, **where, "pid": os.getpid(), "node_id": _node_id(), "time": time.time()}
    path = Path(f"{prefix}-rank{where.get('rank', 0)}.json")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


def _wait_for_go() -> None:
    """Block until ``MEDCL_FAULT_GO`` exists (``exit``) or forever (``hold``), at most
    ``MEDCL_FAULT_WAIT_S`` seconds; without ``MEDCL_FAULT_GO`` and ``hold``, return at once."""
    action = os.environ.get("MEDCL_FAULT_ACTION", "exit")
    if action not in ACTIONS:
        raise ValueError(f"MEDCL_FAULT_ACTION: {action!r}, expected one of {ACTIONS}")
    go = os.environ.get("MEDCL_FAULT_GO")
    if action in ("raise", "interrupt") or (not go and action == "exit"):
        return
    deadline = time.monotonic() + float(os.environ.get("MEDCL_FAULT_WAIT_S", "900"))
    while time.monotonic() < deadline:
        if go and action == "exit" and Path(go).exists():
            return
        time.sleep(0.05)


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - only informative
        return None


def forwarded_environment() -> dict[str, str]:
    """The fault variables set in this process, to pass to Ray workers' runtime env."""
    return {k: os.environ[k] for k in FAULT_VARIABLES if k in os.environ}
