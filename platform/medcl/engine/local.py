"""Run a sequence in the test process through Ray Train's local mode: the real worker loop, no actors.

A TorchTrainer with worker actors costs about 30 s per run on a 2-core machine (fresh processes
import torch and open_clip); the strategy tests and ``experiments/benchmarks/method_findings.py``
run many short sequences, so they use Ray Train V2's local mode instead (``ScalingConfig(num_workers=0)``: ``train_sequence`` runs here with world
size 1, the same ``ray.train`` calls answered in process). Local mode keeps a reported checkpoint
in memory only, so the loop copies each one into the run directory itself before committing it
(``build_trainer(local=True)``: ``persist_checkpoints``), as Ray Train does in a real run; the
outputs are then written exactly as ``run_experiment`` writes them.
Multi-worker behaviour is tested through ``run_experiment``.
"""
from __future__ import annotations

from medcl.config import ExperimentConfig, strategy_params
from medcl.engine.checkpoint import latest_checkpoint, read_state
from medcl.engine.outputs import write_outputs
from medcl.engine.runner import RunResult, build_tasks, build_trainer, prepare_run_dir, prepare_strategy
from medcl.strategies import build_strategy
from medcl.report import write_report


def run_local(config: ExperimentConfig, *, fresh: bool = True, prepared=None) -> RunResult:
    """Run (or resume, with ``fresh=False``) ``config`` in this process; needs ``ray.init`` first.
    The strategy's driver hooks run as in ``medcl run``: ``prepare`` (in this process, unless
    ``prepared`` gives its result) and ``services`` around the training."""
    assert config.train.workers == 1, "local mode runs one worker"
    tasks = build_tasks(config)
    run = prepare_run_dir(config, fresh=fresh)
    resume = latest_checkpoint(run.checkpoints, set_aside_torn=True, events=run.events)  # as run_experiment does
    strategy = build_strategy(config.strategy.name, strategy_params(config))
    if prepared is None:
        prepared = prepare_strategy(strategy, config, tasks, run)
    with strategy.services(config, run.path):
        _fit_here(config, run, tasks, prepared)
    state = read_state(latest_checkpoint(run.checkpoints))
    metrics = write_outputs(run, state, strategy=config.strategy.name, model=config.model.name,
                            benchmark=config.benchmark.name)
    write_report(run.path)
    return RunResult(run=run, state=state, metrics=metrics, resumed_after=read_state(resume).stages_done if resume else None)


def _fit_here(config: ExperimentConfig, run, tasks, prepared) -> None:
    build_trainer(config, run, tasks, local=True, prepared=prepared).fit()
