"""Helpers of the fault tests (a plain module, so subprocess scripts can import it too)."""
from __future__ import annotations

import json
from pathlib import Path

STEPS = 10


def fault_experiment(output_dir, name: str, workers: int = 1, **train) -> dict:
    """A 2-task synthmed sequence, 10 steps a task, every step logged to events.jsonl."""
    return {"name": name, "seed": 0, "output_dir": str(output_dir),
            "benchmark": {"name": "synthmed", "num_tasks": 2, "train_per_class": 16, "val_per_class": 1,
                          "test_per_class": 10},
            "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
            "train": {"workers": workers, "batch_size": 16, "lr": 3e-3, "steps_per_task": STEPS, "log_every": 1,
                      **train}}


def read_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines() if line.strip()]


def assert_same_final_model(run_dir: Path, reference_dir: Path, atol: float = 1e-5) -> None:
    """The final checkpoint's weights equal the reference run's (``atol``: gradient all-reduce order)."""
    import torch

    from medcl.models.weights import read_state_dict

    got = read_state_dict(Path(run_dir) / "checkpoints" / "task-2" / "model.safetensors")
    expected = read_state_dict(Path(reference_dir) / "checkpoints" / "task-2" / "model.safetensors")
    assert got.keys() == expected.keys()
    start = read_state_dict(Path(reference_dir) / "checkpoints" / "task-1" / "model.safetensors")
    assert any(not torch.equal(expected[k], start[k]) for k in expected), "task 2 did not change the model"
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=atol, rtol=0, msg=lambda m: f"{key}: {m}")


def attempts(events: list[dict], stage: int) -> list[list[dict]]:
    """The step events of each attempt at ``stage`` (a restarted stage logs a new ``stage_start``)."""
    runs, current = [], None
    for event in events:
        if event["kind"] == "stage_start":
            current = [] if event["stage"] == stage else None
            if current is not None:
                runs.append(current)
        elif event["kind"] == "step" and current is not None:
            current.append(event)
    return runs


def assert_replayed(events: list[dict], stage: int) -> int:
    """The restarted attempt at ``stage`` repeats the interrupted one exactly: same steps, same loss
    (1e-6) at each step both logged. An attempt that did not start from the last task checkpoint, or
    saw other batches, differs at its first step. Returns the number of steps the fault lost."""
    interrupted, restarted = attempts(events, stage)
    assert interrupted, "the interrupted attempt logged no step"
    for before, after in zip(interrupted, restarted):
        assert before["step"] == after["step"]
        assert abs(after["loss"] - before["loss"]) <= 1e-6 * max(1.0, abs(before["loss"])), (before, after)
    return interrupted[-1]["step"]
