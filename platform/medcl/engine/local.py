"""Run a sequence in the test process through Ray Train's local mode: the real worker loop, no actors.

A TorchTrainer with worker actors costs about 30 s per run on a 2-core machine (fresh processes
import torch and open_clip); the strategy tests and ``experiments/benchmarks/method_findings.py``
run many short sequences, so they use Ray Train V2's local mode instead (``ScalingConfig(num_workers=0)``: ``train_sequence`` runs here with world
size 1, the same ``ray.train`` calls answered in process). Local mode keeps a reported checkpoint
in memory only, so ``report`` is wrapped to also copy it into the run directory as Ray Train does
in a real run; the outputs are then written exactly as ``run_experiment`` writes them.
Multi-worker behaviour is tested through ``run_experiment``.
"""
from __future__ import annotations

import shutil

import ray
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from medcl.config import ExperimentConfig
from medcl.engine.checkpoint import latest_checkpoint, read_state
from medcl.engine.loop import train_sequence
from medcl.engine.outputs import write_outputs
from medcl.engine.runner import RunResult, build_tasks, prepare_run_dir
from medcl.report import write_report


def run_local(config: ExperimentConfig, *, fresh: bool = True, prepared=None) -> RunResult:
    """Run (or resume, with ``fresh=False``) ``config`` in this process; needs ``ray.init`` first.
    ``prepared``: what the strategy's driver-side ``prepare`` returned (``ctx.prepared``); this
    function does not call it."""
    assert config.train.workers == 1, "local mode runs one worker"
    tasks = build_tasks(config)
    run = prepare_run_dir(config, fresh=fresh)
    resume = latest_checkpoint(run.checkpoints)
    report = ray.train.report

    def persisting_report(metrics, checkpoint=None, checkpoint_dir_name=None, **kwargs):
        shutil.copytree(checkpoint.path, run.checkpoints / checkpoint_dir_name, dirs_exist_ok=True)
        return report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_dir_name, **kwargs)

    ray.train.report = persisting_report
    try:
        TorchTrainer(train_sequence, scaling_config=ScalingConfig(num_workers=0),
                     train_loop_config={"experiment": config.model_dump(mode="json"), "tasks": ray.put(tasks),
                                        "run_dir": str(run.path), "prepared": prepared},
                     run_config=RunConfig(name="checkpoints", storage_path=str(run.path))).fit()
    finally:
        ray.train.report = report
    state = read_state(latest_checkpoint(run.checkpoints))
    metrics = write_outputs(run, state, strategy=config.strategy.name, model=config.model.name,
                            benchmark=config.benchmark.name)
    write_report(run.path)
    return RunResult(run=run, state=state, metrics=metrics, resumed_after=read_state(resume).stages_done if resume else None)
