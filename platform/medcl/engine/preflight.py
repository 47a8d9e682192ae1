"""Checks of an experiment against its data and this machine, made before Ray starts, and the
translation of Ray's out-of-memory failure into the fields to change.

    check_before_ray(config, tasks)     # medcl run, after the tasks are built, before ray.init
    out_of_memory_hint(exc, config)     # one line, or None when ``exc`` is not an out-of-memory kill

Why: ``--set train.batch_size=100000`` on tasks of 600 images used to pass validation, drive the
node out of memory and end in a Ray dump that never named ``train.batch_size``.

* :func:`check_batch_fits`: the global batch may not exceed the smallest training split of the
  sequence (a larger batch repeats images within one step: :mod:`medcl.engine.sampling`).
* :func:`check_memory`: a *lower bound* of one training step's memory, compared with the memory this
  machine has available (local Ray only: a cluster's nodes are not this machine, and a GPU run's
  activations are on the GPU). The bound is the float32 input of the global batch,
  ``B * 3 * S**2 * 4`` bytes (``S``: ``model.image_size``, else the tasks' image side), times
  :data:`ACTIVATION_FACTOR`: a forward and backward pass keeps activations many times the size of its
  input (every tower medcl registers keeps at least 8 input-sized feature maps per image), so a step
  needing more than the bound is certain, and the check never refuses a batch that would fit.
"""
from __future__ import annotations

import os

from medcl.errors import ConfigError

ACTIVATION_FACTOR = 8  # input-sized float maps kept for the backward pass, per image (a lower bound)
_GB = 1e9


def check_before_ray(config, tasks) -> None:
    """Every size check of this module that applies to ``config`` (see the module doc)."""
    check_batch_fits(config, tasks)
    if not os.environ.get("RAY_ADDRESS") and not config.train.use_gpu:
        check_memory(config, image_size=_image_side(config, tasks))


def check_batch_fits(config, tasks) -> None:
    """Raise :class:`ConfigError` on ``train.batch_size`` when it exceeds a task's training split
    (naming the task and its size)."""
    sized = [(len(task.split("train")), task.name) for task in tasks if "train" in task.splits]
    if not sized:
        return
    size, name = min(sized)
    if config.train.batch_size > size:
        raise ConfigError(config.name, [("train.batch_size", (
            f"{config.train.batch_size} is larger than the training split of task {name!r} ({size} images); "
            f"use at most {size}"))])


def estimate_step_bytes(config, *, image_size: int) -> int:
    """Lower bound of one training step's memory over all workers: ``B * 3 * S**2 * 4 * ACTIVATION_FACTOR``."""
    return int(config.train.batch_size * 3 * image_size ** 2 * 4 * ACTIVATION_FACTOR)


def check_memory(config, *, image_size: int, available_bytes: int | None = None) -> None:
    """Raise :class:`ConfigError` on ``train.batch_size`` when :func:`estimate_step_bytes` exceeds
    ``available_bytes`` (default: this machine's available memory; unknown -> no check)."""
    available = _available_memory() if available_bytes is None else available_bytes
    need = estimate_step_bytes(config, image_size=image_size)
    if available is None or need <= available:
        return
    fits = max(1, config.train.batch_size * available // need)
    raise ConfigError(config.name, [("train.batch_size", (
        f"{config.train.batch_size} images of {image_size} px need at least {need / _GB:.1f} GB per step "
        f"(activations), and this machine has {available / _GB:.1f} GB available; use at most about {fits}, "
        f"or a smaller model.image_size"))])


def _image_side(config, tasks) -> int:
    if config.model.image_size:
        return config.model.image_size
    sides = [task.split("train").images.shape[1] for task in tasks if "train" in task.splits
             and hasattr(task.split("train"), "images")]
    return max(sides, default=32)


def _available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes (Linux), else None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def out_of_memory_hint(exc: BaseException, config) -> str | None:
    """One line naming the fields to change when ``exc`` (or what it wraps: ``__cause__``,
    ``__context__``, Ray Train's ``worker_failures`` and ``controller_failure``, a task error's
    ``cause``) is Ray's ``OutOfMemoryError``; None otherwise."""
    if not any(_is_out_of_memory(e) for e in _chain(exc)):
        return None
    train = config.train
    return (f"a worker ran out of memory and Ray killed it: lower train.batch_size={train.batch_size} "
            f"(global, over train.workers={train.workers}), train.eval_batch_size={train.eval_batch_size} "
            f"or model.image_size, or run fewer workers on this node")


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        from ray.exceptions import OutOfMemoryError
    except ImportError:  # pragma: no cover - ray is a dependency
        OutOfMemoryError = ()  # noqa: N806
    return isinstance(exc, (OutOfMemoryError, MemoryError)) or type(exc).__name__ == "OutOfMemoryError"


def _chain(exc: BaseException | None, seen: set | None = None):
    seen = set() if seen is None else seen
    if exc is None or id(exc) in seen:
        return
    seen.add(id(exc))
    yield exc
    nested = [exc.__cause__, exc.__context__, getattr(exc, "controller_failure", None), getattr(exc, "cause", None)]
    nested += list((getattr(exc, "worker_failures", None) or {}).values())
    for inner in nested:
        if isinstance(inner, BaseException):
            yield from _chain(inner, seen)
