"""The static results board ``<study>/index.html``, rendered from ``templates/study_board.html.j2``
(Jinja2, autoescaped; it extends ``base.html.j2`` like a run's ``report.html``, one environment in
:mod:`medcl.templating`): the protocol, the tables of :mod:`medcl.study.tables`, the plots and every
run with a link to its ``report.html``. Every link and image is relative to the study folder, so
the board works from a file URL, any static web server or a bucket holding the folder; it needs no
script and no server.
"""
from __future__ import annotations

import os
from pathlib import Path

from medcl.study.tables import display_tables, metric_name
from medcl.templating import render

WIDE_PLOTS = ("plot_matrices", "plot_curves")  # full width with more than 3 methods
HEADINGS = {"accuracy": "Accuracy", "paired": "Against the baseline", "orders": "Order sensitivity", "costs": "Costs",
            "claims": "Findings", "ablations": "Ablations"}
TEXT_COLUMNS = {"accuracy": 2, "claims": 3, "ablations": 2}
PLOT_CAPTIONS = {"plot_intervals": "Mean and interval per metric and method",
                 "plot_matrices": "Accuracy matrices (first order, mean over seeds)",
                 "plot_curves": "Per-task accuracy after each stage (first order)",
                 "plot_orders": "Avg per task order", "plot_cost": "Cost against accuracy"}


def write_board(payload: dict, root: Path) -> Path:
    """Render ``index.html`` into ``root`` (the study folder) and return its path."""
    tables = [{"name": t.name, "title": t.title, "heading": HEADINGS[t.name], "header": t.header, "rows": t.rows,
               "text_columns": TEXT_COLUMNS.get(t.name, 1)} for t in display_tables(payload)]
    metrics = payload["statistics"]["metrics"]
    outputs = payload.get("outputs", {})
    files = [v for k, v in outputs.items() if k.startswith(("table_", "csv_"))]
    files += [v.replace(".md", ".tex") for k, v in outputs.items() if k.startswith("table_")]
    plots = [{"src": v, "caption": PLOT_CAPTIONS.get(k, k),
              "wide": k == "plot_intervals" or (k in WIDE_PLOTS and len(payload["methods"]) > 3)}
             for k, v in outputs.items() if k.startswith("plot_")]
    html = render(
        "study_board.html.j2",
        study=payload["study"], methods=payload["methods"], seeds=payload["seeds"], orders=payload["orders"],
        baseline=payload["baseline"], wall_s=payload["wall_s"], level=f"{100 * payload['statistics']['level']:g} %",
        tuning_note=_tuning_note(payload), files=sorted(files), tables=tables, plots=plots,
        metric_names=[metric_name(m) for m in metrics], runs=[_run_row(r, metrics, root) for r in payload["runs"]])
    target = root / "index.html"
    target.write_text(html)
    return target


def _tuning_note(payload: dict) -> str:
    tuned = [m["label"] for m in payload["methods"] if m["tuned"]]
    if not tuned:
        return "none: every method ran with fixed parameters"
    trials = payload["config"]["tuning"]["trials"]
    objective = payload["config"]["tuning"]["objective"]["metric"]
    return (f"{trials} Optuna trials each for {', '.join(tuned)} (equal budget), scored by {metric_name(objective)} "
            "on validation data; the others ran with fixed parameters")


def _run_row(run: dict, metrics: list[str], root: Path) -> dict:
    values = [(run.get("metrics") or {}).get(m) for m in metrics]
    report = Path(run["run_dir"]) / "report.html"
    cost = run.get("cost") or {}
    return {"method": run["method"], "seed": run["seed"], "order": run["order"], "state": run["state"],
            "cells": ["–" if v is None else f"{v:.1f}" for v in values],
            "wall": "–" if cost.get("wall_s") is None else f"{cost['wall_s']:.1f}",
            "report": report.as_posix() if (root / report).is_file() and not os.path.isabs(report) else None}
