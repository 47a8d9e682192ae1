"""Every registered strategy through the real worker loop: a 2-task synthmed sequence, 5 steps a task.

Parametrised over ``STRATEGIES.names()``, so a new strategy is covered without a new test. The runs
go through Ray Train's local mode (``local_sequence.run_local``: one worker in this process), about
2-4 s each; each is shared by the tests below through a module-scoped cache.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from local_sequence import run_local
from medcl.cli import main
from medcl.config import validate_experiment
from medcl.rundir import read_matrix_csv
from medcl.engine.runner import build_tasks
from medcl.models.weights import read_state_dict
from medcl.strategies import STRATEGIES, build_strategy

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS = 5
# Parameters that keep a strategy cheap here; strategies not listed run with their defaults.
SMOKE_PARAMS = {"zscl": {"reference": {"name": "synthmed", "per_class": 2}, "ensemble_period": 0.5, "l2": 1.0},
                "rehearsal": {"buffer_size": 20}, "ewc": {"fisher_samples": 4}}


def smoke_config(output_dir, name: str):
    return validate_experiment({
        "name": f"smoke-{name}", "seed": 0, "output_dir": str(output_dir),
        "benchmark": {"name": "synthmed", "num_tasks": 2, "train_per_class": 8, "val_per_class": 1, "test_per_class": 4},
        "model": {"name": "medcl-tiny"}, "strategy": {"name": name, **SMOKE_PARAMS.get(name, {})},
        "train": {"workers": 1, "batch_size": 16, "lr": 3e-3, "steps_per_task": STEPS},
    })


@pytest.fixture(scope="module")
def smoke_run(ray_session, tmp_path_factory):
    """``smoke_run(name)``: that strategy's run result, run once per module."""
    root, results = tmp_path_factory.mktemp("smoke"), {}

    def get(name: str):
        if name not in results:
            results[name] = run_local(smoke_config(root, name))
        return results[name]

    return get


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_runs_a_short_sequence(name, smoke_run):
    result = smoke_run(name)
    labels, tasks, values = read_matrix_csv(result.run.matrix)
    config = smoke_config(result.run.path.parent, name)
    stages = build_strategy(name, config.strategy.params()).stages(build_tasks(config))
    assert labels == ["zero_shot", *(s.name for s in stages)] and tasks == ["xray", "ultrasound"]
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 100)).all()
    metrics = json.loads(result.run.metrics.read_text())
    assert metrics["complete"] and metrics["strategy"] == name and metrics["last"] == pytest.approx(values[-1].mean())
    assert metrics["steps_per_task"] == [STEPS * len(s.train_tasks) for s in stages]
    for checkpoint in sorted(result.run.checkpoints.glob("task-*")):
        state = torch.load(checkpoint / "strategy-rank0.pt", weights_only=True)  # tensors and plain data only
        assert isinstance(state, dict)
    if len(stages) != len(tasks):
        assert "one stage per task" in metrics["note"] and metrics["avg"] is None
        assert "one stage per task" in result.run.report.read_text()
    else:
        assert "note" not in metrics and metrics["avg"] is not None
    assert result.run.report.exists()


def test_rehearsal_reports_its_buffer_in_metrics(smoke_run):
    metrics = json.loads(smoke_run("rehearsal").run.metrics.read_text())
    assert metrics["buffer_samples"] == 20
    assert metrics["buffer_bytes"] == 20 * (32 * 32 * 1 + 3 * 8)  # grayscale 32 px uint8 images + 3 int64 fields
    assert [m["buffer_samples"] for m in metrics["strategy_metrics_per_task"]] == [20, 20]


@pytest.mark.parametrize("name", ["rehearsal", "ewc", "specialist", "icarl", "moe_adapters"])
def test_resuming_after_a_stage_equals_the_uninterrupted_run(name, smoke_run, tmp_path):
    reference = smoke_run(name)
    copy = tmp_path / reference.run.path.name
    shutil.copytree(reference.run.path, copy)
    shutil.rmtree(copy / "checkpoints" / "task-2")  # as if killed right after stage 1's checkpoint
    resumed = run_local(smoke_config(tmp_path, name), fresh=False)
    assert resumed.resumed_after == 1
    np.testing.assert_allclose(read_matrix_csv(resumed.run.matrix)[2], read_matrix_csv(reference.run.matrix)[2], atol=1e-6)
    final, again = reference.run.checkpoints / "task-2", resumed.run.checkpoints / "task-2"
    weights = "moe.safetensors" if name == "moe_adapters" else "model.safetensors"  # moe_adapters saves only its experts
    _assert_same(read_state_dict(again / weights), read_state_dict(final / weights))
    _assert_same(*(torch.load(d / "strategy-rank0.pt", weights_only=True) for d in (again, final)))


def test_compare_writes_one_table_and_one_plot(smoke_run, tmp_path, capsys):
    names = ["finetune", "joint", "rehearsal"]
    runs = [str(smoke_run(n).run.path) for n in names]
    assert main(["compare", *runs, "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    for name in names:
        assert f"| smoke-{name} | {name} |" in table
    assert "| smoke-finetune | finetune |" in capsys.readouterr().out
    assert "one stage per task" in table and "buffer_bytes" in table
    assert "| 1.00 |" in table  # finetune's wall time relative to itself
    assert (tmp_path / "cmp" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _assert_same(got, expected) -> None:
    """Nested dicts/lists of tensors and plain values are equal (tensors to float tolerance)."""
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected)
        for key in expected:
            _assert_same(got[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            _assert_same(a, b)
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    else:
        assert got == expected
