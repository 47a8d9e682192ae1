"""Real medical data through the whole platform: PneumoniaMNIST then BreastMNIST, one Ray Train worker."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medcl.config import load_experiment, validate_experiment
from medcl.engine.runner import build_tasks
from medcl.rundir import read_matrix_csv

from local_sequence import run_local

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_pneumonia_then_breast_ultrasound_writes_a_full_matrix(ray_session, shared_data, tmp_path):
    config = validate_experiment({
        "name": "medical2", "seed": 0, "output_dir": str(tmp_path),
        "benchmark": {"name": "sequence", "data_root": str(shared_data), "tasks": [
            {"adapter": "medmnist", "dataset": "pneumoniamnist", "root": "medmnist"},
            {"adapter": "medmnist", "dataset": "breastmnist", "root": "medmnist"}]},
        "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
        "train": {"workers": 1, "batch_size": 64, "lr": 3e-3, "steps_per_task": 30},
    })
    result = run_local(config)  # one worker: Ray Train's local mode (the engine's multi-worker path is tested elsewhere)
    labels, tasks, values = read_matrix_csv(result.run.matrix)
    assert labels == ["zero_shot", "pneumoniamnist", "breastmnist"] and tasks == ["pneumoniamnist", "breastmnist"]
    assert values.shape == (3, 2) and np.isfinite(values).all() and ((values >= 0) & (values <= 100)).all()
    # Each accuracy is a count over the real test split: a multiple of 100/624 and of 100/156.
    assert np.allclose(values[:, 0] * 624 / 100, np.round(values[:, 0] * 624 / 100), atol=1e-6)
    assert np.allclose(values[:, 1] * 156 / 100, np.round(values[:, 1] * 156 / 100), atol=1e-6)
    metrics = json.loads(result.run.metrics.read_text())
    assert metrics["complete"] and set(metrics) >= {"transfer", "avg", "last", "bwt", "forgetting", "fwt"}
    assert metrics["last"] == pytest.approx(values[2].mean())
    assert "pneumoniamnist" in result.run.report.read_text()
    _, _, auc = read_matrix_csv(result.run.auc)  # macro AUC beside accuracy, same rows and columns
    assert auc.shape == (3, 2) and ((auc >= 0) & (auc <= 100)).all()
    assert metrics["auc_last"] == pytest.approx(auc[2].mean()) and "AUC matrix" in result.run.report.read_text()


@pytest.mark.parametrize("name, order", [("medical.yaml", ["pneumoniamnist", "breastmnist", "mednist"]),
                                         ("medical_order2.yaml", ["mednist", "breastmnist", "pneumoniamnist"])])
def test_shipped_medical_experiments_build_their_orders(shared_data, name, order):
    config = load_experiment(REPO / "experiments" / name, [f"benchmark.data_root={shared_data}"])
    tasks = build_tasks(config)
    assert [t.name for t in tasks] == order
    assert {t.modality for t in tasks} == {"xray", "ultrasound", "radiology"}
    assert all(t.split("train").images.shape[1:3] == (32, 32) for t in tasks)
