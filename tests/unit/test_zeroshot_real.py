"""experiments/benchmarks/zeroshot_real.py scores a task as the engine's evaluation does (row 0 of a run)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from medcl.data.synthmed import SynthMed
from medcl.engine.context import TrainContext
from medcl.engine.evaluate import evaluate_tasks
from medcl.models import create_model
from medcl.strategies.base import Strategy

REPO = Path(__file__).resolve().parents[2]


def _script():
    path = REPO / "experiments" / "benchmarks" / "zeroshot_real.py"
    spec = importlib.util.spec_from_file_location("zeroshot_real", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Plain(Strategy):
    name = "plain"

    def __init__(self):
        pass


def test_task_accuracy_equals_the_engines_evaluation():
    torch.manual_seed(0)
    tasks = SynthMed().build({"num_tasks": 2, "train_per_class": 1, "val_per_class": 1, "test_per_class": 7}, seed=0)
    bundle = create_model("medcl-tiny-vit-p4")
    ctx = TrainContext(model=bundle.model, tokenizer=bundle.tokenizer, tasks=tasks, stages=[],
                       device=torch.device("cpu"))
    engine, _ = evaluate_tasks(ctx, _Plain(), image_size=bundle.image_size, mean=bundle.mean, std=bundle.std,
                               batch_size=16)
    script = _script()
    for batch_size in (16, 5):  # the script's batching changes nothing
        scored = [script.task_accuracy(bundle, task, batch_size=batch_size) for task in tasks]
        assert scored == pytest.approx(engine, abs=1e-9)
