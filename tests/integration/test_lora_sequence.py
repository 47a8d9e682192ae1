"""The three LoRA strategies through the real worker loop (Ray Train local mode): a 2-task synthmed
sequence with a repeated modality (xray-1, xray-2), checkpoints that keep the base once and each
adapter separately, and a resume after stage 1 that reproduces the uninterrupted run."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from local_sequence import run_local
from medcl.config import validate_experiment
from medcl.models.weights import read_state_dict
from medcl.rundir import read_matrix_csv

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STRATEGIES = {"mslora_cr": {}, "lora_incremental": {}, "lora_separate": {}}


def config(output_dir, name: str):
    return validate_experiment({
        "name": f"lora-{name}", "seed": 0, "output_dir": str(output_dir),
        "benchmark": {"name": "synthmed", "domains": ["xray"], "tasks_per_domain": 2,
                      "train_per_class": 8, "val_per_class": 1, "test_per_class": 4},
        "model": {"name": "medcl-tiny-vit"}, "strategy": {"name": name, "rank": 4, "lora_alpha": 8},
        "train": {"workers": 1, "batch_size": 16, "lr": 0.01, "steps_per_task": 4},
    })


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_lora_strategy_runs_checkpoints_adapters_and_resumes(name, ray_session, tmp_path):
    result = run_local(config(tmp_path / "full", name))
    labels, tasks, values = read_matrix_csv(result.run.matrix)
    assert labels == ["zero_shot", "xray-1", "xray-2"] and np.isfinite(values).all()
    metrics = json.loads(result.run.metrics.read_text())
    first, second = (result.run.checkpoints / f"task-{t}" for t in (1, 2))
    assert sorted(p.name for p in first.glob("*.safetensors")) == ["adapter-1.safetensors", "base.safetensors"]
    assert sorted(p.name for p in second.glob("*.safetensors")) == ["adapter-1.safetensors", "adapter-2.safetensors"]
    adapter = read_state_dict(second / "adapter-2.safetensors")
    assert metrics["trainable_parameters_per_task"] == [sum(t.numel() for t in adapter.values())] * 2
    base = read_state_dict(first / "base.safetensors")
    assert sum(t.numel() for t in base.values()) > 10 * metrics["trainable_parameters"]
    if name == "lora_separate":  # task 1 is evaluated with adapter 1 alone: nothing is forgotten
        assert values[2, 0] == values[1, 0]
    # killed right after stage 1's checkpoint: the rerun restores adapter 1 and retrains stage 2 identically
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(result.run.path, resumed_dir / result.run.path.name)
    shutil.rmtree(resumed_dir / result.run.path.name / "checkpoints" / "task-2")
    resumed = run_local(config(resumed_dir, name), fresh=False)
    assert resumed.resumed_after == 1
    np.testing.assert_allclose(read_matrix_csv(resumed.run.matrix)[2], values, atol=1e-6)
    again = read_state_dict(resumed.run.checkpoints / "task-2" / "adapter-2.safetensors")
    for key, tensor in adapter.items():
        torch.testing.assert_close(again[key], tensor, rtol=1e-5, atol=1e-7)
