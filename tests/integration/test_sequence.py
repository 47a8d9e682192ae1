"""A real sequence through Ray Train's TorchTrainer: 2 synthmed tasks, 2 workers; resume."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medcl.config import validate_experiment
from medcl.engine.runner import RunError, run_experiment
from medcl.rundir import read_matrix_csv

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _config(tmp_path, name: str, workers: int = 2, **train):
    return validate_experiment({
        "name": name, "seed": 0, "output_dir": str(tmp_path),
        "benchmark": {"name": "synthmed", "num_tasks": 2, "train_per_class": 100, "val_per_class": 4,
                      "test_per_class": 30},
        "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
        "train": {"workers": workers, "cpus_per_worker": 1, "batch_size": 64, "lr": 3e-3,
                  "steps_per_task": 80, **train},
    })


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    """One full 2-worker run, shared: the checks below and the reference for the resume test."""
    return run_experiment(_config(tmp_path_factory.mktemp("seq"), "seq"))


def test_two_task_sequence_with_two_workers(uninterrupted):
    result = uninterrupted
    labels, tasks, values = read_matrix_csv(result.run.matrix)
    assert labels == ["zero_shot", "xray", "ultrasound"] and tasks == ["xray", "ultrasound"]
    assert values.shape == (3, 2) and np.isfinite(values).all()
    chance = 100 / 5
    assert values[1, 0] > chance + 15, "training on task 1 should lift its accuracy well above chance"
    metrics = json.loads(result.run.metrics.read_text())
    assert metrics["complete"] and set(metrics) >= {"transfer", "avg", "last", "bwt", "forgetting", "fwt"}
    assert metrics["last"] == pytest.approx(values[2].mean())
    assert len(metrics["wall_time_s_per_task"]) == 2 and metrics["trainable_parameters"] > 0
    assert sorted(p.name for p in result.run.checkpoints.glob("task-*")) == ["task-0", "task-1", "task-2"]
    assert (result.run.checkpoints / "task-2" / "strategy-rank1.pt").exists()
    events = [json.loads(line) for line in result.run.events.read_text().splitlines()]
    assert any(e["kind"] == "step" for e in events) and sum(e["kind"] == "row" for e in events) == 3
    assert "data:image/png;base64," in result.run.report.read_text()


def test_resume_after_a_kill_equals_an_uninterrupted_run(uninterrupted, tmp_path, monkeypatch):
    reference = uninterrupted  # train.max_failures differs, which does not change results
    monkeypatch.setenv("MEDCL_FAULT", "after_stage=1")
    with pytest.raises(RunError, match="resume"):
        run_experiment(_config(tmp_path, "killed", max_failures=0))
    monkeypatch.delenv("MEDCL_FAULT")
    killed_dir = tmp_path / "killed"
    assert (killed_dir / "checkpoints" / "task-1").is_dir() and not (killed_dir / "checkpoints" / "task-2").exists()
    resumed = run_experiment(_config(tmp_path, "killed", max_failures=0))
    assert resumed.resumed_after == 1
    _, _, expected = read_matrix_csv(reference.run.matrix)
    _, _, got = read_matrix_csv(resumed.run.matrix)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    trained = [json.loads(line) for line in (killed_dir / "events.jsonl").read_text().splitlines()
               if '"kind": "step"' in line and '"xray"' in line]
    assert trained and max(e["step"] for e in trained) == 80 and len(trained) == len(
        [1 for line in reference.run.events.read_text().splitlines()
         if '"kind": "step"' in line and '"xray"' in line]), "task 1 must not be trained again"


def test_changed_experiment_is_not_resumed(uninterrupted):
    output_dir = uninterrupted.run.path.parent
    with pytest.raises(RunError, match="train.lr"):
        run_experiment(_config(output_dir, "seq", lr=1e-3))
    assert (uninterrupted.run.checkpoints / "task-2").is_dir(), "the refused run must leave the old one intact"


def test_impossible_resources_fail_fast(ray_session, tmp_path):
    from medcl.engine.cluster import ResourceError

    with pytest.raises(ResourceError, match="train.workers=4"):
        run_experiment(_config(tmp_path, "toolarge", workers=4))
