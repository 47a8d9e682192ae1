"""``medcl.faults``: which points a fault names, firing once, and holding a worker at the point until
the test acts (so a fault test never depends on timing)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from medcl.faults import forwarded_environment, matches, parse_fault

FIRE = "from medcl.faults import maybe_fail; maybe_fail('step', step=3, stage=2, rank={rank}); print('passed')"


def run(tmp_path, env: dict, rank: int = 1, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FIRE.format(rank=rank)], env={**_base_env(), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, **kwargs)


def _base_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MEDCL_FAULT")}


def test_points_and_coordinates():
    fault = parse_fault("step=3,stage=2")
    assert matches(fault, "step", {"step": 3, "stage": 2, "rank": 0})
    assert matches(fault, "step", {"step": 3, "stage": 2, "rank": 1})
    assert not matches(fault, "step", {"step": 3, "stage": 1, "rank": 0})
    assert not matches(fault, "after_stage", {"stage": 2, "rank": 0})
    ranked = parse_fault("step=3,stage=2,rank=1")
    assert not matches(ranked, "step", {"step": 3, "stage": 2, "rank": 0})
    assert matches(parse_fault("after_stage=1"), "after_stage", {"stage": 1, "rank": 0})
    assert not matches(parse_fault("after_stage=1,rank=1"), "after_stage", {"stage": 1, "rank": 0})


def test_a_held_worker_announces_its_point_and_waits_for_go(tmp_path):
    env = {"MEDCL_FAULT": "step=3,stage=2", "MEDCL_FAULT_READY": str(tmp_path / "at"),
           "MEDCL_FAULT_GO": str(tmp_path / "go"), "MEDCL_FAULT_ONCE": str(tmp_path / "fired")}
    proc = run(tmp_path, env)
    ready = tmp_path / "at-rank1.json"
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    assert (info["step"], info["stage"], info["rank"], info["pid"]) == (3, 2, 1, proc.pid)
    time.sleep(0.5)
    assert proc.poll() is None, "the worker must hold at the point until the go"
    (tmp_path / "go").touch()
    assert proc.wait(timeout=30) == 17
    assert (tmp_path / "fired-rank1").exists(), "without a rank in the fault, each rank fires once"
    again = run(tmp_path, env)
    assert again.wait(timeout=60) == 0 and "passed" in again.stdout.read(), "fired twice"


def test_hold_waits_for_its_own_death_at_most_the_wait_limit(tmp_path):
    env = {"MEDCL_FAULT": "step=3,stage=2,rank=1", "MEDCL_FAULT_ACTION": "hold", "MEDCL_FAULT_WAIT_S": "1",
           "MEDCL_FAULT_GO": str(tmp_path / "go")}
    (tmp_path / "go").touch()  # ignored by hold
    started = time.monotonic()
    proc = run(tmp_path, env)
    assert proc.wait(timeout=60) == 17 and time.monotonic() - started >= 1


def test_the_fault_variables_are_forwarded(monkeypatch):
    for key in list(forwarded_environment()):
        monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCL_FAULT", "step=1")
    monkeypatch.setenv("MEDCL_FAULT_READY", "/tmp/x")
    monkeypatch.setenv("MEDCL_FAULT_GO", "/tmp/y")
    assert forwarded_environment() == {"MEDCL_FAULT": "step=1", "MEDCL_FAULT_READY": "/tmp/x", "MEDCL_FAULT_GO": "/tmp/y"}
    with pytest.raises(ValueError):
        parse_fault("step=x")


def test_raise_raises_at_the_point_once_and_the_process_lives_on(tmp_path, monkeypatch):
    from medcl.faults import InjectedFault, maybe_fail

    monkeypatch.setenv("MEDCL_FAULT", "step=3,stage=2")
    monkeypatch.setenv("MEDCL_FAULT_ACTION", "raise")
    monkeypatch.setenv("MEDCL_FAULT_ONCE", str(tmp_path / "fired"))
    maybe_fail("step", step=2, stage=2, rank=0)  # not the point: returns
    with pytest.raises(InjectedFault, match="step"):
        maybe_fail("step", step=3, stage=2, rank=0)
    maybe_fail("step", step=3, stage=2, rank=0)  # fired once already (fired-rank0 exists)
    assert (tmp_path / "fired-rank0").exists()


def test_the_sweep_driver_point_names_a_trial_and_its_task():
    fault = parse_fault("trial=1,task=1")
    assert matches(fault, "trial_result", {"trial": 1, "task": 1})
    assert not matches(fault, "trial_result", {"trial": 1, "task": 0})
    assert not matches(fault, "trial_result", {"trial": 0, "task": 1})
    assert not matches(fault, "after_stage", {"stage": 1, "rank": 0}) and not matches(fault, "step", {"step": 1})
    assert matches(parse_fault("trial=2"), "trial_result", {"trial": 2, "task": 5})
