"""Fault injection for the fault-tolerance tests: kill a worker at a chosen point, once.

Switched on only by the environment (the runner forwards these variables to the Ray workers)::

    MEDCL_FAULT="after_stage=1"            # exit after stage 1's checkpoint is reported
    MEDCL_FAULT="step=5,stage=2,rank=1"    # exit at step 5 of stage 2, on rank 1 only
    MEDCL_FAULT_ONCE=/tmp/marker           # fire only if this file does not exist; create it

The process leaves with ``os._exit(MEDCL_FAULT_EXIT_CODE)`` (default 17): no cleanup, no
exception handling, as a SIGKILL or a preempted machine would.
"""
from __future__ import annotations

import os
from pathlib import Path

FAULT_VARIABLES = ("MEDCL_FAULT", "MEDCL_FAULT_ONCE", "MEDCL_FAULT_EXIT_CODE")


def parse_fault(spec: str) -> dict[str, int]:
    """``"step=5,stage=2"`` -> ``{"step": 5, "stage": 2}``; a malformed spec is a ValueError."""
    fault = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("after_stage", "step", "stage", "rank") or not value.lstrip("-").isdigit():
            raise ValueError(f"MEDCL_FAULT: cannot read {part!r}; expected after_stage=N or step=N[,stage=N][,rank=N]")
        fault[key] = int(value)
    return fault


def maybe_fail(point: str, **where: int) -> None:
    """Exit the process if ``MEDCL_FAULT`` names this point (``after_stage`` or ``step``) and
    every coordinate it gives matches ``where``."""
    spec = os.environ.get("MEDCL_FAULT")
    if not spec:
        return
    fault = parse_fault(spec)
    if point == "after_stage" and fault.get("after_stage") != where.get("stage"):
        return
    if point == "step" and ("step" not in fault or any(fault[k] != where.get(k) for k in ("step", "stage", "rank") if k in fault)):
        return
    if point == "after_stage" and "rank" in fault and fault["rank"] != where.get("rank"):
        return
    marker = os.environ.get("MEDCL_FAULT_ONCE")
    if marker:
        if Path(marker).exists():
            return
        Path(marker).touch()
    print(f"medcl: injected fault at {point} {where}", flush=True)
    os._exit(int(os.environ.get("MEDCL_FAULT_EXIT_CODE", "17")))


def forwarded_environment() -> dict[str, str]:
    """The fault variables set in this process, to pass to Ray workers' runtime env."""
    return {k: os.environ[k] for k in FAULT_VARIABLES if k in os.environ}
