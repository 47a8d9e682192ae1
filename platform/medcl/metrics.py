"""Continual-learning metrics over an accuracy matrix (docs/methods.md#1-evaluation-protocol, MTIL protocol).

Notation: ``a[t, j]`` is the accuracy (percent) on task ``j`` after training task ``t``, tasks in
training order, ``t, j = 1..T``; ``a[0, j]`` is the accuracy before any continual training
(zero-shot). In code, ``matrix[t - 1, j - 1] == a[t, j]`` and ``zero_shot[j - 1] == a[0, j]``.

Every metric averages per task first, then over tasks (macro).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

METRIC_KEYS = ("transfer", "avg", "last", "bwt", "forgetting", "fwt")
AUC_METRIC_KEYS = tuple(f"auc_{k}" for k in METRIC_KEYS)  # the same formulas on the AUC matrix (medcl.auc)
ALL_METRIC_KEYS = METRIC_KEYS + AUC_METRIC_KEYS


def summarize(matrix, zero_shot=None) -> dict:
    """Transfer, Avg, Last, BWT, Forgetting and FWT of a T x T accuracy matrix.

    Args:
        matrix: T x T array-like; row ``t - 1`` is after training task ``t``, column ``j - 1`` is
            task ``j``; finite accuracies in percent.
        zero_shot: optional length-T vector ``a[0, :]`` of accuracies before training.

    Returns:
        ``{"transfer", "avg", "last", "bwt", "forgetting", "fwt"}`` as Python floats, or ``None``
        where undefined: with T = 1 all but ``avg`` and ``last``; ``fwt`` without ``zero_shot``.

    Formulas:
        transfer   = mean_{j=2..T} ( mean_{t=1..j-1} a[t, j] )
        avg        = mean_{j=1..T} ( mean_{t=1..T} a[t, j] )
        last       = mean_{j=1..T} a[T, j]
        bwt        = 1/(T-1) * sum_{i=1..T-1} ( a[T, i] - a[i, i] )
        forgetting = 1/(T-1) * sum_{i=1..T-1} ( max_{t=i..T-1} a[t, i] - a[T, i] )
        fwt        = 1/(T-1) * sum_{i=2..T} ( a[i-1, i] - a[0, i] )

    Raises:
        ValueError: ``matrix`` is not a non-empty square 2-D finite array, or ``zero_shot`` is not
            a finite vector of length T.
    """
    a, z = _validate(matrix, zero_shot)
    T = a.shape[0]
    result = {
        "transfer": None,
        "avg": float(np.mean(a.mean(axis=0))),
        "last": float(np.mean(a[T - 1])),
        "bwt": None,
        "forgetting": None,
        "fwt": None,
    }
    if T == 1:
        return result
    result["transfer"] = float(np.mean([a[: j, j].mean() for j in range(1, T)]))
    result["bwt"] = float(np.mean([a[T - 1, i] - a[i, i] for i in range(T - 1)]))
    result["forgetting"] = float(np.mean(_forgetting_per_task(a)))
    if z is not None:
        result["fwt"] = float(np.mean([a[i - 1, i] - z[i] for i in range(1, T)]))
    return result


def per_task(matrix, zero_shot, task_names: Sequence[str]) -> list[dict]:
    """Per-task numbers of a T x T accuracy matrix, one dict per task in training order.

    For task ``j``: ``{"task": name, "final": a[T, j], "just_trained": a[j, j],
    "best": max_{t=1..T} a[t, j], "forgetting": max_{t=j..T-1} a[t, j] - a[T, j]
    (None for the last task), "zero_shot": a[0, j] (None without zero_shot)}``.

    Raises:
        ValueError: invalid matrix or zero_shot (see :func:`summarize`), or
            ``len(task_names) != T``.
    """
    a, z = _validate(matrix, zero_shot)
    T = a.shape[0]
    if len(task_names) != T:
        raise ValueError(f"got {len(task_names)} task names for a {T} x {T} matrix")
    forgetting = _forgetting_per_task(a)
    return [
        {
            "task": str(name),
            "final": float(a[T - 1, j]),
            "just_trained": float(a[j, j]),
            "best": float(a[:, j].max()),
            "forgetting": float(forgetting[j]) if j < T - 1 else None,
            "zero_shot": float(z[j]) if z is not None else None,
        }
        for j, name in enumerate(task_names)
    ]


def _forgetting_per_task(a: np.ndarray) -> list[float]:
    """``max_{t=i..T-1} a[t, i] - a[T, i]`` for i = 1..T-1 (0-based: rows i..T-2)."""
    T = a.shape[0]
    return [a[i : T - 1, i].max() - a[T - 1, i] for i in range(T - 1)]


def _validate(matrix, zero_shot) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        a = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"accuracy matrix must be numeric and rectangular: {err}") from None
    if a.ndim != 2:
        raise ValueError(f"accuracy matrix must be 2-D (T x T), got {a.ndim}-D shape {a.shape}")
    if a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square and non-empty (T x T), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        rows, cols = np.nonzero(~np.isfinite(a))
        raise ValueError(
            f"accuracy matrix has non-finite values (NaN/inf) at (row, column) "
            f"{list(zip(rows.tolist(), cols.tolist()))[:5]}; every task must be evaluated after every stage"
        )
    if zero_shot is None:
        return a, None
    try:
        z = np.asarray(zero_shot, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"zero_shot must be a numeric vector: {err}") from None
    if z.shape != (a.shape[0],):
        raise ValueError(f"zero_shot must be a vector of length T = {a.shape[0]}, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("zero_shot has non-finite values (NaN/inf)")
    return a, z
