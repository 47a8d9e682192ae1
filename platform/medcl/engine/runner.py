"""Driver side of a sequence run: run directory, tasks, Ray, one TorchTrainer, final outputs.

    medcl run experiments/quickstart.yaml          # runs, or resumes after the last finished task
    medcl run experiments/quickstart.yaml --fresh  # starts over

Resume: the run directory keeps one checkpoint per finished task (``checkpoints/task-<t>``); Ray
Train V2 is given ``RunConfig(name="checkpoints", storage_path=<run dir>)``, so a worker restarted
after a failure, or the same command run again, gets the last one from ``ray.train.get_checkpoint``;
workers also look at the newest ``task-<t>`` on disk and take whichever is newer. Only a committed,
intact checkpoint counts (:mod:`medcl.engine.checkpoint`): before Ray starts, the driver checks every
rank's files (size and sha256) and sets a torn one aside (``task-<t>.torn-<time>``, reported) to
resume from the previous one. Failures: ``train.max_failures`` (-1: unlimited) and a node wait of
``train.node_wait_s`` per worker start (:mod:`medcl.engine.launch`). Resuming with a changed experiment
is refused (the fields that differ are named), since its matrix would mix two experiments.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from medcl.config import ConfigError, ExperimentConfig, benchmark_options, strategy_params, to_yaml
from medcl.data import BENCHMARKS, Task, order_tasks
from medcl.data.skips import skip_lines, skipped_inputs
from medcl.engine.checkpoint import SequenceState, latest_checkpoint, read_state
from medcl.engine.inputs import check_inputs
from medcl.engine.midtask import latest_midtask
from medcl.engine.outputs import majority_class_rates, write_outputs
from medcl.engine.preflight import check_before_ray, out_of_memory_hint
from medcl.engine.provenance import provenance
from medcl.engine.taskrefs import put_tasks
from medcl.errors import MedclError
from medcl.models import ModelLoadError, check_model_source
from medcl.paths import is_weights_file, resolve_paths
from medcl.registry import UnknownNameError
from medcl.rundir import RunDir, append_event
from medcl.confine import rmtree_below
from medcl.appends import read_appended
from medcl.storage import is_remote, place, read_bytes, write_bytes
from medcl.strategies import Strategy, build_strategy

# Fields that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = {"output_dir", "telemetry", "train.log_every", "train.max_failures", "train.cpus_per_worker",
                     "train.eval_batch_size", "train.torch_threads", "train.checkpoint_every",
                     "train.checkpoint_on_preemption", "train.node_wait_s"}


class RunError(MedclError, RuntimeError):
    """A run that cannot start or finish; the message says what to do."""


@dataclass
class RunResult:
    run: RunDir
    state: SequenceState
    metrics: dict
    resumed_after: int | None


def build_tasks(config: ExperimentConfig) -> list[Task]:
    """The benchmark's tasks in the configured order (errors name ``benchmark.order``)."""
    benchmark = BENCHMARKS.get(config.benchmark.name)()
    tasks = benchmark.build(benchmark_options(config), config.seed)
    try:
        tasks = order_tasks(tasks, config.benchmark.order)
    except ValueError as exc:
        raise ConfigError(config.name, [("benchmark.order", str(exc))]) from None
    if config.train.eval_split == "val":  # tuning: scored on validation data, never test (medcl.data.validation)
        from medcl.data.validation import with_validation

        try:
            tasks = with_validation(tasks, fraction=config.train.val_fraction, seed=config.seed)
        except ValueError as exc:
            raise ConfigError(config.name, [("train.eval_split", str(exc))]) from None
    return tasks


def run_experiment(config: ExperimentConfig, *, fresh: bool = False, dashboard: bool = False) -> RunResult:
    try:
        check_model_source(config.model.name, config.model.pretrained)
    except (ModelLoadError, UnknownNameError) as exc:
        raise ConfigError(config.name, [("model.pretrained" if isinstance(exc, ModelLoadError) else "model.name",
                                         str(exc))]) from None
    check_inputs(config)  # the strategy's files and folders (strategy.index_dir...), each named: before Ray, before pinning
    with warnings.catch_warnings():  # the loaders' "skipped N image(s)" warnings: reported per task below instead
        warnings.filterwarnings("ignore", message="medcl: skipped", category=UserWarning)
        tasks = build_tasks(config)
    check_before_ray(config, tasks)  # sizes against the data and this machine's memory: no run folder pinned yet
    facts = {"strategy_params": strategy_params(config).model_dump(mode="json"),
             "majority_class_rate": majority_class_rates(tasks),  # recorded in metrics.json, shown by the report
             "skipped_inputs": skipped_inputs(tasks)}
    run = prepare_run_dir(config, fresh=fresh, started=trained_anything)
    report_skips(run, facts["skipped_inputs"])
    strategy = build_strategy(config.strategy.name, strategy_params(config))
    stages = strategy.stages(tasks)
    # every rank's files (size, sha256) before any worker starts: a torn or mismatched checkpoint is set
    # aside (renamed, reported) and the previous valid one is resumed from
    resume = latest_checkpoint(run.checkpoints, ranks=config.train.workers, set_aside_torn=True, events=run.events)
    resumed_after = read_state(resume).stages_done if resume else None
    if resumed_after is not None:
        mid = latest_midtask(run.checkpoints, resumed_after, ranks=config.train.workers, set_aside_torn=True)
        where = f", at step {read_state(mid).mid_step} of stage {resumed_after + 1} ({mid.name})" if mid else ""
        print(f"medcl: resuming {run.path} after stage {resumed_after}/{len(stages)} ({resume.name}){where}", flush=True)
    if resumed_after != len(stages):
        connect_checked(config, run, dashboard=dashboard)
        tasks = put_tasks(tasks)  # each split in the object store once, for the prepare hook and the workers
        prepared = prepare_strategy(strategy, config, tasks, run, as_task=True)
        with strategy.services(config, run.path):
            _fit(config, run, tasks, prepared=prepared)
    final = latest_checkpoint(run.checkpoints)
    if final is None:
        raise RunError(f"{run.path}: the run wrote no checkpoint; see the errors above")
    state = read_state(final)
    metrics = write_outputs(run, state, strategy=config.strategy.name, model=config.model.name,
                            benchmark=config.benchmark.name, extra=facts)
    write_run_report(run)
    return RunResult(run=run, state=state, metrics=metrics, resumed_after=resumed_after)


def prepare_strategy(strategy, config: ExperimentConfig, tasks: list[Task], run: RunDir, *, as_task: bool = False):
    """What the strategy's driver-side :meth:`~medcl.strategies.base.Strategy.prepare` returns (PRIMED
    plans its reference sets), for the workers' ``ctx.prepared``; None without a ``prepare`` of its own.

    ``as_task`` (``medcl run``; Ray initialised): the hook runs as a Ray task that declares
    ``train.torch_threads`` CPUs (and as many OpenMP threads), so on a cluster it is scheduled on a
    node with free CPUs, inside Ray's accounting, rather than on a head with ``CPU: 0``; what it
    writes goes to the run's storage (:mod:`medcl.storage`)."""
    if type(strategy).prepare is Strategy.prepare:
        return None
    if not as_task:
        return strategy.prepare(config, tasks, run.path)
    import ray

    threads = config.train.torch_threads
    task = ray.remote(_prepare).options(num_cpus=threads, max_retries=0, name=f"medcl-prepare-{config.strategy.name}",
                                        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}})
    try:
        return ray.get(task.remote(strategy, config, tasks, run.path))
    except ray.exceptions.RayTaskError as exc:  # the hook's own error (ConfigError...), not Ray's wrapper
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise


def _prepare(strategy, config: ExperimentConfig, tasks: list[Task], run_path):
    return strategy.prepare(config, tasks, run_path)


def prepare_run_dir(config, *, fresh: bool, resumable: set[str] = RESUMABLE_CHANGES,
                    kind: str = "a run of a different experiment", started=None) -> RunDir:
    """The run directory of ``config`` (any config model with ``run_dir``): emptied with ``fresh``;
    an existing one must hold the same config except ``resumable`` fields (else RunError naming the
    changed fields); ``config.yaml`` is (re)written with provenance. The saved config's paths are
    resolved as a loaded file's are (:mod:`medcl.paths`), so a run directory written with relative
    paths compares equal to the same command run from the same directory. ``started(run) -> bool``
    (``medcl run``: :func:`trained_anything`): a directory it calls not started pins nothing, its
    ``config.yaml`` (left by a run that failed before training) is replaced, said in one line."""
    run = RunDir(config.run_dir.resolve())
    if fresh and run.path.exists():  # only strictly below output_dir (a name '..' is refused twice)
        rmtree_below(run.path, place(config.output_dir))
    if run.config.exists() and started is not None and not started(run):
        print(f"medcl: {run.path} holds the config.yaml of a run that trained nothing (no checkpoint); "
              "replacing it", flush=True)
    elif run.config.exists():
        previous = yaml.safe_load(run.config.read_text()) or {}
        previous.pop("provenance", None)
        previous = resolve_paths(previous, type(config)) if isinstance(previous, dict) else {}
        changed = sorted(k for k in _diff(previous, config.model_dump(mode="json")) if k not in resumable)
        if changed:
            raise RunError(f"{run.path} holds {kind} (changed: {', '.join(changed)}); "
                           "re-run with --fresh to start over, or give it another name")
    run.path.mkdir(parents=True, exist_ok=True)
    run.config.write_text(to_yaml(config, extra={"provenance": provenance()}))
    return run


def report_skips(run: RunDir, summary: dict[str, dict]) -> None:
    """One terminal line and one ``events.jsonl`` event (``{"kind": "skipped_inputs", "task", "count",
    "reasons", "files", "files_not_listed"}``) per task whose loader skipped inputs
    (:func:`medcl.data.skips.skipped_inputs`; metrics.json and report.html list them too)."""
    for line in skip_lines(summary):
        print(f"medcl: {line}", flush=True)
    for task, record in summary.items():
        append_event(run.events, {"kind": "skipped_inputs", "task": task, **record, "time": time.time()})


def trained_anything(run: RunDir) -> bool:
    """Whether ``run`` holds a checkpoint of any kind (``checkpoints/task-<t>``, a mid-task
    ``task-<t>-step-<n>``, a set-aside ``task-<t>.torn-...``): what pins a run's experiment."""
    return any(path.name.startswith("task-") for path in run.checkpoints.glob("task-*"))


def _diff(old, new, prefix: str = "") -> set[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = set(old) | set(new)
        return set().union(*(_diff(old.get(k), new.get(k), f"{prefix}{k}.") for k in keys)) if keys else set()
    return set() if old == new else {prefix.rstrip(".")}


def connect_checked(config: ExperimentConfig, run: RunDir, *, dashboard: bool = False) -> bool:
    """Join or start Ray (True when joined), then refuse, before any training, workers that cannot
    fit (:func:`~medcl.engine.cluster.check_resources`) and every location that not every node sees
    (:func:`~medcl.engine.shared.check_shared`): ``output_dir``, a ``model.pretrained`` file, a
    strategy's ``*_dir`` (PRIMED's index, corpus, plan); one RunError names them all."""
    from medcl.engine.cluster import check_resources, connect
    from medcl.engine.shared import check_shared
    from medcl.storage import StorageError

    joined = connect(config, dashboard=dashboard)
    check_resources(config)
    checks = [(run.path.parent, "output_dir", True)]
    if is_weights_file(config.model.pretrained or ""):  # e.g. runs/pretrain-synthmed/model.safetensors
        checks.append((config.model.pretrained, "model.pretrained", False))
    checks += [(value, f"strategy.{key}", key == "plan_dir") for key, value in config.strategy.params().items()
               if key.endswith("_dir") and isinstance(value, str)]
    problems = []
    for value, field, output in checks:
        try:
            check_shared(value, field=field, output=output)
        except StorageError as exc:
            problems.append(str(exc))
    if problems:
        raise RunError("\n".join(problems))
    return joined


def write_run_report(run: RunDir) -> None:
    """``report.html`` of the run; for a run in an object store, built from a local copy of its
    top-level files (not its checkpoints) and uploaded beside them."""
    from medcl.report import write_report

    if not is_remote(run.path):
        write_report(run.path)
        return
    with tempfile.TemporaryDirectory(prefix="medcl-report-") as tmp:
        local = RunDir(Path(tmp) / run.path.name)
        local.path.mkdir()
        for name in ("config.yaml", "matrix.csv", "auc.csv", "metrics.json"):
            if (run.path / name).is_file():
                (local.path / name).write_bytes(read_bytes(run.path / name))
        (local.path / "events.jsonl").write_text(read_appended(run.events))  # the plain object and/or its parts
        write_bytes(run.report, write_report(local.path).read_bytes())


def _fit(config: ExperimentConfig, run: RunDir, tasks: list[Task], prepared=None) -> None:
    trainer = build_trainer(config, run, tasks, prepared=prepared)
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; show the root cause, keep the checkpoints
        raise RunError(f"training failed: {out_of_memory_hint(exc, config) or _root_cause(exc)}\nFinished tasks are checkpointed in "
                       f"{run.checkpoints}; run the same command again to resume.") from exc


def build_trainer(config: ExperimentConfig, run: RunDir, tasks: list[Task], *, callbacks=(),
                  file_rendezvous: bool | None = None, controller_failure_limit: int | None = None,
                  loop_extras: dict | None = None, prepared=None, local: bool = False):
    """The sequence's TorchTrainer (Ray must be initialised) through :mod:`medcl.engine.launch`:
    ``callbacks`` join its ``RunConfig``; the workers' rendezvous follows the cluster's layout
    unless ``file_rendezvous`` says; ``controller_failure_limit``: worker-group starts that may
    fail (e.g. time out after ``train.node_wait_s`` waiting for nodes) before the run fails (None:
    ``train.max_failures``, :class:`medcl.engine.launch.Workers`); ``loop_extras`` join the worker
    loop's config (a sweep trial's ``gate``); ``prepared``: the strategy's :func:`prepare_strategy`
    result (``ctx.prepared``); ``local``: Ray Train's local mode (the loop in this process). The
    workers get the tasks by reference (:func:`medcl.engine.taskrefs.put_tasks`: each split its own
    object, fetched by a worker when a stage or an evaluation uses it)."""
    import ray

    from medcl.engine.launch import Workers, make_trainer
    from medcl.engine.loop import train_sequence

    workers = Workers.local() if local else Workers.of(config.train, controller_failure_limit=controller_failure_limit)
    meet = None if file_rendezvous is None else ("file" if file_rendezvous else "tcp")
    loop_config = {"experiment": config.model_dump(mode="json"), "tasks": ray.put(put_tasks(tasks)),
                   "run_dir": str(run.path), "prepared": prepared, "persist_checkpoints": local, **(loop_extras or {})}
    return make_trainer(train_sequence, loop_config, run.path, workers, callbacks=callbacks, meet=meet)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"
