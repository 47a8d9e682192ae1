"""Helpers of the fault tests (a plain module, so subprocess scripts can import it too)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

STEPS = 10
WAIT_S = 900  # longest wait for a run to reach a fault point (a 2-core machine under load)


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


def held_fault(root: Path, spec: str, *, action: str = "exit") -> dict[str, str]:
    """Environment of a fault (``medcl.faults``) that fires once and holds the worker at the point:
    it writes ``root/at-rank<r>.json`` there, then waits for ``root/go`` (``exit``: then leaves) or
    for its own death (``hold``), so the test acts at a point the run is known to have reached."""
    return {"MEDCL_FAULT": spec, "MEDCL_FAULT_ONCE": str(root / "fired"), "MEDCL_FAULT_READY": str(root / "at"),
            "MEDCL_FAULT_GO": str(root / "go"), "MEDCL_FAULT_ACTION": action, "MEDCL_FAULT_WAIT_S": str(WAIT_S)}


def at_point(root: Path, rank: int) -> dict | None:
    """What rank ``rank`` wrote on reaching the fault point (pid, node_id, step, stage), or None."""
    path = Path(root) / f"at-rank{rank}.json"
    return json.loads(path.read_text()) if path.exists() else None


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT_S,
               alive: Callable[[], bool] = lambda: True) -> object:
    """Poll ``condition`` until it returns something truthy; AssertionError naming ``what`` when
    ``timeout`` passes or ``alive()`` turns false first (the run ended without reaching it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert alive(), f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(0.1)


def logged_steps(run_dir: Path, task: str) -> list[int]:
    """Steps of ``task`` in ``events.jsonl`` so far (every attempt, in order)."""
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # the line being appended right now
            continue
        if event["kind"] == "step" and event["task"] == task:
            steps.append(event["step"])
    return steps


def release(root: Path) -> None:
    """Let a worker held at the fault point act (``exit``)."""
    (Path(root) / "go").touch()


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie left for a parent to reap counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
