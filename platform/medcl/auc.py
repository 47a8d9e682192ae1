"""Area under the ROC curve of a task's class probabilities (the AUC matrix beside the accuracy matrix).

For one class ``c`` of a task with ``n_pos`` test images of class ``c`` and ``n_neg`` of the other
classes, scored by ``s_i = p_i(c)`` (the softmax probability of ``c`` over the task's own classes)::

    AUC_c = ( sum_{i: y_i = c} rank(s_i)  -  n_pos (n_pos + 1) / 2 ) / ( n_pos * n_neg )

with ``rank`` the 1-based rank of ``s_i`` among all the task's scores, tied scores taking the mean of
their ranks (Mann-Whitney U; equal to the trapezoidal area under the ROC curve, ties counted 1/2).
The task's AUC is the macro one-vs-rest mean over the classes that have at least one positive and
one negative test image; for a binary task both classes give the same value, the usual AUC of the
positive class. Percent (0-100), like accuracy, so :func:`medcl.metrics.summarize` applies as is.

Why not scikit-learn at run time: ``roc_auc_score(y, p, multi_class="ovr", average="macro")`` is the
same number (tests/unit/test_auc.py compares them) but refuses a test split where a class has no
image (ISIC 2024's rarest diagnoses), and would add scikit-learn and SciPy to every Ray worker's
dependencies for one rank sum. This is O(C * N log N) with NumPy only.
"""
from __future__ import annotations

import numpy as np


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores`` (1-D), ties sharing the mean of the ranks they span."""
    values, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True,
                                        return_counts=True)
    del values
    upper = np.cumsum(counts)  # rank of the last element of each tie group
    return (upper - (counts - 1) / 2.0)[inverse.reshape(-1)]


def binary_auc(scores, positive) -> float:
    """AUC (fraction, 0-1) of ``scores`` for the boolean ``positive`` mask; NaN when either side is empty."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    if scores.shape != positive.shape:
        raise ValueError(f"scores {scores.shape} and positive {positive.shape} differ in length")
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(average_ranks(scores)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def macro_auc(probabilities, labels) -> tuple[float, int]:
    """Macro one-vs-rest AUC in percent of an ``N x C`` probability matrix and ``N`` labels in ``0..C-1``.

    Returns ``(auc, classes_used)``: the mean of :func:`binary_auc` over the classes with both
    positives and negatives (times 100), and how many such classes there were; ``(nan, 0)`` when
    none (an empty split, or every image of one class).

    Raises:
        ValueError: ``probabilities`` is not 2-D with C >= 2 columns, lengths differ, or a label is
            outside ``0..C-1``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be N x C with C >= 2, got shape {p.shape}")
    if len(y) != p.shape[0]:
        raise ValueError(f"{len(y)} labels for {p.shape[0]} rows of probabilities")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1}, got {y.min()}..{y.max()}")
    values = [binary_auc(p[:, c], y == c) for c in range(p.shape[1])]
    used = [v for v in values if not np.isnan(v)]
    return (100.0 * float(np.mean(used)), len(used)) if used else (float("nan"), 0)


def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64 (the task head's class probabilities)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
