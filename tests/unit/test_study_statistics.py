"""A study's statistics are medcl.stats over per-seed means; validation splits never touch test rows."""
from __future__ import annotations

import numpy as np
import pytest

from medcl.stats import paired_difference, t_interval
from medcl.study.statistics import analyse


def run(method, seed, order, **metrics):
    full = {"transfer": 1.0, "avg": 2.0, "last": 3.0, "bwt": -1.0, **metrics}
    return {"method": method, "seed": seed, "order": order, "complete": True, "metrics": full}


def test_per_seed_means_intervals_paired_and_order_spread():
    rng = np.random.default_rng(0)
    runs = [run(m, s, o, avg=float(rng.normal(50 + 5 * (m == "b"), 2)))
            for m in ("a", "b") for s in (0, 1, 2) for o in ("x>y", "y>x")]
    runs.append({**run("b", 3, "x>y"), "complete": False})  # an unfinished run is left out
    out = analyse(runs, ["a", "b"], "a", 0.95)
    per_seed = {m: {s: np.mean([r["metrics"]["avg"] for r in runs if r["method"] == m and r["seed"] == s
                                and r["complete"]]) for s in (0, 1, 2)} for m in ("a", "b")}
    assert out["methods"]["b"]["avg"]["interval"] == t_interval(list(per_seed["b"].values())).as_dict()
    expected = paired_difference(per_seed["b"], per_seed["a"])
    got = out["paired"]["b"]["avg"]
    assert got["interval"] == pytest.approx(expected.interval.as_dict())
    assert got["verdict"] == expected.verdict
    assert got["verdict_word"] == {"holds": "better", "fails": "worse", "inconclusive": "inconclusive"}[expected.verdict]
    per_order = [np.mean([r["metrics"]["avg"] for r in runs if r["method"] == "a" and r["order"] == o and r["complete"]])
                 for o in ("x>y", "y>x")]
    assert out["methods"]["a"]["avg"]["order_spread"] == pytest.approx(max(per_order) - min(per_order))
    assert "a" not in out["paired"] and out["metrics"] == ["transfer", "avg", "last", "bwt"]


def test_auc_metrics_only_when_every_run_has_them():
    runs = [run("a", 0, "d", auc_avg=70.0), run("a", 1, "d", auc_avg=None)]
    assert "auc_avg" not in analyse(runs, ["a"], "a", 0.95)["metrics"]
    runs[1]["metrics"]["auc_avg"] = 72.0
    assert "auc_avg" in analyse(runs, ["a"], "a", 0.95)["metrics"]


def test_forgetting_is_better_when_lower():
    from medcl.study.statistics import paired_against

    low = {"per_seed": {0: 1.0, 1: 2.0, 2: 1.5}}
    high = {"per_seed": {0: 9.0, 1: 8.0, 2: 9.5}}
    assert paired_against(low, high, "forgetting", 0.95)["verdict_word"] == "better"
    assert paired_against(low, high, "avg", 0.95)["verdict_word"] == "worse"


def test_validation_split_is_carved_from_train_only_and_seeded():
    from medcl.data.task import Split, Task
    from medcl.data.validation import with_validation

    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
    task = Task(name="t", classes=("a", "b"), class_prompts=(("a",), ("b",)), modality="xray",
                splits={"train": Split(images, np.arange(20) % 2), "test": Split(images[:4], np.zeros(4, dtype=np.int64))})
    (carved,) = with_validation([task], fraction=0.25, seed=3)
    train, val = carved.split("train").images.ravel(), carved.split("val").images.ravel()
    assert len(val) == 5 and len(train) == 15 and not set(train) & set(val)
    assert carved.split("test") is task.split("test")
    assert np.array_equal(with_validation([task], fraction=0.25, seed=3)[0].split("val").images, carved.split("val").images)
    assert not np.array_equal(with_validation([task], fraction=0.25, seed=4)[0].split("val").images.ravel(), val)
    given = Task(name="g", classes=task.classes, class_prompts=task.class_prompts, modality="xray",
                 splits={**task.splits, "val": Split(images[:2], np.zeros(2, dtype=np.int64))})
    assert with_validation([given], fraction=0.5, seed=0)[0] is given  # the benchmark's own val split is used
