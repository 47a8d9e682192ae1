"""Run a sweep: Ray, resources, the study, one Tune experiment, then the sweep's outputs.

    medcl sweep experiments/sweeps/tiny_synthmed.yaml            # a new sweep
    medcl sweep experiments/sweeps/tiny_synthmed.yaml --resume   # continue after a crash or Ctrl-C

Each invocation runs one Tune experiment (``sweeps/<name>/tune/<stamp>/``) of ``num_samples`` minus
the trials the study has already finished; trials a crash left RUNNING are run again first, under
their own number and run directory (see :mod:`medcl.sweep.study`). How many trials run at once,
how long their Train workers may wait for nodes, and how often a trial is retried come from the
cluster (:mod:`medcl.sweep.placement`).

``output_dir`` is a local path, a shared mount or an object-store URI (``s3://bucket/sweeps``): the
trials' run directories, Tune's results (``RunConfig(storage_path, storage_filesystem)``) and the
tables and plots go through :mod:`medcl.storage`; the study is kept as
:mod:`medcl.sweep.study_store` says. On a multi-node cluster a node-local ``output_dir`` is refused
before any trial starts, naming the field and the fix (:func:`medcl.engine.shared.check_shared`).

Ctrl-C: Tune's own SIGINT handler stops the experiment gracefully (the running trials are stopped,
``Tuner.fit`` returns instead of raising); a second Ctrl-C, or one outside ``fit``, raises
``KeyboardInterrupt``. Either way :func:`run_sweep` raises :class:`SweepInterrupted` and writes no
``best.yaml``, table or plots (they would describe an unfinished sweep as if it were the result;
``--resume`` rebuilds them from the study once the trials are done); the study keeps every finished
trial and leaves the stopped ones RUNNING, which ``--resume`` runs again first. Tune's log lines about
the interruption (its ``Tuner.restore(...)`` advice, which does not apply: medcl resumes from the
study) are dropped from the driver's log (:class:`_TuneInterruptLines`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass

from medcl.engine.cluster import ResourceError
from medcl.redact import mask_tree, mask_url_password
from medcl.sweep.config import SweepConfig, SweepConfigError
from medcl.sweep.errors import SweepInterrupted
from medcl.sweep.searcher import TIME_ATTR, StudySearcher
from medcl.sweep.study import SweepError, finished_count, interrupted_trials, open_study, fail_trials


@dataclass
class SweepResult:
    sweep_dir: object  # a Path, or a medcl.storage.Location
    study: object
    outputs: dict
    wall_time_s: float


def run_sweep(sweep: SweepConfig, *, resume: bool = False, fresh: bool = False) -> SweepResult:
    from medcl.engine.cluster import connect
    from medcl.sweep.study_store import detached, is_staged, staged_study

    started = time.perf_counter()
    task_names = _task_names(sweep)
    _check_objective(sweep, len(task_names))
    from medcl.sweep.space import ORDER_SEP, encode_choice, optuna_distributions, resolve_orders

    orders = resolve_orders(sweep, task_names)
    distributions = optuna_distributions(sweep, orders)
    enqueue = [{k: ORDER_SEP.join(v) if k == "order" and isinstance(v, list) else encode_choice(v)
                for k, v in p.items()} for p in sweep.enqueue]
    total = sweep.num_samples
    if sweep.orders_only:
        enqueue, total = [{"order": ORDER_SEP.join(o)} for o in orders], len(orders)
    with _driver_errors(), staged_study(sweep) as store:  # the lease first: a second driver starts nothing
        joined = connect(None, dashboard=False)
        _check_shared_output(sweep)
        plan = sweep_plan(sweep, joined)
        study = open_study(sweep, resume=resume, fresh=fresh, enqueue=enqueue)
        store.sync()
        try:
            outputs = _run_trials(sweep, study, total, distributions, plan, len(task_names), orders, store.sync)
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside Tune's loop
            raise SweepInterrupted(sweep.sweep_dir, trial_states(study)) from None
        study = detached(study, sweep.storage_url) if is_staged(sweep) else study
    return SweepResult(sweep.sweep_dir, study, outputs, time.perf_counter() - started)


@contextlib.contextmanager
def _driver_errors():
    """A lost lease or a study another driver wrote (possibly raised inside Tune's searcher
    callbacks, wrapped by Tune) ends the sweep as a :class:`SweepError` with its message."""
    from medcl.sweep.lease import LeaseLost
    from medcl.sweep.study_store import StudyConflict

    try:
        yield
    except Exception as exc:
        cause = exc
        while cause is not None and not isinstance(cause, (LeaseLost, StudyConflict)):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise SweepError(str(cause)) from exc


def _run_trials(sweep: SweepConfig, study, total: int, distributions, plan, n_tasks: int, orders,
                on_change=lambda: None) -> dict:
    """The trials the study still needs (interrupted ones first), then the sweep's outputs;
    ``on_change`` is called after every change to the study (the object-store upload)."""
    from medcl.storage import write_text
    from medcl.sweep.outputs import write_sweep_outputs

    write_text(sweep.sweep_dir / "sweep.yaml", _sweep_yaml(sweep))
    interrupted = interrupted_trials(study)
    remaining = total - finished_count(study)
    if len(interrupted) > max(remaining, 0):
        fail_trials(study, interrupted[max(remaining, 0):], "more interrupted trials than num_samples left")
        interrupted = interrupted[: max(remaining, 0)]
        on_change()
    if interrupted:
        print(f"medcl: resuming {len(interrupted)} interrupted trial(s): "
              f"{', '.join(f'trial-{t.number:04d}' for t in interrupted)}", flush=True)
    if remaining > 0:
        print(f"medcl: sweep {sweep.name}: {remaining} trial(s) to run, at most {plan.concurrency} at once; "
              f"study {mask_url_password(sweep.storage_url)}", flush=True)
        if not _tune(sweep, study, distributions, interrupted, remaining, plan, n_tasks, on_change):
            raise SweepInterrupted(sweep.sweep_dir, trial_states(study))
    return write_sweep_outputs(sweep, study, orders)


def trial_states(study) -> dict[str, int]:
    """How many of the study's trials are in each state (``{"COMPLETE": 3, "RUNNING": 1}``)."""
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    return states


def _check_shared_output(sweep: SweepConfig) -> None:
    """Refuse (SweepError) a local ``output_dir`` that some node of a multi-node cluster does not
    see: trials run on any node and write their run directories and Tune results there."""
    from medcl.engine.shared import check_shared
    from medcl.storage import StorageError

    try:
        check_shared(sweep.output_dir, field="output_dir", example="s3://BUCKET/sweeps",
                     writers="every trial writes its run directory and Tune its results",
                     fix="output_dir: s3://BUCKET/sweeps or gs://BUCKET/sweeps; e.g. --set output_dir=s3://BUCKET/sweeps")
    except StorageError as exc:
        raise SweepError(str(exc)) from None


def sweep_plan(sweep: SweepConfig, joined: bool):
    """The sweep's :class:`~medcl.sweep.placement.SweepPlan` for the connected Ray; prints its notes.
    Raises :class:`ResourceError` (naming the ``resources`` fields) when no trial can ever fit."""
    from medcl.sweep.capacity import ClusterFileError
    from medcl.sweep.placement import cluster_spec, current_nodes, plan_sweep

    try:
        spec = cluster_spec(sweep.resources.cluster, joined)
    except ClusterFileError as exc:
        raise ResourceError(f"resources.cluster: {exc}") from None
    plan = plan_sweep(sweep, nodes=current_nodes(), joined=joined, spec=spec)
    for note in plan.notes:
        print(f"medcl: {note}", flush=True)
    return plan


def _tune(sweep, study, distributions, interrupted, remaining: int, plan, n_tasks: int, on_change) -> bool:
    """Run ``remaining`` trials in one Tune experiment; False when Ctrl-C stopped it first (Tune
    then returns normally, with fewer than ``remaining`` trials TERMINATED or ERROR)."""
    from ray import tune
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    from medcl.storage import ray_storage
    from medcl.sweep.trainable import SequenceTrial, trial_name

    # The zero-shot report and early tasks carry no value for some metrics (BWT after one task):
    # ASHA skips such results; Tune's strict check would reject them.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    res = sweep.resources
    trial_resources = {"cpu": res.trial_cpus, "gpu": res.worker_gpus if res.train_workers == 0 else 0}
    searcher = StudySearcher(study, distributions, metrics=[o.metric for o in sweep.objective],
                             prune_metric=sweep.prune_metric, resume=interrupted, on_change=on_change)
    scheduler = FIFOScheduler()
    if sweep.scheduler.name == "asha" and not sweep.orders_only:
        mode = next(o.mode for o in sweep.objective if o.metric == sweep.prune_metric)
        scheduler = AsyncHyperBandScheduler(time_attr=TIME_ATTR, metric=sweep.prune_metric, mode=mode,
                                            max_t=n_tasks, grace_period=sweep.scheduler.grace_period,
                                            reduction_factor=sweep.scheduler.reduction_factor)
    trainable = tune.with_parameters(SequenceTrial, sweep=sweep, plan=plan.trial)
    tuner = tune.Tuner(
        tune.with_resources(trainable, trial_resources),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                    max_concurrent_trials=plan.concurrency, reuse_actors=False,
                                    trial_name_creator=lambda t: trial_name(t.config["trial_number"]),
                                    trial_dirname_creator=lambda t: t.config["run_name"]),
        run_config=tune.RunConfig(name=time.strftime("tune-%Y%m%d-%H%M%S"), **ray_storage(sweep.sweep_dir / "tune"),
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=plan.trial_retries),
                                  # no Tune checkpoints: a trial's run directory is its checkpoint
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)),
    )
    with _TuneInterruptLines.installed():
        grid = tuner.fit()
    return grid.num_terminated + grid.num_errors >= remaining


class _TuneInterruptLines(logging.Filter):
    """Ray Tune's log records about a Ctrl-C (logger ``ray.tune.tune``), made medcl's: "Stop signal
    received..." (it speaks of checkpointing Tune's experiment) is replaced by :data:`STOPPING`, printed
    plainly on stderr; "Trials did not complete..." and "...interrupted... Resume experiment with:
    Tuner.restore(...)" are dropped:
    medcl resumes from the study, not through ``Tuner.restore``, and prints the command itself.
    Tune has no public setting for these lines; every other record of that logger passes."""

    LOGGER = "ray.tune.tune"
    STOPPING = "medcl: Ctrl-C: stopping the running trials (press Ctrl-C again to stop at once)"
    DROPPED = ("Trials did not complete", "Experiment has been interrupted", "Training has been interrupted")

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text.startswith("Stop signal received"):
            print(self.STOPPING, file=sys.stderr, flush=True)
            return False
        return not text.startswith(self.DROPPED)

    @classmethod
    @contextlib.contextmanager
    def installed(cls):
        logger, dropped = logging.getLogger(cls.LOGGER), cls()
        logger.addFilter(dropped)
        try:
            yield
        finally:
            logger.removeFilter(dropped)


def _task_names(sweep: SweepConfig) -> list[str]:
    from medcl.config import validate_experiment
    from medcl.engine.runner import build_tasks
    from medcl.sweep.space import trial_experiment

    config = validate_experiment(trial_experiment(sweep, {}, name="probe", output_dir=None), source="experiment")
    if config.benchmark.order:
        return list(config.benchmark.order)
    return [t.name for t in build_tasks(config)]


def _check_objective(sweep: SweepConfig, n_tasks: int) -> None:
    if n_tasks < 2:
        bad = [o.metric for o in sweep.objective if o.metric not in ("avg", "last", "auc_avg", "auc_last")]
        if bad:
            raise SweepConfigError(sweep.name, [("objective", f"{', '.join(bad)} need at least 2 tasks; "
                                                 f"the benchmark has {n_tasks}")])
    if sweep.scheduler.name == "asha" and sweep.scheduler.grace_period >= max(n_tasks, 1) and not sweep.orders_only:
        raise SweepConfigError(sweep.name, [("scheduler.grace_period", f"{sweep.scheduler.grace_period} leaves no "
                                             f"task to stop at with {n_tasks} tasks; use 1..{n_tasks - 1} or "
                                             "scheduler: {name: none}")])


def _sweep_yaml(sweep: SweepConfig) -> str:
    """The sweep as run, for the record, every URL's password masked (``storage:``'s included:
    ``***``; an ``${ENV}`` reference stays, see :mod:`medcl.redact`). ``--resume`` reads the sweep
    file it is given, not this copy (a copy with ``***`` is refused by :class:`SweepConfig`)."""
    import yaml

    return yaml.safe_dump(mask_tree(sweep.model_dump(mode="json")), sort_keys=False)


__all__ = ["run_sweep", "sweep_plan", "SweepResult", "SweepError", "SweepInterrupted"]
