"""Running continual-learning metrics after k of T tasks: what a trial reports to Tune per task.

With ``a[t, j]`` for the ``k`` rows trained so far (``t = 1..k``, ``j = 1..T``) and ``a[0, j]``
the zero-shot row, each metric is the MTIL formula of :func:`medcl.metrics.summarize` restricted to
the rows that exist, and equals it at ``k = T``::

    avg_k        = mean_{j=1..T} ( mean_{t=1..k} a[t, j] )
    last_k       = mean_{j=1..T} a[k, j]
    transfer_k   = mean_{j=2..T} ( mean_{t=1..min(j-1, k)} a[t, j] )
    bwt_k        = 1/(k-1) * sum_{i=1..k-1} ( a[k, i] - a[i, i] )                  (k >= 2)
    forgetting_k = 1/(k-1) * sum_{i=1..k-1} ( max_{t=i..k-1} a[t, i] - a[k, i] )   (k >= 2)
    fwt_k        = mean_{i=2..min(k+1, T)} ( a[i-1, i] - a[0, i] )                   (zero-shot row given)

:func:`running_auc_metrics` gives the same on the AUC matrix as ``auc_<metric>``.

A metric that is undefined at ``k`` (BWT after one task; everything but avg/last with T = 1) is
left out, so ASHA ignores that report for it.
"""
from __future__ import annotations

import numpy as np


def running_metrics(rows, zero_shot=None) -> dict[str, float]:
    """The running metrics above; ``rows`` is k x T (k >= 1), ``zero_shot`` length T or None."""
    a = np.asarray(rows, dtype=float)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[0] > a.shape[1]:
        raise ValueError(f"expected k x T rows with 1 <= k <= T, got shape {a.shape}")
    k, T = a.shape
    out = {"avg": float(a.mean(axis=0).mean()), "last": float(a[k - 1].mean())}
    if T >= 2:
        out["transfer"] = float(np.mean([a[: min(j, k), j].mean() for j in range(1, T)]))
    if k >= 2:
        out["bwt"] = float(np.mean([a[k - 1, i] - a[i, i] for i in range(k - 1)]))
        out["forgetting"] = float(np.mean([a[i : k - 1, i].max() - a[k - 1, i] for i in range(k - 1)]))
    if zero_shot is not None and T >= 2:
        z = np.asarray(zero_shot, dtype=float)
        out["fwt"] = float(np.mean([a[i - 1, i] - z[i] for i in range(1, min(k + 1, T))]))
    return out


def running_auc_metrics(auc_rows, auc_zero_shot=None) -> dict[str, float]:
    """:func:`running_metrics` of the AUC rows as ``auc_<metric>``; empty while some task's AUC is
    undefined (a test split without two classes), so ASHA ignores the report for these keys."""
    a = np.asarray(auc_rows, dtype=float)
    if not np.all(np.isfinite(a)):
        return {}
    z = auc_zero_shot if auc_zero_shot is not None and np.all(np.isfinite(auc_zero_shot)) else None
    return {f"auc_{k}": v for k, v in running_metrics(a, z).items()}
