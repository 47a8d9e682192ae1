"""What ``run_experiment`` refuses before training. A whole 2-worker sequence through Ray Train's
TorchTrainer, its outputs, kills and resumption are tested in tests/faults/test_worker_fault.py."""
from __future__ import annotations

import pytest

from medcl.config import validate_experiment
from medcl.engine.runner import RunError, prepare_run_dir, run_experiment

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


def test_changed_experiment_is_not_resumed(ray_session, tmp_path):
    run = prepare_run_dir(_config(tmp_path, "changing"), fresh=False)  # what a started run leaves
    (run.checkpoints / "task-1").mkdir(parents=True)
    with pytest.raises(RunError, match="train.lr"):
        run_experiment(_config(tmp_path, "changing", lr=1e-3))
    assert (run.checkpoints / "task-1").is_dir(), "the refused run must leave the old one intact"
    resumable = _config(tmp_path, "changing", log_every=7, max_failures=2)  # fields that may change
    assert prepare_run_dir(resumable, fresh=False).path == run.path


def test_impossible_resources_fail_fast(ray_session, tmp_path):
    from medcl.engine.cluster import ResourceError

    with pytest.raises(ResourceError, match="train.workers=4"):
        run_experiment(_config(tmp_path, "toolarge", workers=4))
