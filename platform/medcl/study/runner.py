"""Run a study: tuning per method (equal budgets), the evaluation grid per method, then statistics,
costs and the outputs (``study.json``, tables, plots, ``index.html``).

    medcl study experiments/studies/tiny.yaml             # runs, or resumes where it stopped
    medcl study experiments/studies/tiny.yaml --dry-run   # checks the file, prints the plan

The study folder ``<output_dir>/<name>/``::

    study.yaml           the study as run          phases.json   fingerprint of each phase's configuration
    tuning/<label>/      a sweep (Optuna study + trial run directories) per tuned method
    runs/<label>/        a sweep whose trials are the method's seed x order runs
    study.json           everything below, machine-readable
    tables/              accuracy, paired differences, costs: .md, .tex, .csv
    plots/               PNGs      index.html   the results board

Every invocation resumes: a finished phase is reused, an interrupted one continues. A phase whose
configuration changed since it ran (``phases.json``) is refused, naming the method: rerun with
``--fresh`` or give the study another name.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from medcl.confine import rmtree_below
from medcl.engine.runner import RunError
from medcl.study.config import StudyConfig
from medcl.study.plan import describe, fingerprint, grid_sweep, tuning_sweep

PHASES_FILE = "phases.json"


class StudyError(RunError):
    """A study that cannot start or continue; the message says what to do."""


def run_study(study: StudyConfig, *, fresh: bool = False) -> dict:
    """Run or resume ``study``; write its outputs; return the ``study.json`` payload."""
    from medcl.study.grid import run_grid
    from medcl.study.tuning import TuningError, tune_method

    started = time.perf_counter()
    root = _prepare_folder(study, fresh)
    phases = _Phases(root / PHASES_FILE)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    tuning, runs = {}, []
    for method in study.methods:
        chosen = {}
        if method.tuned:
            phases.check(f"tuning/{method.label}", _sweep_fingerprint(tuning_sweep(study, method)))
            print(f"medcl: study {study.name}: tuning {method.label} ({study.tuning.trials} trials on validation data)",
                  flush=True)
            try:
                tuning[method.label] = tune_method(study, method)
            except TuningError as exc:
                raise StudyError(str(exc)) from None
            chosen = tuning[method.label]["chosen"]
        phases.check(f"runs/{method.label}", _sweep_fingerprint(grid_sweep(study, method, chosen)))
        print(f"medcl: study {study.name}: evaluating {method.label} {chosen or '(fixed parameters)'} "
              f"over {len(study.seeds)} seed(s) x {len(study.orders or [None])} order(s)", flush=True)
        runs += run_grid(study, method, chosen)
    return write_study(study, tuning, runs, wall_s=time.perf_counter() - started)


def collect_study(study: StudyConfig) -> dict:
    """Rebuild the outputs from the phases already on disk (no Ray, nothing run): ``medcl study --report``.
    Raises :class:`StudyError` naming the first method whose phase has not finished."""
    import optuna

    from medcl.study.grid import grid_runs
    from medcl.study.tuning import TuningError, tuning_summary

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started, tuning, runs = time.perf_counter(), {}, []
    for method in study.methods:
        chosen = {}
        if method.tuned:
            sweep = tuning_sweep(study, method)
            try:
                tuning[method.label] = tuning_summary(sweep, _load(sweep), method)
            except (KeyError, TuningError) as exc:
                raise StudyError(f"{method.label}: tuning has not finished ({exc}); run `medcl study` first") from None
            chosen = tuning[method.label]["chosen"]
        sweep = grid_sweep(study, method, chosen)
        try:
            runs += grid_runs(sweep, _load(sweep), method)
        except KeyError:
            raise StudyError(f"{method.label}: its runs have not started; run `medcl study` first") from None
    return write_study(study, tuning, runs, wall_s=_previous_wall(study) or time.perf_counter() - started)


def adopt_study(study: StudyConfig, folders: list[Path]) -> dict:
    """Write the outputs from runs made outside the study (``--from-runs``, :mod:`medcl.study.adopt`):
    nothing is run. ``wall_s`` is the sum of the adopted runs' own wall time (``bench_wall_s`` where
    the script recorded it, else the stages' time); ``missing`` lists the grid points not found."""
    from medcl.study.adopt import AdoptError, adopt_runs

    try:
        runs, missing = adopt_runs(study, folders)
    except AdoptError as exc:
        raise StudyError(str(exc)) from None
    if not runs:
        raise StudyError(f"--from-runs {' '.join(map(str, folders))}: no complete run there has the experiment of any of this study's "
                         "points (same data, model, weights, strategy, train section, seed and order)")
    _prepare_folder(study, fresh=False)
    wall = sum(r["trial_wall_s"] or (r["cost"] or {}).get("wall_s") or 0.0 for r in runs)
    return write_study(study, {}, runs, wall_s=wall,
                       extra={"adopted_from": [str(Path(f).resolve()) for f in folders], "missing": missing})


def _load(sweep):
    import optuna

    return optuna.load_study(study_name=sweep.name, storage=sweep.storage_url)


def _previous_wall(study: StudyConfig) -> float | None:
    try:
        return json.loads((study.study_dir / "study.json").read_text())["wall_s"]
    except (OSError, ValueError, KeyError):
        return None


def write_study(study: StudyConfig, tuning: dict, runs: list[dict], *, wall_s: float, extra: dict | None = None) -> dict:
    """Statistics, costs, ``study.json``, tables, plots and the board from finished phases (``extra``:
    more top-level keys of ``study.json``)."""
    from medcl.study.board import write_board
    from medcl.study.costs import aggregate_costs
    from medcl.study.plots import write_plots
    from medcl.study.statistics import analyse
    from medcl.study.tables import write_tables

    root = study.study_dir
    labels = [m.label for m in study.methods]
    statistics = analyse(runs, labels, study.baseline, study.level, study.claims, study.ablations)
    costs = {label: aggregate_costs([r["cost"] for r in runs if r["method"] == label and r["cost"]]) for label in labels}
    payload = {"study": study.name, "folder": str(root), "wall_s": wall_s, "plan": describe(study),
               "config": study.model_dump(mode="json"), "baseline": study.baseline, "seeds": study.seeds,
               "orders": describe(study)["orders"],
               "methods": [{"label": m.label, "strategy": m.strategy_section, "set": m.set, "tuned": m.tuned,
                            "chosen": tuning.get(m.label, {}).get("chosen", {})} for m in study.methods],
               "changed": {a.label: switched(study, a) for a in study.ablations},
               "tuning": tuning, "runs": [_relative(r, root) for r in runs], "statistics": statistics, "costs": costs,
               **(extra or {})}
    payload["outputs"] = {**write_tables(payload, root / "tables"), **write_plots(payload, root, root / "plots")}
    payload["outputs"]["board"] = str(write_board(payload, root).relative_to(root))
    (root / "study.json").write_text(json.dumps(payload, indent=1, default=str))
    return payload


def switched(study: StudyConfig, ablation) -> dict:
    """What an ablation changes against its method: ``{dotted field: value}`` of the strategy section
    and the ``set`` fields that differ (``strategy.name`` left out when only the label differs)."""
    mine, theirs = study.method(ablation.label), study.method(ablation.of)

    def fields(method):
        section = {f"strategy.{k}": v for k, v in method.strategy_section.items()}
        return {**section, **method.set}

    a, b = fields(mine), fields(theirs)
    return {k: a.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _relative(run: dict, root: Path) -> dict:
    out = dict(run)
    out["run_dir"] = os.path.relpath(run["run_dir"], root)
    metrics = run.get("metrics") or {}
    out["metrics"] = {k: v for k, v in metrics.items() if not k.endswith("_per_task") and k != "strategy_metrics_per_task"}
    return out


def _prepare_folder(study: StudyConfig, fresh: bool) -> Path:
    from medcl import storage

    root = study.study_dir
    if fresh and root.exists():
        rmtree_below(root, Path(study.output_dir).resolve())
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.yaml").write_text(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    return root


def _sweep_fingerprint(sweep) -> str:
    """What a phase's runs depend on: the sweep without its folder (a moved study still resumes)
    and without how many run at once."""
    return fingerprint(sweep.model_dump(mode="json", exclude={"output_dir", "max_concurrent_trials", "resources"}))


class _Phases:
    """``phases.json``: ``{phase: fingerprint}``; a phase run before with another configuration is refused."""

    def __init__(self, path: Path):
        self.path = path
        self.known = json.loads(path.read_text()) if path.is_file() else {}

    def check(self, phase: str, value: str) -> None:
        before = self.known.get(phase)
        if before is not None and before != value:
            raise StudyError(f"{phase}: the study file changed for this method since its runs "
                             f"({self.path.parent / phase} ran with another configuration); rerun with --fresh "
                             "to start the study over, or give the study another name")
        self.known[phase] = value
        self.path.write_text(json.dumps(self.known, indent=1, sort_keys=True))


def plan_text(study: StudyConfig) -> str:
    """The ``--dry-run`` plan as YAML."""
    return yaml.safe_dump(describe(study), sort_keys=False)
