"""One sweep trial = one sequence run, as a Ray Tune function trainable.

The trial's experiment is the base experiment with the trial's parameters (``space.trial_experiment``);
its run directory is ``sweeps/<name>/trials/trial-<number>/``, a full run directory (``medcl report``
reads it; rerunning the trial resumes after its last finished task). After every task the engine
reports a checkpoint; the trial then writes ``matrix.csv``/``metrics.json`` and reports to Tune::

    {"task": k, "tasks": T, "avg": ..., "last": ..., "transfer": ..., ...}   # running metrics, k = 0..T

``task`` is ASHA's time attribute (``k = 0`` is the zero-shot row, without metrics).

Two ways to train, by ``resources.train_workers``:

* ``>= 1``: a ``TorchTrainer`` with that many workers is built inside the Tune function
  (``engine.runner.build_trainer``) with :class:`SequenceReportCallback`, a ``TuneReportCallback``
  that forwards each task's running metrics instead of the worker's raw report.
* ``0``: Ray Train local mode (``ScalingConfig(num_workers=0)``): the worker loop runs in the trial
  process, whose Train report is bridged to ``ray.tune.report`` (no worker processes to start, so a
  small trial costs seconds instead of a worker's start-up).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from medcl.sweep.config import SweepConfig
from medcl.sweep.running import running_metrics
from medcl.sweep.searcher import TIME_ATTR


def trial_name(number: int) -> str:
    return f"trial-{number:04d}"


def make_trainable(sweep: SweepConfig):
    """The Tune function for ``sweep`` (config: ``{"trial_number", "params"}``)."""

    def sequence_trial(config: dict) -> None:
        run_trial(sweep, config["trial_number"], config["params"])

    return sequence_trial


def run_trial(sweep: SweepConfig, number: int, params: dict) -> None:
    import ray.tune

    from medcl.config import validate_experiment
    from medcl.engine.checkpoint import latest_checkpoint, read_state
    from medcl.engine.runner import build_tasks, prepare_run_dir, prepare_strategy
    from medcl.strategies import build_strategy
    from medcl.sweep.space import trial_experiment

    raw = trial_experiment(sweep, params, name=trial_name(number), output_dir=str(sweep.sweep_dir / "trials"))
    experiment = validate_experiment(raw, source=trial_name(number))
    tasks = build_tasks(experiment)
    run = prepare_run_dir(experiment, fresh=False)
    strategy = build_strategy(experiment.strategy.name, experiment.strategy.params())
    stages = strategy.stages(tasks)
    last = latest_checkpoint(run.checkpoints)
    if last is not None and read_state(last).stages_done == len(stages):  # finished before a crash
        ray.tune.report(task_report(run.path, last, experiment))
        return
    experiment = prepare_strategy(strategy, experiment, tasks, run)
    if sweep.resources.train_workers == 0:
        _fit_local(experiment, run, tasks)
    else:
        from medcl.engine.runner import build_trainer

        build_trainer(experiment, run, tasks, joined=_joined(),
                      callbacks=[SequenceReportCallback(str(run.path), experiment.model_dump(mode="json"))]).fit()


def task_report(run_dir: str | Path, checkpoint_dir: Path, experiment) -> dict:
    """Write the run directory's outputs for the checkpoint's state and return the Tune report."""
    from medcl.engine.checkpoint import read_state
    from medcl.engine.outputs import write_outputs
    from medcl.rundir import RunDir

    state = read_state(checkpoint_dir)
    write_outputs(RunDir(Path(run_dir)), state, strategy=experiment.strategy.name, model=experiment.model.name,
                  benchmark=experiment.benchmark.name)
    report = {TIME_ATTR: state.stages_done, "tasks": len(state.stage_names)}
    if state.rows and len(state.rows) <= len(state.task_names):
        report.update(running_metrics(state.rows, state.zero_shot))
    if state.zero_shot:
        report["zero_shot_mean"] = sum(state.zero_shot) / len(state.zero_shot)
    return report


def _fit_local(experiment, run, tasks) -> None:
    """Train in this process through Ray Train's local mode, reporting each task to Tune.

    Ray 2.60 refuses ``ray.train.*`` calls while a Tune session is active (it wants Tune functions
    to use ``ray.tune.*``); the engine's worker loop must stay a Train loop, so for the duration of
    the fit the Tune session is marked as a rank-0 worker session (what Ray's check looks at) and
    the bridge reports to it directly. The mark is removed afterwards, also on a stop or an error.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train._internal.session import get_session
    from ray.train.torch import TorchTrainer

    from medcl.engine.loop import train_sequence

    session = get_session()

    def bridged(loop_config: dict) -> None:
        from ray.train.v2._internal.execution.train_fn_utils import set_train_fn_utils

        set_train_fn_utils(_TuneBridge(run.path, experiment, session))
        train_sequence(loop_config)

    trainer = TorchTrainer(bridged, scaling_config=ScalingConfig(num_workers=0),
                           train_loop_config={"experiment": experiment.model_dump(mode="json"),
                                              "tasks": ray.put(tasks), "run_dir": str(run.path)},
                           run_config=RunConfig(name="checkpoints", storage_path=str(run.path)))
    session.world_rank = 0
    try:
        trainer.fit()
    finally:
        session.world_rank = None


def _tune_bridge_base():
    from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils

    return LocalTrainFnUtils


class _TuneBridge(_tune_bridge_base()):
    """Local-mode Train utilities whose ``report`` keeps the checkpoint in the run directory (as a
    Train run with workers does) and reports the task's running metrics to the Tune session."""

    def __init__(self, run_dir: Path, experiment, session):
        super().__init__(experiment_name="checkpoints")
        self.run_dir, self.experiment, self.session = Path(run_dir), experiment, session

    def report(self, metrics, checkpoint=None, checkpoint_dir_name=None, **kwargs) -> None:
        super().report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_dir_name, **kwargs)
        target = self.run_dir / "checkpoints" / checkpoint_dir_name
        shutil.copytree(checkpoint.path, target, dirs_exist_ok=True)
        self.session.report(task_report(self.run_dir, target, self.experiment))


def _callback_base():
    from ray.tune.integration.ray_train import TuneReportCallback

    return TuneReportCallback


class SequenceReportCallback(_callback_base()):
    """Runs in the Train controller: after each task's report, write the run directory's outputs
    and forward the running metrics (not the worker's raw row) to the Tune trial."""

    def __init__(self, run_dir: str, experiment: dict):
        super().__init__()
        self.run_dir, self.experiment = run_dir, experiment

    def after_report(self, run_context, metrics, checkpoint) -> None:
        from medcl.config import ExperimentConfig

        if checkpoint is None:
            return
        report = task_report(self.run_dir, Path(checkpoint.path), ExperimentConfig.model_validate(self.experiment))
        self._training_actor_item_queue.put(report)


def _joined() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))
