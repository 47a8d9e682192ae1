"""Ordinary runs made outside a study, taken into it: ``medcl study STUDY.yaml --from-runs DIR``.

A study's evaluation runs are ordinary medcl runs; runs made elsewhere with exactly the same
experiment (a script such as ``experiments/benchmarks/method_findings.py``, or ``medcl run`` by hand)
need not be made again. A run directory under a ``DIR`` (``DIR/<run>/`` or ``DIR/<group>/<run>/``; several
folders may be given, searched in order) is
adopted as the study's run of a grid point (method, seed, order) when

* its saved ``config.yaml``, validated, equals the point's experiment (the method's experiment
  with ``seed`` and ``benchmark.order`` set, validated) in every field except ``name`` and
  ``output_dir`` (:func:`experiment_key`), and
* its ``metrics.json`` says ``complete``.

Nothing is run, copied, moved or deleted: ``study.json`` records each adopted run's directory
(relative to the study folder) and ``adopted_from``. Only methods with fixed parameters can be
adopted (a tuned method's parameters come from its tuning phase): a study with a ``space`` is
refused. A point without a matching run is listed under ``missing`` and left out of the statistics
(its method then has fewer paired seeds, which the tables show).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from medcl.config import ConfigError, validate_experiment
from medcl.study.config import StudyConfig
from medcl.study.costs import read_metrics, run_costs
from medcl.study.plan import SEED_PARAM, grid_points, method_experiment, order_label

IGNORED_FIELDS = {"name", "output_dir"}
RECORD_ONLY = ("provenance",)  # saved beside the experiment in config.yaml (medcl.rundir), not part of it


class AdoptError(ValueError):
    """Runs cannot be adopted into this study; the message says why."""


def experiment_key(raw: dict) -> str:
    """The validated experiment as sorted JSON without :data:`IGNORED_FIELDS`: two runs with the same
    key trained and evaluated the same way (data, model, weights, strategy, schedule, seed, order)."""
    raw = {k: v for k, v in copy.deepcopy(raw).items() if k not in RECORD_ONLY}
    config = validate_experiment(raw)
    return json.dumps(config.model_dump(mode="json", exclude=IGNORED_FIELDS), sort_keys=True, default=str)


def point_experiment(study: StudyConfig, method, point: dict) -> dict:
    """The raw experiment of one grid point: the method's, with the point's seed and order."""
    raw = method_experiment(study, method)
    raw["seed"] = point[SEED_PARAM]
    if point["order"]:
        raw.setdefault("benchmark", {})["order"] = list(point["order"])
    return raw


def index_runs(folder: Path) -> dict[str, list[Path]]:
    """``{experiment_key: [run directories]}`` of the complete runs one or two levels under ``folder``;
    a directory whose ``config.yaml`` does not validate is not a run of any study and is passed over."""
    found: dict[str, list[Path]] = {}
    for config_file in sorted([*folder.glob("*/config.yaml"), *folder.glob("*/*/config.yaml")]):
        metrics = read_metrics(config_file.parent)
        if not (metrics and metrics.get("complete")):
            continue
        try:
            key = experiment_key(yaml.safe_load(config_file.read_text()) or {})
        except (ConfigError, yaml.YAMLError, TypeError, AttributeError):
            continue
        found.setdefault(key, []).append(config_file.parent)
    return found


def adopt_runs(study: StudyConfig, folders: list[Path]) -> tuple[list[dict], list[dict]]:
    """``(runs, missing)``: one record per grid point that has a matching run under ``folders`` (the
    first folder's wins; the fields of :func:`medcl.study.grid.grid_runs`), and the points that have none."""
    folders = [Path(f).resolve() for f in folders]
    absent = [str(f) for f in folders if not f.is_dir()]
    if absent:
        raise AdoptError(f"--from-runs: no such folder: {', '.join(absent)}")
    tuned = [m.label for m in study.methods if m.tuned]
    if tuned:
        raise AdoptError(f"--from-runs adopts runs of methods with fixed parameters only; {', '.join(tuned)} "
                         "have a search space (their parameters come from the study's tuning phase): run "
                         "`medcl study` without --from-runs")
    index: dict[str, list[Path]] = {}
    for folder in folders:
        for key, dirs in index_runs(folder).items():
            index.setdefault(key, []).extend(dirs)
    runs, missing = [], []
    for method in study.methods:
        for point in grid_points(study):
            matches = index.get(experiment_key(point_experiment(study, method, point)), [])
            where = {"method": method.label, "seed": point[SEED_PARAM], "order": order_label(point["order"])}
            if not matches:
                missing.append(where)
                continue
            runs.append(_record(where, matches[0]))
    return runs, missing


def _record(where: dict, run_dir: Path) -> dict:
    metrics = read_metrics(run_dir)
    return {**where, "run_dir": str(run_dir), "state": "COMPLETE", "complete": True,
            "trial_wall_s": metrics.get("bench_wall_s"), "metrics": metrics, "cost": run_costs(run_dir, metrics),
            "adopted": True}
