"""medcl's Ray metrics (``ray.util.metrics``), shown by the Ray dashboard and scraped by Prometheus.

Each metric is created on first use in the process that records it (a Train worker, the Tune
driver, a retrieval actor), so importing this module costs nothing and a process that records
nothing registers nothing. Prometheus sees every name with Ray's ``ray_`` prefix
(``ray_medcl_train_step``). Turn everything off with ``MEDCL_TELEMETRY=0`` in the environment of
the recording process, or ``telemetry: false`` in an experiment file (the train metrics).

| name | kind | tags | what |
|---|---|---|---|
| ``medcl_train_task_index`` | gauge | run, task | 1-based index of the stage being trained |
| ``medcl_train_tasks`` | gauge | run | number of training stages in the run |
| ``medcl_train_step`` | gauge | run, task | step within the stage |
| ``medcl_train_loss`` | gauge | run, task, term | loss terms (``term=loss`` is the total; ``ce``, ``replay``...) |
| ``medcl_train_samples_per_s`` | gauge | run, task | training throughput over the last logging window |
| ``medcl_train_samples_total`` | counter | run, task | samples trained (all workers) |
| ``medcl_eval_accuracy`` | gauge | run, task, evaluated | accuracy (%) on ``evaluated`` after training ``task`` (``zero_shot`` before training) |
| ``medcl_retrieval_queries_total`` | counter | service | queries answered |
| ``medcl_retrieval_queries_per_s`` | gauge | service | queries / seconds of the last call |
| ``medcl_retrieval_latency_seconds`` | histogram | service | wall time of one retrieval call |
| ``medcl_sweep_trials_total`` | counter | sweep, status | trials that reached ``status`` |
| ``medcl_sweep_trials`` | gauge | sweep, status | trials in ``status`` now (running = started - ended) |

Train metrics are recorded by rank 0 at the points where ``events.jsonl`` gets a step (about 50
per stage), never per step, so their cost is that of a few tagged ``set`` calls per event.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

ENV_SWITCH = "MEDCL_TELEMETRY"
TRIAL_STATUSES = ("running", "pruned", "finished", "failed")
LATENCY_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


@dataclass(frozen=True)
class MetricSpec:
    kind: str  # "counter", "gauge" or "histogram"
    description: str
    tags: tuple[str, ...]


METRICS: dict[str, MetricSpec] = {
    "medcl_train_task_index": MetricSpec("gauge", "1-based index of the stage being trained", ("run", "task")),
    "medcl_train_tasks": MetricSpec("gauge", "number of training stages in the run", ("run",)),
    "medcl_train_step": MetricSpec("gauge", "training step within the current stage", ("run", "task")),
    "medcl_train_loss": MetricSpec("gauge", "training loss terms (term=loss is the total)", ("run", "task", "term")),
    "medcl_train_samples_per_s": MetricSpec("gauge", "training samples per second, all workers", ("run", "task")),
    "medcl_train_samples_total": MetricSpec("counter", "training samples, all workers", ("run", "task")),
    "medcl_eval_accuracy": MetricSpec("gauge", "accuracy (%) on task 'evaluated' after training 'task'",
                                      ("run", "task", "evaluated")),
    "medcl_retrieval_queries_total": MetricSpec("counter", "retrieval queries answered", ("service",)),
    "medcl_retrieval_queries_per_s": MetricSpec("gauge", "retrieval queries per second (last call)", ("service",)),
    "medcl_retrieval_latency_seconds": MetricSpec("histogram", "wall time of one retrieval call (s)", ("service",)),
    "medcl_sweep_trials_total": MetricSpec("counter", "sweep trials that reached a status", ("sweep", "status")),
    "medcl_sweep_trials": MetricSpec("gauge", "sweep trials in a status now", ("sweep", "status")),
}

_created: dict[str, Any] = {}
_trial_counts: dict[tuple[str, str], int] = {}


def enabled() -> bool:
    """False when ``MEDCL_TELEMETRY`` is ``0``, ``false``, ``off`` or ``no`` (any case)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def _ray_metric(name: str, spec: MetricSpec):
    from ray.util import metrics

    if spec.kind == "histogram":
        return metrics.Histogram(name, description=spec.description, boundaries=LATENCY_BOUNDARIES,
                                 tag_keys=spec.tags)
    cls = metrics.Counter if spec.kind == "counter" else metrics.Gauge
    return cls(name, description=spec.description, tag_keys=spec.tags)


# Builds a metric object from its name and spec; tests replace it with a recorder.
factory: Callable[[str, MetricSpec], Any] = _ray_metric


def metric(name: str):
    """The process's metric object for ``name`` (one of :data:`METRICS`), created on first use."""
    found = _created.get(name)
    if found is None:
        found = _created[name] = factory(name, METRICS[name])
    return found


def reset() -> None:
    """Forget the created metrics and trial counts (tests; a new ``factory``)."""
    _created.clear()
    _trial_counts.clear()


def record_stage(run: str, task: str, index: int, count: int) -> None:
    """A training stage starts: ``index`` is 0-based, recorded 1-based next to the stage count."""
    if enabled():
        metric("medcl_train_task_index").set(index + 1, tags={"run": run, "task": task})
        metric("medcl_train_tasks").set(count, tags={"run": run})
        metric("medcl_train_step").set(0, tags={"run": run, "task": task})


def record_step(run: str, task: str, step: int, terms: dict[str, float], *, samples: int,
                samples_per_s: float) -> None:
    """A logged training step: the step, every loss term, and the ``samples`` trained since the
    previous logged step at ``samples_per_s``."""
    if not enabled():
        return
    tags = {"run": run, "task": task}
    metric("medcl_train_step").set(step, tags=tags)
    loss = metric("medcl_train_loss")
    for term, value in terms.items():
        loss.set(value, tags={**tags, "term": term})
    if samples_per_s == samples_per_s:  # not NaN
        metric("medcl_train_samples_per_s").set(samples_per_s, tags=tags)
    if samples > 0:
        metric("medcl_train_samples_total").inc(samples, tags=tags)


def record_eval(run: str, after: str, accuracy: dict[str, float]) -> None:
    """An evaluated row: accuracy (%) of every task in ``accuracy`` after training ``after``."""
    if not enabled():
        return
    gauge = metric("medcl_eval_accuracy")
    for evaluated, value in accuracy.items():
        gauge.set(value, tags={"run": run, "task": after, "evaluated": evaluated})


def record_retrieval(queries: int, seconds: float, *, service: str) -> None:
    """One retrieval call answered ``queries`` queries in ``seconds`` of wall time."""
    if not enabled() or queries <= 0:
        return
    tags = {"service": service}
    metric("medcl_retrieval_queries_total").inc(queries, tags=tags)
    metric("medcl_retrieval_latency_seconds").observe(seconds, tags=tags)
    if seconds > 0:
        metric("medcl_retrieval_queries_per_s").set(queries / seconds, tags=tags)


def record_trial(sweep: str, status: str) -> None:
    """A trial of ``sweep`` reached ``status`` (one of :data:`TRIAL_STATUSES`).

    Call it with ``running`` when a trial starts and once more with its final status; the
    ``medcl_sweep_trials`` gauge then holds the trials running now (started minus ended in this
    process) and the number that ended in each final status.
    """
    if status not in TRIAL_STATUSES:
        raise ValueError(f"trial status {status!r}: expected one of {', '.join(TRIAL_STATUSES)}")
    if not enabled():
        return
    metric("medcl_sweep_trials_total").inc(1, tags={"sweep": sweep, "status": status})
    _trial_counts[(sweep, status)] = _trial_counts.get((sweep, status), 0) + 1
    ended = sum(_trial_counts.get((sweep, s), 0) for s in TRIAL_STATUSES if s != "running")
    gauge = metric("medcl_sweep_trials")
    gauge.set(max(0, _trial_counts.get((sweep, "running"), 0) - ended), tags={"sweep": sweep, "status": "running"})
    if status != "running":
        gauge.set(_trial_counts[(sweep, status)], tags={"sweep": sweep, "status": status})
