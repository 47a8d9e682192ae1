"""medcl.metrics against accuracy matrices computed by hand (docs/methods.md#1-evaluation-protocol)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medcl.metrics import METRIC_KEYS, per_task, summarize

# Rows: after task 1, 2, 3; columns: task 1, 2, 3.
A3 = [
    [80.0, 30.0, 20.0],
    [85.0, 90.0, 25.0],
    [70.0, 50.0, 85.0],
]
Z3 = [40.0, 35.0, 15.0]


def approx(expected: dict) -> dict:
    return {k: (None if v is None else pytest.approx(v)) for k, v in expected.items()}


def test_asymmetric_3x3_every_metric_differs():
    expected = {
        # j=2: a[1,2] = 30; j=3: (a[1,3] + a[2,3]) / 2 = (20 + 25) / 2 = 22.5 -> (30 + 22.5) / 2
        "transfer": 26.25,
        # column means (80+85+70)/3, (30+90+50)/3, (20+25+85)/3 -> mean = 535 / 9
        "avg": 535 / 9,
        # (70 + 50 + 85) / 3
        "last": 205 / 3,
        # ((70 - 80) + (50 - 90)) / 2
        "bwt": -25.0,
        # task 1: max(80, 85) - 70 = 15; task 2: max(90) - 50 = 40 -> (15 + 40) / 2
        "forgetting": 27.5,
        # (a[1,2] - a[0,2]) + (a[2,3] - a[0,3]) = (30 - 35) + (25 - 15) = 5 -> 5 / 2
        "fwt": 2.5,
    }
    result = summarize(A3, Z3)
    assert result == approx(expected)
    assert len(set(result.values())) == 6


def test_keys_and_plain_python_floats():
    result = summarize(np.array(A3), np.array(Z3))
    assert tuple(result) == METRIC_KEYS
    assert all(type(v) is float for v in result.values())


def test_zero_shot_none_only_drops_fwt():
    with_zs, without = summarize(A3, Z3), summarize(A3)
    assert without["fwt"] is None
    assert {k: v for k, v in without.items() if k != "fwt"} == {k: v for k, v in with_zs.items() if k != "fwt"}


def test_t1_only_avg_and_last_defined():
    assert summarize([[42.0]], [10.0]) == {
        "transfer": None, "avg": 42.0, "last": 42.0, "bwt": None, "forgetting": None, "fwt": None,
    }


def test_t2_forgetting_max_excludes_final_row():
    # a = [[50, 10], [60, 70]], zero_shot = [20, 5]
    expected = {
        "transfer": 10.0,  # a[1,2]
        "avg": 47.5,  # ((50 + 60) / 2 + (10 + 70) / 2) / 2 = (55 + 40) / 2
        "last": 65.0,  # (60 + 70) / 2
        "bwt": 10.0,  # a[2,1] - a[1,1] = 60 - 50
        "forgetting": -10.0,  # max over t=1..1 of a[t,1] - a[2,1] = 50 - 60
        "fwt": 5.0,  # a[1,2] - a[0,2] = 10 - 5
    }
    assert summarize([[50.0, 10.0], [60.0, 70.0]], [20.0, 5.0]) == approx(expected)


def test_transfer_reads_only_strict_upper_triangle():
    changed = np.array(A3)
    changed[np.tril_indices(3)] += 7.0  # diagonal and below
    assert summarize(changed)["transfer"] == pytest.approx(26.25)
    changed[0, 2] += 4.0  # a[1,3]: column 3 mean + 2, transfer + 1
    assert summarize(changed)["transfer"] == pytest.approx(27.25)


def test_per_task_hand_computed():
    rows = per_task(A3, Z3, ["xray", "path", "fundus"])
    assert rows == [
        {"task": "xray", "final": 70.0, "just_trained": 80.0, "best": 85.0, "forgetting": 15.0, "zero_shot": 40.0},
        {"task": "path", "final": 50.0, "just_trained": 90.0, "best": 90.0, "forgetting": 40.0, "zero_shot": 35.0},
        {"task": "fundus", "final": 85.0, "just_trained": 85.0, "best": 85.0, "forgetting": None, "zero_shot": 15.0},
    ]


def test_per_task_mean_forgetting_matches_summary():
    rows = per_task(A3, None, ["a", "b", "c"])
    assert all(r["zero_shot"] is None for r in rows)
    mean = np.mean([r["forgetting"] for r in rows[:-1]])
    assert mean == pytest.approx(summarize(A3)["forgetting"])


def test_per_task_best_includes_stages_before_training():
    # task 2 scores 60 after task 1 (not trained yet) and 40 once trained: best = max(60, 40)
    rows = per_task([[50.0, 60.0], [55.0, 40.0]], None, ["a", "b"])
    assert rows[1]["best"] == 60.0 and rows[1]["just_trained"] == 40.0
    assert rows[0]["forgetting"] == -5.0  # max(50) - 55


def test_per_task_t1():
    assert per_task([[42.0]], None, ["only"]) == [
        {"task": "only", "final": 42.0, "just_trained": 42.0, "best": 42.0, "forgetting": None, "zero_shot": None}
    ]


@pytest.mark.parametrize(
    ("matrix", "zero_shot", "message"),
    [
        ([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], None, "square"),
        ([1.0, 2.0], None, "2-D"),
        (np.zeros((2, 2, 2)), None, "2-D"),
        (np.zeros((0, 0)), None, "non-empty"),
        ([[1.0, math.nan], [3.0, 4.0]], None, "non-finite"),
        ([[1.0, 2.0], [math.inf, 4.0]], None, "non-finite"),
        ([[1.0, 2.0], [3.0]], None, "rectangular"),
        ([[1.0, 2.0], [3.0, 4.0]], [1.0], "length T = 2"),
        ([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0]], "length T = 2"),
        ([[1.0, 2.0], [3.0, 4.0]], [1.0, math.nan], "zero_shot has non-finite"),
    ],
)
def test_invalid_inputs(matrix, zero_shot, message):
    with pytest.raises(ValueError, match=message):
        summarize(matrix, zero_shot)
    with pytest.raises(ValueError, match=message):
        per_task(matrix, zero_shot, ["a", "b"])


def test_per_task_name_count_must_match():
    with pytest.raises(ValueError, match="2 task names for a 3 x 3"):
        per_task(A3, None, ["a", "b"])
