"""One sweep trial = one sequence run, as a Ray Tune class trainable (public Tune and Train APIs only).

The trial's experiment is the base experiment with the trial's parameters (``space.trial_experiment``);
its run directory is ``sweeps/<name>/trials/trial-<number>-<params hash>/`` (:func:`medcl.sweep.study.run_name`), a full run directory (``medcl report``
reads it; a trial run again, after a crash or a lost node, resumes after its last finished task).
Each :meth:`SequenceTrial.step` is one task: it returns the running metrics after that task::

    {"task": k, "tasks": T, "avg": ..., "last": ..., "transfer": ..., ...}   # k = 0..T, "done" at k = T

``task`` is ASHA's time attribute (``k = 0`` is the zero-shot row, without metrics).

How it trains: ``setup`` starts ``TorchTrainer.fit()`` in a thread of the trial process, with a
:class:`~medcl.sweep.gate.GateClient` in the worker loop's config. After each task the workers wait
at the gate until Tune has seen the task: ``step`` returns it, and the next ``step`` (Tune wants
more) lets them go on; ``cleanup`` (Tune stopped the trial: ASHA, the last task, an error) closes
the gate, the workers return, and Ray Train ends the run normally, removing its worker group and
placement group before Tune releases the trial's own resources. ``resources.train_workers``:

* ``>= 1``: a ``TorchTrainer`` with that many workers (``engine.runner.build_trainer``), scheduled
  by Ray Train in its own placement group; the trial itself reserves only ``trial_cpus``.
* ``0``: Ray Train local mode (``ScalingConfig(num_workers=0)``): the worker loop runs in the trial
  process (no worker start-up, the right choice for small trials); the loop copies each task's
  checkpoint into the run directory and commits it (``build_trainer(local=True)``), as Ray Train
  persists it for workers.
"""
from __future__ import annotations

import os
import threading

from ray import tune

from medcl.sweep.running import running_auc_metrics, running_metrics
from medcl.sweep.searcher import TIME_ATTR

START_TIMEOUT_VARIABLE = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # named by Ray Train's own time-out error
STOP_WAIT_S = 120.0  # how long cleanup waits for the Train run to end after closing the gate
POLL_S = 2.0


def trial_name(number: int) -> str:
    return f"trial-{number:04d}"


def task_report(run_dir, checkpoint_dir, experiment) -> dict:
    """Write the run directory's outputs (a local path or an object-store place) for the
    checkpoint's state and return the Tune report."""
    from medcl.engine.checkpoint import read_state
    from medcl.engine.outputs import write_outputs
    from medcl.rundir import RunDir
    from medcl.storage import place

    state = read_state(checkpoint_dir)
    write_outputs(RunDir(place(run_dir)), state, strategy=experiment.strategy.name, model=experiment.model.name,
                  benchmark=experiment.benchmark.name)
    report = {TIME_ATTR: state.stages_done, "tasks": len(state.stage_names)}
    if state.rows and len(state.rows) <= len(state.task_names):
        report.update(running_metrics(state.rows, state.zero_shot))
        if len(state.auc_rows) == len(state.rows) and state.auc_zero_shot is not None:
            report.update(running_auc_metrics(state.auc_rows, state.auc_zero_shot))
    if state.zero_shot:
        report["zero_shot_mean"] = sum(state.zero_shot) / len(state.zero_shot)
    return report


class SequenceTrial(tune.Trainable):
    """Tune config: ``{"trial_number", "params", "run_name"}`` (from the searcher); ``sweep`` (the
    :class:`~medcl.sweep.config.SweepConfig`) and ``plan`` (:class:`medcl.sweep.placement.TrialPlan`)
    come through ``tune.with_parameters``."""

    def setup(self, config: dict, sweep=None, plan=None) -> None:
        from medcl.config import strategy_params, validate_experiment
        from medcl.engine.checkpoint import latest_checkpoint, read_state
        from medcl.engine.runner import build_tasks, prepare_run_dir, prepare_strategy
        from medcl.strategies import build_strategy
        from medcl.sweep.space import trial_experiment

        self.gate, self.thread, self.final, self.pending = None, None, None, None
        os.environ.update(plan.environment)  # fault injection variables, forwarded to the workers too
        number, name = config["trial_number"], config["run_name"]
        raw = trial_experiment(sweep, config["params"], name=name, output_dir=str(sweep.sweep_dir / "trials"))
        self.experiment = validate_experiment(raw, source=trial_name(number))
        tasks = build_tasks(self.experiment)
        self.run = prepare_run_dir(self.experiment, fresh=False)
        strategy = build_strategy(self.experiment.strategy.name, strategy_params(self.experiment))
        last = latest_checkpoint(self.run.checkpoints)
        if last is not None and read_state(last).stages_done == len(strategy.stages(tasks)):  # finished before a crash
            self.final = task_report(self.run.path, last, self.experiment)
            return
        prepared = prepare_strategy(strategy, self.experiment, tasks, self.run)
        self._start(self.experiment, tasks, sweep.resources.train_workers, plan, prepared)

    def _start(self, experiment, tasks, train_workers: int, plan, prepared) -> None:
        from medcl.sweep.gate import GateClient, start_gate

        self.gate = start_gate()
        if train_workers == 0:
            trainer = _local_trainer(experiment, self.run, tasks, GateClient(self.gate), prepared)
        else:
            from medcl.engine.runner import build_trainer

            os.environ.setdefault(START_TIMEOUT_VARIABLE, f"{plan.start_timeout_s:g}")
            trainer = build_trainer(experiment, self.run, tasks, file_rendezvous=plan.rendezvous == "file",
                                    controller_failure_limit=plan.controller_failure_limit,
                                    loop_extras={"gate": GateClient(self.gate)}, prepared=prepared)
        self.thread = _FitThread(trainer)
        self.thread.start()

    def step(self) -> dict:
        import ray

        if self.final is not None:
            return {**self.final, "done": True}
        if self.pending is not None:  # Tune asked for more: the workers may train the next task
            ray.get(self.gate.decide.remote(self.pending, True))
            self.pending = None
        done = self._next_report()
        report = task_report(self.run.path, self.run.checkpoints / f"task-{done}", self.experiment)
        if done >= report["tasks"]:
            report["done"] = True
        else:
            self.pending = done
        return report

    def _next_report(self) -> int:
        """The next task index rank 0 reported; raises the run's error if it ended without one."""
        import ray

        while True:
            alive = self.thread.is_alive()
            done = ray.get(self.gate.next_report.remote(POLL_S))
            if done is not None:
                return done
            if not alive:
                self.thread.join()
                raise RuntimeError(f"{self.run.path}: training ended without reporting the next task: "
                                   f"{self.thread.error or 'no error raised'}")

    def cleanup(self) -> None:
        """Close the gate and wait (at most ``STOP_WAIT_S``) for Ray Train to end the run, so its
        placement group is gone before Tune releases this trial's resources."""
        import ray

        if self.gate is None:
            return
        try:
            ray.get(self.gate.stop.remote(), timeout=30)
        except Exception:  # the gate is gone: the workers stop at their next task anyway
            pass
        if self.thread is not None:
            self.thread.join(timeout=STOP_WAIT_S)
        ray.kill(self.gate)
        self.gate = None


class _FitThread(threading.Thread):
    """Runs ``trainer.fit()``; keeps its exception (root cause first) for the trial to raise."""

    def __init__(self, trainer):
        super().__init__(name="medcl-sequence", daemon=True)
        self.trainer, self.error = trainer, None

    def run(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - reported through the trial's step
            self.error = _root_cause(exc)


def _local_trainer(experiment, run, tasks, gate, prepared):
    """Ray Train local mode: the worker loop in this process, world size 1."""
    from medcl.engine.runner import build_trainer

    return build_trainer(experiment, run, tasks, local=True, loop_extras={"gate": gate}, prepared=prepared)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"
