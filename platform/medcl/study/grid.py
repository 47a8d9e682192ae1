"""The evaluation grid of one method: every seed x order as an ordinary run on the test protocol,
run side by side by Ray Tune (a sweep of enqueued points, :func:`medcl.study.plan.grid_sweep`).

A finished run is never run again: the grid sweep resumes (``run_sweep(resume=True)``), and a trial
whose run directory already holds its last checkpoint reports it without training
(:class:`medcl.sweep.trainable.SequenceTrial`).
"""
from __future__ import annotations

from pathlib import Path

from medcl.study.config import Method, StudyConfig
from medcl.study.costs import read_metrics, run_costs
from medcl.study.plan import SEED_PARAM, grid_sweep, order_label
from medcl.sweep.study import run_name


def run_grid(study: StudyConfig, method: Method, chosen: dict) -> list[dict]:
    """Run (or resume) the method's grid with its ``chosen`` parameters; return :func:`grid_runs`."""
    from medcl.sweep.driver import run_sweep

    sweep = grid_sweep(study, method, chosen)
    result = run_sweep(sweep, resume=True)
    return grid_runs(sweep, result.study, method)


def grid_runs(sweep, optuna_study, method: Method) -> list[dict]:
    """One record per grid trial: ``method, seed, order, run_dir, state, complete, metrics, cost``."""
    records = []
    for t in sorted(optuna_study.get_trials(deepcopy=False), key=lambda t: t.number):
        run_dir = Path(sweep.sweep_dir) / "trials" / (t.user_attrs.get("run_name") or run_name(t.number, t.params))
        metrics = read_metrics(run_dir)
        records.append({"method": method.label, "seed": int(t.params[SEED_PARAM]),
                        "order": order_label(t.params.get("order")), "run_dir": str(run_dir),
                        "state": t.state.name, "complete": bool(metrics and metrics.get("complete")),
                        "trial_wall_s": _trial_wall(t),
                        "metrics": metrics, "cost": run_costs(run_dir, metrics) if metrics else None})
    return records


def _trial_wall(trial) -> float | None:
    """Seconds from the trial's start to its end in the Optuna study: the run end to end (process
    start, model build, data, every stage), beside the stages' own time in ``cost.wall_s``. A trial
    resumed after a crash counts from its first start."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()
