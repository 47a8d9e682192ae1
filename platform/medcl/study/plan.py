"""From a study to sweeps: each method's experiment, its tuning sweep and its evaluation grid.

Both phases run through :mod:`medcl.sweep` (Ray Tune trials that are ordinary run directories, an
Optuna study as the record, ``--resume`` after a crash):

* tuning (a method with a ``space``): ``<study>/tuning/<label>/``, a sweep of exactly
  ``tuning.trials`` trials of the method's experiment with ``train.eval_split: val``, seed
  ``tuning_seed`` and the study's first order, no early stopping (every trial trains every task,
  so budgets are equal in steps as well as in trials);
* grid: ``<study>/runs/<label>/``, a sweep whose trials are exactly the ``seed x order`` points,
  enqueued (``enqueue``), each an ordinary run on the test protocol with the chosen parameters.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from typing import Any

from medcl.study.config import Method, StudyConfig
from medcl.sweep.config import SweepConfig
from medcl.sweep.space import ORDER_SEP, set_path

TUNING_DIR, RUNS_DIR = "tuning", "runs"
SEED_PARAM = "seed"


def method_experiment(study: StudyConfig, method: Method, params: dict[str, Any] | None = None) -> dict:
    """The raw experiment of ``method``: the base, its ``strategy`` section, its ``set`` fields, then
    ``params`` (chosen values of its space), each at its dotted path."""
    raw = copy.deepcopy(study.experiment)
    raw["strategy"] = copy.deepcopy(method.strategy_section)
    for path, value in {**method.set, **(params or {})}.items():
        set_path(raw, path, copy.deepcopy(value))
    raw.setdefault("name", f"{study.name}-{method.label}")
    return raw


def tuning_sweep(study: StudyConfig, method: Method) -> SweepConfig:
    """The tuning sweep of a method with a space (see the module doc)."""
    raw = method_experiment(study, method)
    raw["seed"] = study.tuning_seed
    raw.setdefault("train", {})["eval_split"] = "val"
    raw["train"]["val_fraction"] = study.tuning.val_fraction
    if study.orders:
        raw.setdefault("benchmark", {})["order"] = list(study.orders[0])
    return SweepConfig.model_validate({
        "name": method.label, "experiment": raw, "space": method.space, "objective": [study.tuning.objective],
        "searcher": study.tuning.searcher, "scheduler": {"name": "none"}, "num_samples": study.tuning.trials,
        "max_concurrent_trials": study.max_concurrent_runs, "resources": study.resources,
        "output_dir": str(study.study_dir / TUNING_DIR)})


def grid_points(study: StudyConfig) -> list[dict[str, Any]]:
    """``[{"seed": s, "order": [..]}, ...]``: every seed with every order (order None: the benchmark's own)."""
    orders = study.orders or [None]
    return [{SEED_PARAM: seed, "order": order} for seed, order in itertools.product(study.seeds, orders)]


def grid_sweep(study: StudyConfig, method: Method, params: dict[str, Any]) -> SweepConfig:
    """The evaluation grid of a method with its chosen ``params``: one enqueued trial per seed x order."""
    raw = method_experiment(study, method, params)
    points = [{SEED_PARAM: p[SEED_PARAM], **({"order": p["order"]} if p["order"] else {})} for p in grid_points(study)]
    return SweepConfig.model_validate({
        "name": method.label, "experiment": raw, "space": {SEED_PARAM: {"choice": list(study.seeds)}},
        "order": [list(o) for o in study.orders] if study.orders else None, "enqueue": points,
        "searcher": {"name": "random", "seed": 0}, "scheduler": {"name": "none"}, "num_samples": len(points),
        "objective": [study.tuning.objective], "max_concurrent_trials": study.max_concurrent_runs,
        "resources": study.resources, "output_dir": str(study.study_dir / RUNS_DIR)})


def order_label(order: list[str] | str | None) -> str:
    """``"xray>ultrasound"`` (the sweep's order value), or ``"default"`` for the benchmark's own order."""
    if order is None:
        return "default"
    return order if isinstance(order, str) else ORDER_SEP.join(order)


def fingerprint(value: Any) -> str:
    """The first 12 hex digits of the SHA-256 of ``value`` as sorted JSON (what a phase ran with)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def describe(study: StudyConfig) -> dict:
    """The plan ``--dry-run`` prints: per method its tuning trials (or ``fixed``) and grid runs."""
    points = grid_points(study)
    methods = [{"label": m.label, "strategy": m.strategy_section, "set": m.set,
                "tuning": {"trials": study.tuning.trials, "space": {k: v.model_dump(exclude_none=True)
                                                                    for k, v in m.space.items()}} if m.tuned else "fixed",
                "runs": len(points)} for m in study.methods]
    tuned = sum(m.tuned for m in study.methods)
    return {"study": study.name, "folder": str(study.study_dir), "baseline": study.baseline, "seeds": study.seeds,
            "orders": [order_label(p) for p in (study.orders or [None])], "methods": methods,
            "tuning_trials": tuned * study.tuning.trials, "evaluation_runs": len(points) * len(study.methods),
            "total_runs": tuned * study.tuning.trials + len(points) * len(study.methods)}
