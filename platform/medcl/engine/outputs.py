"""Turn a finished (or partial) sequence state into matrix.csv and metrics.json."""
from __future__ import annotations

import numpy as np

from medcl.engine.checkpoint import SequenceState
from medcl.engine.memory import peak_memory_summary
from medcl.metrics import METRIC_KEYS, per_task, summarize
from medcl.rundir import ZERO_SHOT_ROW, RunDir, write_json, write_matrix_csv


def majority_class_rates(tasks) -> dict[str, float]:
    """Per task, the share (%) of its test split's most frequent class: the accuracy of always
    answering that class, beside which a task's accuracy is read (BreastMNIST's 73.1 % zero-shot is
    exactly its majority class). Tasks without a test split are left out."""
    rates = {}
    for task in tasks:
        labels = np.asarray(task.split("test").labels) if "test" in task.splits else np.empty(0)
        if len(labels):
            rates[task.name] = float(100.0 * np.bincount(labels).max() / len(labels))
    return rates


def write_outputs(run: RunDir, state: SequenceState, *, strategy: str, model: str, benchmark: str,
                  extra: dict | None = None) -> dict:
    """Write ``matrix.csv`` and ``metrics.json``; return the metrics. ``extra`` (facts of the run
    known on the driver: the strategy's effective parameters, majority-class rates) joins them.

    With one training stage per task (continual methods) and every stage done, the summary metrics
    of :func:`medcl.metrics.summarize` are computed over the T x T matrix; otherwise (a partial run,
    or a method with another stage plan such as joint training) only ``last`` is given and
    ``note`` says why.
    """
    labels = [ZERO_SHOT_ROW] + state.stage_names[: state.stages_done]
    values = np.array([state.zero_shot] + state.rows, dtype=float)
    write_matrix_csv(run.matrix, labels, state.task_names, values)
    complete = state.stages_done == len(state.stage_names)
    metrics: dict = {"complete": complete, "strategy": strategy, "model": model, "benchmark": benchmark,
                     "tasks": state.task_names, "stages": state.stage_names[: state.stages_done]}
    square = state.stages_done == len(state.task_names) == len(state.stage_names)
    if square:
        matrix = np.array(state.rows, dtype=float)
        metrics.update(summarize(matrix, zero_shot=state.zero_shot))
        metrics["per_task"] = per_task(matrix, state.zero_shot, state.task_names)
    else:
        metrics.update(dict.fromkeys(("transfer", "avg", "bwt", "forgetting", "fwt")))
        metrics["last"] = float(np.mean(state.rows[-1])) if state.rows else None
        metrics["note"] = ("the run is not finished" if not complete else
                           f"{len(state.stage_names)} training stage(s) for {len(state.task_names)} tasks: "
                           "the continual metrics need one stage per task; 'last' is after the final stage")
    metrics["zero_shot"] = state.zero_shot
    metrics.update(write_auc(run, state, square=square))
    metrics["wall_time_s_per_task"] = state.wall_time_s
    metrics["steps_per_task"] = state.steps
    metrics["trainable_parameters"] = max(state.trainable_parameters, default=0)
    metrics["trainable_parameters_per_task"] = state.trainable_parameters
    metrics.update(peak_memory_summary(state.peak_memory))
    last_stage = state.strategy_metrics[-1] if state.strategy_metrics else {}  # not `extra`: the driver's facts
    metrics.update({k: v for k, v in last_stage.items() if k not in metrics})  # e.g. buffer_bytes
    metrics["strategy_metrics_per_task"] = state.strategy_metrics
    metrics.update({k: v for k, v in (extra or {}).items() if k not in metrics})
    write_json(run.metrics, metrics)
    return metrics


def write_auc(run: RunDir, state: SequenceState, *, square: bool) -> dict:
    """Write ``auc.csv`` (when the run recorded AUC) and return ``auc_<key>`` for every key of
    :func:`medcl.metrics.summarize` on the AUC matrix, ``auc_zero_shot`` and ``auc_per_task``;
    None where undefined (no AUC recorded, not one stage per task, a task whose test split never
    had both a positive and a negative image: ``auc_note`` says which)."""
    out: dict = {f"auc_{k}": None for k in METRIC_KEYS}
    out.update(auc_zero_shot=state.auc_zero_shot, auc_per_task=None)
    if state.auc_zero_shot is None or len(state.auc_rows) != state.stages_done:
        if state.stages_done:
            out["auc_note"] = "this run recorded no AUC for some stages (a checkpoint from before AUC)"
        return out
    labels = [ZERO_SHOT_ROW] + state.stage_names[: state.stages_done]
    write_matrix_csv(run.auc, labels, state.task_names, np.array([state.auc_zero_shot] + state.auc_rows, dtype=float))
    if not state.auc_rows:
        return out
    if not square:
        out["auc_last"] = float(np.nanmean(state.auc_rows[-1]))
        return out
    matrix = np.array(state.auc_rows, dtype=float)
    undefined = [n for n, v in zip(state.task_names, matrix.T) if not np.all(np.isfinite(v))]
    if undefined:
        out["auc_note"] = f"AUC undefined for {undefined} (a test split without two classes)"
        return out
    zero_shot = state.auc_zero_shot if np.all(np.isfinite(state.auc_zero_shot)) else None
    out.update({f"auc_{k}": v for k, v in summarize(matrix, zero_shot=zero_shot).items()})
    out["auc_per_task"] = per_task(matrix, zero_shot, state.task_names)
    return out
