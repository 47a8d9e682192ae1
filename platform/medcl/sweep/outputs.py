"""A sweep's outputs, rebuilt from the study and the trial run directories after every invocation.

    sweeps/<name>/trials.parquet   one row per Optuna trial: number, state, param.<path>, the
                                   objective values, <prune metric>@task<k> (per-task values),
                                   final.<metric> (every summarize metric), acc.<task> (final
                                   accuracy per task), tasks_trained, wall_time_s, run_dir
    sweeps/<name>/best.yaml        the best trial's experiment, runnable with ``medcl run``
                                   (multi-objective: the Pareto trial best on the first objective;
                                   every Pareto trial is listed in its header)
    sweeps/<name>/orders.md        with task orders: each metric's mean, spread (std), min and max
                                   across orders (per order when several trials share one)
    sweeps/<name>/*.png            optimisation history, parameter importances, metric by order

``sweeps`` is the sweep's ``output_dir``: a local folder or an object store (``s3://bucket/sweeps``);
every file is written and every trial's ``metrics.json`` read through :mod:`medcl.storage`.
"""
from __future__ import annotations

import io
import json

import numpy as np

from medcl import storage
from medcl.metrics import ALL_METRIC_KEYS
from medcl.sweep.config import SweepConfig
from medcl.sweep.space import ORDER_SEP, trial_experiment
from medcl.sweep.study import run_name


def write_sweep_outputs(sweep: SweepConfig, study, orders: list[list[str]] | None) -> dict:
    """Write everything above (and each trial's ``report.html``); return ``{name: path}``."""
    from medcl.sweep.plots import write_plots

    root = sweep.sweep_dir
    table = trials_table(sweep, study)
    out = {"trials": root / "trials.parquet"}
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    storage.write_bytes(out["trials"], buffer.getvalue())
    best = write_best(sweep, study, root / "best.yaml")
    if best:
        out["best"] = best
    if orders:
        out["orders"] = write_order_summary(table, root / "orders.md")
    out.update(write_plots(sweep, study, table, root))
    _trial_reports(table)
    return out


def trials_table(sweep: SweepConfig, study):
    import pandas as pd

    metrics = [o.metric for o in sweep.objective]
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_dir = sweep.sweep_dir / "trials" / (t.user_attrs.get("run_name") or run_name(t.number, t.params))
        row = {"number": t.number, "state": t.state.name}
        row.update({f"param.{k}": v for k, v in t.params.items()})
        values = t.values if t.state.name == "COMPLETE" else None
        row.update({m: (values[i] if values else None) for i, m in enumerate(metrics)})
        row.update({f"{sweep.prune_metric}@task{k}": v for k, v in sorted(t.intermediate_values.items())})
        row.update(_run_metrics(run_dir))
        row["tasks_trained"] = t.user_attrs.get("tasks_trained")
        row["wall_time_s"] = t.user_attrs.get("wall_time_s")
        row["run_dir"] = str(run_dir)
        rows.append(row)
    return pd.DataFrame(rows)


def best_trial(sweep: SweepConfig, study):
    """The best COMPLETE trial (multi-objective: the Pareto trial best on the first objective)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return None, []
    pareto = study.best_trials if len(sweep.objective) > 1 else [study.best_trial]
    sign = 1 if sweep.objective[0].mode == "max" else -1
    return max(pareto, key=lambda t: sign * t.values[0]), pareto


def best_lines(sweep: SweepConfig, study) -> list[str]:
    """The best trial for the terminal: its number, objective values and every parameter
    (``order`` as ``a > b > c``); empty when no trial is COMPLETE."""
    best, _ = best_trial(sweep, study)
    if best is None:
        return []
    shown = ", ".join(f"{o.metric} {v:.2f}" for o, v in zip(sweep.objective, best.values))
    lines = [f"best trial: trial-{best.number:04d} ({shown})"]
    for name, value in sorted(best.params.items()):
        value = value.replace(ORDER_SEP, " > ") if name == "order" and isinstance(value, str) else value
        lines.append(f"  {name} = {value:.4g}" if isinstance(value, float) else f"  {name} = {value}")
    return lines


def write_best(sweep: SweepConfig, study, path):
    """Write the best trial's experiment to the place ``path``; return it (None, and no file, when
    no trial is COMPLETE)."""
    import yaml

    best, pareto = best_trial(sweep, study)
    if best is None:
        storage.delete(path)
        return None
    raw = trial_experiment(sweep, best.params, name=f"{sweep.name}-best", output_dir=None)
    raw.setdefault("output_dir", "runs")
    shown = ", ".join(f"{o.metric} {v:.2f}" for o, v in zip(sweep.objective, best.values))
    header = [f"# Best trial of sweep {sweep.name}: trial-{best.number:04d} ({shown}).",
              "# Run it with: medcl run " + (str(path) if not storage.is_remote(path)
                                             else f"best.yaml (a local copy of {path}: medcl run reads local files)")]
    if len(pareto) > 1:
        header.append("# Pareto trials: " + "; ".join(
            f"trial-{t.number:04d} " + ", ".join(f"{o.metric} {v:.2f}" for o, v in zip(sweep.objective, t.values))
            for t in pareto))
    storage.write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(_ordered(raw), sort_keys=False))
    return path


def write_order_summary(table, path):
    """Mean, spread (sample std) and range of every metric over COMPLETE trials, across orders."""
    done = table[table["state"] == "COMPLETE"] if len(table) else table
    cols = [f"final.{m}" for m in ALL_METRIC_KEYS if f"final.{m}" in table]
    lines = [f"# Metrics across task orders ({len(done)} complete trial(s))", "",
             "| metric | mean | std | min | max |", "|---|---|---|---|---|"]
    summary = {}
    for col in cols:
        values = done[col].dropna().to_numpy(dtype=float) if len(done) else np.array([])
        if not len(values):
            continue
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary[col.removeprefix("final.")] = {"mean": float(values.mean()), "std": std,
                                               "min": float(values.min()), "max": float(values.max())}
        s = summary[col.removeprefix("final.")]
        lines.append(f"| {col.removeprefix('final.')} | {s['mean']:.2f} | {std:.2f} | {s['min']:.2f} | {s['max']:.2f} |")
    if "param.order" in done and len(done):
        lines += ["", "| order | " + " | ".join(c.removeprefix("final.") for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for order, group in done.groupby("param.order"):
            cells = [f"{group[c].mean():.2f}" if group[c].notna().any() else "n/a" for c in cols]
            lines.append(f"| {order.replace(ORDER_SEP, ' > ')} | " + " | ".join(cells) + " |")
    storage.write_text(path, "\n".join(lines) + "\n")
    storage.write_text(path.parent / (path.name.rsplit(".", 1)[0] + ".json"), json.dumps(summary, indent=2))
    return path


def _run_metrics(run_dir) -> dict:
    file = run_dir / "metrics.json"
    if not storage.is_file(file):
        return {}
    data = json.loads(storage.read_text(file))
    row = {f"final.{m}": data.get(m) for m in ALL_METRIC_KEYS}
    row.update({f"acc.{p['task']}": p["final"] for p in data.get("per_task") or []})
    return row


def _trial_reports(table) -> None:
    from medcl.engine.runner import write_run_report
    from medcl.rundir import RunDir

    for run_dir in table.get("run_dir", []):
        run = storage.place(run_dir)
        matrix, html = _modified_ns(run / "matrix.csv"), _modified_ns(run / "report.html")
        if matrix is not None and (html is None or html < matrix):
            write_run_report(RunDir(run))


def _modified_ns(where) -> int | None:
    """Modification time of the file at the place ``where`` (None when there is none)."""
    filesystem, path = storage.resolve(where)
    info = filesystem.get_file_info(path)
    return info.mtime_ns if info.type.name == "File" else None


def _ordered(raw: dict) -> dict:
    keys = ["name", "seed", "benchmark", "model", "strategy", "train", "output_dir"]
    return {**{k: raw[k] for k in keys if k in raw}, **{k: v for k, v in raw.items() if k not in keys}}
