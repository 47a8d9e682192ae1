"""Text tables, plots and the self-contained HTML report of a run directory.

``write_report(run_dir)`` reads ``matrix.csv``, ``metrics.json``, ``config.yaml`` and
``events.jsonl`` (see :mod:`medcl.rundir`) and writes ``report.html`` with every image embedded as a
base64 PNG data URI, so the file can be mailed or archived on its own. The page is the Jinja2
template ``templates/report.html.j2`` (autoescaped; :mod:`medcl.templating`); this module only
gathers its values. Several runs side by side (``medcl compare``) are :mod:`medcl.compare`.

Plots use matplotlib's object API (``Figure`` + Agg canvas), never ``pyplot``: no global state, no
display needed, safe inside Ray workers.
"""
from __future__ import annotations

import base64
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medcl.metrics import AUC_METRIC_KEYS, METRIC_KEYS, per_task, summarize
from medcl.rundir import ZERO_SHOT_ROW, RunDir, read_events, read_matrix_csv
from medcl.templating import render

METRIC_LEGEND = {
    "transfer": "accuracy on tasks not trained yet (kept zero-shot ability)",
    "avg": "every task at every stage",
    "last": "every task after the final stage",
    "bwt": "final minus just-trained accuracy (negative = forgetting)",
    "forgetting": "best earlier minus final accuracy",
    "fwt": "just-before-training minus zero-shot accuracy",
}
_PER_TASK_COLUMNS = ("zero_shot", "just_trained", "best", "final", "forgetting")


def _display_label(label: str) -> str:
    return "before training" if label == ZERO_SHOT_ROW else f"after {label}"


def _fmt(value, digits: int = 2, missing: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _text_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Fixed-width table: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_matrix(row_labels: list[str], task_names: list[str], values) -> str:
    """The accuracy matrix as a fixed-width text table.

    Rows are named "before training" (the ``zero_shot`` row) or "after <task>"; columns are tasks;
    values are percentages with 1 decimal and NaN (not evaluated) is shown as "-".
    """
    values = np.asarray(values, dtype=float).reshape(len(row_labels), len(task_names))
    rows = [
        [_display_label(label), *(_fmt(float(v), 1, "-") for v in row)]
        for label, row in zip(row_labels, values)
    ]
    return _text_table(["", *task_names], rows)


def format_metrics(metrics: dict) -> str:
    """transfer/avg/last/bwt/forgetting/fwt as a two-column table (2 decimals, None -> "n/a"), the
    same on the AUC matrix (auc_<key>) when the run recorded AUC, then a one-line legend."""
    keys = METRIC_KEYS + (AUC_METRIC_KEYS if metrics.get("auc_zero_shot") is not None else ())
    rows = [[key, _fmt(metrics.get(key))] for key in keys]
    legend = "; ".join(f"{key}: {text}" for key, text in METRIC_LEGEND.items())
    return _text_table(["metric", "value (%)"], rows) + "\n" + legend


# --------------------------------------------------------------------------- loading a run


@dataclass
class _Run:
    path: Path
    row_labels: list[str]
    task_names: list[str]
    values: np.ndarray
    metrics: dict
    config_text: str | None = None
    events: list[dict] = field(default_factory=list)
    auc: np.ndarray | None = None  # auc.csv's values (same rows and columns), when the run recorded AUC

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def describe(self, key: str) -> str | None:
        """strategy/model/benchmark: from metrics.json, else from config.yaml (str or {name: ...})."""
        value = self.metrics.get(key)
        if value is None and self.config_text:
            config = yaml.safe_load(self.config_text)
            value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, dict):
            value = value.get("name")
        return None if value is None else str(value)


def _load_run(run_dir: Path) -> _Run:
    paths = RunDir(Path(run_dir))
    if not paths.path.is_dir():
        raise FileNotFoundError(f"{paths.path}: no such run folder (it does not exist); "
                                "give the folder `medcl run` printed as 'Run directory'")
    if not paths.matrix.exists():
        raise FileNotFoundError(
            f"{paths.path}: no matrix.csv; not a finished medcl run (or it has no evaluated rows yet)"
        )
    labels, tasks, values = read_matrix_csv(paths.matrix)
    if not labels:
        raise ValueError(f"{paths.matrix}: no evaluated rows yet")
    if paths.metrics.exists():
        metrics = json.loads(paths.metrics.read_text())
    else:
        metrics = _metrics_from_matrix(labels, tasks, values)
    config_text = paths.config.read_text() if paths.config.exists() else None
    auc = read_matrix_csv(paths.auc)[2] if paths.auc.exists() else None
    if auc is not None and auc.shape != values.shape:
        auc = None  # written before the newest accuracy row: not shown rather than misaligned
    return _Run(paths.path, labels, tasks, values, metrics, config_text, read_events(paths.events), auc)


def _metrics_from_matrix(labels: list[str], tasks: list[str], values: np.ndarray) -> dict:
    """summarize() + per_task() when the trained rows form a complete T x T matrix, else all None."""
    zero_shot = values[0] if labels[0] == ZERO_SHOT_ROW else None
    trained = values[1:] if zero_shot is not None else values
    if trained.shape != (len(tasks), len(tasks)) or not np.all(np.isfinite(trained)):
        return dict.fromkeys(METRIC_KEYS)
    if zero_shot is not None and not np.all(np.isfinite(zero_shot)):
        zero_shot = None
    return {**summarize(trained, zero_shot), "per_task": per_task(trained, zero_shot, tasks)}


# --------------------------------------------------------------------------- plots


def _save_png(fig: Figure, target) -> None:
    """Render ``fig`` as PNG to a path or a binary file object."""
    FigureCanvasAgg(fig)
    fig.savefig(target, format="png", dpi=120, bbox_inches="tight")


def _data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    _save_png(fig, buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _matrix_figure(row_labels: list[str], task_names: list[str], values, label: str = "accuracy (%)") -> Figure:
    values = np.asarray(values, dtype=float).reshape(len(row_labels), len(task_names))
    fig = Figure(figsize=(1.2 + 1.0 * len(task_names), 1.0 + 0.55 * len(row_labels)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (r, c), v in np.ndenumerate(values):
        text, colour = ("-", "black") if math.isnan(v) else (f"{v:.1f}", "white" if v < 60 else "black")
        ax.text(c, r, text, ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(task_names)), task_names, rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), [_display_label(label) for label in row_labels])
    ax.set_xlabel("evaluated on task")
    fig.colorbar(image, ax=ax, label=label)
    return fig


def plot_matrix(row_labels: list[str], task_names: list[str], values, path: Path) -> Path:
    """Write the accuracy matrix as an annotated heat map PNG (rows "before training",
    "after <task>"; NaN cells blank with "-"; colour scale 0-100 %). Returns ``path``."""
    _save_png(_matrix_figure(row_labels, task_names, values), path)
    return Path(path)


def _task_curves_figure(runs: list[_Run]) -> Figure:
    columns = min(3, len(runs))
    grid_rows = math.ceil(len(runs) / columns)
    fig = Figure(figsize=(5.0 * columns, 3.8 * grid_rows), layout="constrained")
    axes = fig.subplots(grid_rows, columns, sharey=True, squeeze=False).ravel()
    for ax in axes[len(runs):]:
        ax.set_visible(False)
    for ax, run in zip(axes, runs):
        stages = range(len(run.row_labels))
        for j, task in enumerate(run.task_names):
            ax.plot(stages, run.values[:, j], marker="o", label=task)
        ticks = ["before" if lb == ZERO_SHOT_ROW else lb for lb in run.row_labels]
        ax.set_xticks(stages, ticks, rotation=30, ha="right")
        ax.set_title(run.name)
        ax.set_xlabel("after training stage")
        ax.grid(alpha=0.3)
    for ax in axes[::columns]:
        ax.set_ylabel("accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8)  # off the curves
    return fig


_NOT_LOSS_TERMS = {"kind", "stage", "task", "step", "samples_per_s", "time"}


def _loss_figure(events: list[dict]) -> Figure | None:
    """One subplot per training stage: every numeric loss term of the step events against step."""
    series: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        if event.get("kind") != "step" or "step" not in event:
            continue
        curves = series[(event.get("stage"), event.get("task"))]
        for key, value in event.items():
            if key not in _NOT_LOSS_TERMS and isinstance(value, (int, float)) and not isinstance(value, bool):
                curves[key].append((event["step"], value))
    if not series:
        return None
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    terms = sorted({key for curves in series.values() for key in curves})
    colours = {key: f"C{i % 10}" for i, key in enumerate(terms)}  # a term has one colour in every panel
    for ax, ((stage, task), curves) in zip(axes, series.items()):
        for key, points in sorted(curves.items()):
            ax.plot(*zip(*points), label=key, color=colours[key], marker="o" if len(points) == 1 else None)
        ax.set_title(f"stage {stage}: {task}" if stage is not None else str(task))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(series):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[key], label=key) for key in terms]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(terms), 6), fontsize=8)  # off the curves
    return fig


# --------------------------------------------------------------------------- HTML report
# The page is templates/report.html.j2 (Jinja2, autoescaped, see medcl.templating); the functions
# below only gather its context: plain text and numbers, never HTML.


def _report_context(run: _Run) -> dict:
    """Everything ``report.html.j2`` shows, as plain values: ``facts`` ((name, text) pairs for the
    header), ``note``, ``matrices`` (accuracy, then AUC when recorded: id, title, alt, image data
    URI, text table), ``metric_rows`` (metric, value, meaning), ``per_task`` (header, rows,
    majority), ``skipped``/``strategy``/``retrieval`` (a dict, or None when the run has none),
    ``curves_image``, ``loss_image`` (None without step events) and ``config_text`` (None without
    config.yaml)."""
    metric_rows = [[k, _fmt(run.metrics.get(k)), METRIC_LEGEND[k]] for k in METRIC_KEYS]
    if run.auc is not None:
        metric_rows += [[k, _fmt(run.metrics.get(k)), "on the AUC matrix"] for k in AUC_METRIC_KEYS]
    header, rows = _per_task_rows(run)
    loss = _loss_figure(run.events)
    return {
        "run_name": run.name, "facts": _facts(run), "note": run.metrics.get("note"),
        "matrices": _matrix_sections(run), "metric_rows": metric_rows,
        "per_task": {"header": header, "rows": rows, "majority": bool(run.metrics.get("majority_class_rate"))},
        "skipped": _skipped_section(run), "strategy": _strategy_section(run), "retrieval": _retrieval_section(run),
        "curves_image": _data_uri(_task_curves_figure([run])),
        "loss_image": None if loss is None else _data_uri(loss),
        "config_text": run.config_text,
    }


def _facts(run: _Run) -> list[tuple[str, str]]:
    """strategy, model, benchmark and the trainable-parameter count, those the run recorded."""
    facts = [(k, run.describe(k)) for k in ("strategy", "model", "benchmark")]
    facts.append(("trainable parameters", run.metrics.get("trainable_parameters")))
    return [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in facts if v is not None]


def _matrix_sections(run: _Run) -> list[dict]:
    """The accuracy matrix (heat map + text table) and, when the run recorded AUC, the AUC matrix."""
    sections = [{"id": "accuracy-matrix", "title": "Accuracy matrix (%)", "alt": "accuracy matrix",
                 "image": _data_uri(_matrix_figure(run.row_labels, run.task_names, run.values)),
                 "text": format_matrix(run.row_labels, run.task_names, run.values)}]
    if run.auc is not None:
        figure = _matrix_figure(run.row_labels, run.task_names, run.auc, label="macro one-vs-rest AUC (%)")
        sections.append({"id": "auc-matrix", "title": "AUC matrix (%, macro one-vs-rest)", "alt": "AUC matrix",
                         "image": _data_uri(figure), "text": format_matrix(run.row_labels, run.task_names, run.auc)})
    return sections


def _per_task_rows(run: _Run) -> tuple[list[str], list[list[str]]]:
    """Header and rows: metrics.json's per_task numbers, wall time per task, mean throughput."""
    wall = run.metrics.get("wall_time_s_per_task")
    speed = defaultdict(list)
    for event in run.events:
        rate = event.get("samples_per_s")
        if event.get("kind") == "step" and isinstance(rate, (int, float)) and math.isfinite(rate):
            speed[event.get("task")].append(event["samples_per_s"])
    majority = run.metrics.get("majority_class_rate") or {}
    header = ["task", *_PER_TASK_COLUMNS, *(["majority class"] if majority else []), "wall time (s)", "samples/s"]
    rows = []
    for i, entry in enumerate(run.metrics.get("per_task") or []):
        task = entry.get("task", "")
        if isinstance(wall, dict):
            seconds = wall.get(task)
        else:
            seconds = wall[i] if isinstance(wall, list) and i < len(wall) else None
        mean_speed = float(np.mean(speed[task])) if speed.get(task) else None
        rows.append([str(task), *(_fmt(entry.get(c)) for c in _PER_TASK_COLUMNS),
                     *([_fmt(majority.get(task))] if majority else []), _fmt(seconds, 1), _fmt(mean_speed, 1)])
    return header, rows


def _skipped_section(run: _Run) -> dict | None:
    """metrics.json's ``skipped_inputs`` (:mod:`medcl.data.skips`): ``counts`` ((task, count) pairs)
    and ``rows`` (task, file, reason) of the files each loader skipped; None when none was."""
    skipped = run.metrics.get("skipped_inputs") or {}
    rows = [[task, f["file"], f["reason"]] for task, record in skipped.items() for f in record.get("files", ())]
    rows += [[task, f"... and {record['files_not_listed']} more (not listed)", ""]
             for task, record in skipped.items() if record.get("files_not_listed")]
    if not rows:
        return None
    return {"counts": [(task, record["count"]) for task, record in skipped.items()], "rows": rows}


def _strategy_section(run: _Run) -> dict | None:
    """The strategy's effective parameters (every field, defaults resolved: metrics.json's
    ``strategy_params``), else the ones config.yaml sets (an older run recorded no defaults):
    ``name``, ``note`` (which of the two) and ``rows`` (parameter, value); None when neither exists."""
    params, note = run.metrics.get("strategy_params"), "every parameter, defaults included"
    if params is None and run.config_text:
        section = (yaml.safe_load(run.config_text) or {}).get("strategy")
        params = {k: v for k, v in section.items() if k != "name"} if isinstance(section, dict) else None
        note = "as set in config.yaml (this run did not record its defaults)"
    if params is None:
        return None
    rows = [[key, json.dumps(value) if isinstance(value, (dict, list)) or value is None else str(value)]
            for key, value in params.items()] or [["(none)", ""]]
    return {"name": run.describe("strategy") or "", "note": note, "rows": rows}


def _retrieval_section(run: _Run) -> dict | None:
    """PRIMED's retrieval, from the plan it wrote (``<plan dir>/plan.json``: per task the reference
    pairs, per level, and the seconds spent; the mean dense score of ``reference-<i>.parquet`` when
    readable: near 0 for every pair means the embedding model is untrained): ``mode``, ``plan_dir``
    and ``rows``; None for a run without a plan."""
    plan_dir = _plan_dir(run)
    if plan_dir is None:
        return None
    plan = json.loads((plan_dir / "plan.json").read_text())
    rows = []
    for i, entry in enumerate(plan.get("tasks") or []):
        levels = ", ".join(f"{k} {v}" for k, v in (entry.get("levels") or {}).items())
        rows.append([str(entry.get("task", i)), str(entry.get("rows", "")), levels,
                     _fmt(_mean_score(plan_dir / f"reference-{i}.parquet"), 4), _fmt(entry.get("retrieval_s"), 1)])
    return {"mode": str(plan.get("mode", "")), "plan_dir": str(plan_dir), "rows": rows}


def _plan_dir(run: _Run) -> Path | None:
    given = (run.metrics.get("strategy_params") or {}).get("plan_dir")
    for folder in ([Path(given)] if isinstance(given, str) and "://" not in given else []) + [run.path / "primed"]:
        if (folder / "plan.json").is_file():
            return folder
    return None


def _mean_score(path: Path) -> float | None:
    try:
        import pyarrow.parquet as pq

        scores = pq.read_table(path, columns=["dense_score"]).column("dense_score").to_numpy(zero_copy_only=False)
    except Exception:  # missing file or column: the table shows n/a
        return None
    scores = np.asarray(scores, dtype=float)
    return float(np.nanmean(scores)) if scores.size else None


def write_report(run_dir: Path) -> Path:
    """Write ``<run_dir>/report.html`` and return its path.

    Rendered from ``templates/report.html.j2`` (extends ``base.html.j2``; :mod:`medcl.templating`).
    Self-contained: images are base64 PNG data URIs, CSS is inline, every value is HTML-escaped by
    the template engine (run, task and strategy names, notes and config text are untrusted).
    Contents: run name, accuracy heat map and text matrix, the same for auc.csv (when present),
    metrics table, per-task table (when metrics.json has ``per_task``), skipped inputs, strategy
    parameters and PRIMED's retrieval (when recorded), accuracy-over-stages plot, loss curves per
    stage (when events.jsonl has step events), and config.yaml (when present). Without
    metrics.json the metrics are computed from a complete matrix (else shown as "n/a").

    Raises:
        FileNotFoundError: ``run_dir`` has no matrix.csv (not a finished run, or nothing evaluated).
    """
    run = _load_run(Path(run_dir))
    document = render("report.html.j2", **_report_context(run))
    target = RunDir(run.path).report
    target.write_text(document, encoding="utf-8")
    return target
