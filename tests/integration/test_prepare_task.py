"""``medcl run``'s driver-side strategy work (``Strategy.prepare``, e.g. PRIMED's planning) runs as a Ray
task with declared CPUs, not in the entrypoint process; its own errors reach the caller unwrapped."""
from __future__ import annotations

import os

import pytest

from medcl.config import ConfigError, validate_experiment
from medcl.engine.runner import prepare_strategy
from medcl.rundir import RunDir
from medcl.strategies import Strategy

pytestmark = pytest.mark.ray


def test_prepare_hook_runs_as_a_ray_task_with_its_threads(ray_session, tmp_path):
    class Hooked(Strategy):  # defined here: shipped to the task by value
        def prepare(self, config, tasks, run_dir):
            if config.seed == 7:
                raise ConfigError("exp", [("strategy.index_dir", "no index.json there")])
            pid, omp = os.getpid(), os.environ.get("OMP_NUM_THREADS")
            return f"pid{pid}-omp{omp}-{run_dir.name}-{len(tasks)}"

    config = validate_experiment({"name": "hooked", "train": {"steps_per_task": 1, "torch_threads": 2}})
    run = RunDir(tmp_path / "hooked")
    name = prepare_strategy(Hooked(), config, ["t1", "t2"], run, as_task=True)
    assert name != f"pid{os.getpid()}-omp2-hooked-2" and name.endswith("-omp2-hooked-2")
    assert prepare_strategy(Hooked(), config, [], run) == f"pid{os.getpid()}-omp{os.environ.get('OMP_NUM_THREADS')}-hooked-0"
    assert prepare_strategy(Strategy(), config, [], run, as_task=True) is None  # no prepare of its own: no task
    with pytest.raises(ConfigError, match="strategy.index_dir.*no index.json") as raised:
        prepare_strategy(Hooked(), config.model_copy(update={"seed": 7}), [], run, as_task=True)
    assert type(raised.value) is ConfigError
