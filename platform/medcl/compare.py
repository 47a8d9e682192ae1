"""Several runs side by side (``medcl compare``): one metrics table, warnings when the runs are not
comparable, wall time against a matching fine-tuning run, and per-task accuracy curves.

Reads each run directory as :mod:`medcl.report` does (``matrix.csv``, ``metrics.json``,
``config.yaml``); plots use matplotlib's object API (no global state).
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from medcl.metrics import AUC_METRIC_KEYS, METRIC_KEYS
from medcl.report import _fmt, _load_run, _save_png, _task_curves_figure, _text_table


def plot_task_curves(run_dirs: list[Path], path: Path) -> Path:
    """Write per-task accuracy over training stages as a PNG: one subplot per run, one line per
    task (x = stage, "before" = zero-shot row). Returns ``path``.

    Raises:
        ValueError: no run directories; FileNotFoundError: a directory has no matrix.csv.
    """
    if not run_dirs:
        raise ValueError("plot_task_curves needs at least one run directory")
    _save_png(_task_curves_figure([_load_run(d) for d in run_dirs]), path)
    return Path(path)


def compare_runs(run_dirs: list[Path]) -> tuple[str, list[dict]]:
    """One row per run: name, strategy, model and the summarize() metrics.

    Returns ``(text_table, rows)``; each row is ``{"name", "strategy", "model", "benchmark",
    "transfer", "avg", "last", "bwt", "forgetting", "fwt", "auc_<each>"}`` (missing values None; "n/a" in
    text; the AUC columns only when some run recorded AUC).

    Raises:
        FileNotFoundError: a directory has no matrix.csv.
    """
    rows = []
    for run in (_load_run(Path(d)) for d in run_dirs):
        row = {"name": run.name, **{k: run.describe(k) for k in ("strategy", "model", "benchmark")}}
        row.update({k: run.metrics.get(k) for k in METRIC_KEYS + AUC_METRIC_KEYS})
        rows.append(row)
    keys = _shown_keys(rows)
    header = ["run", "strategy", "model", *keys]
    cells = [[r["name"], r["strategy"] or "n/a", r["model"] or "n/a", *(_fmt(r[k]) for k in keys)] for r in rows]
    return _text_table(header, cells, left=3), rows


_COMPARED = {"benchmark": "benchmark", "tasks": "tasks", "steps": "steps per task", "seed": "seed"}


def _run_facts(run_dir: Path) -> dict:
    """What must agree for two runs' numbers to be compared: benchmark, task order, steps (or epochs)
    per task (config.yaml's ``train``, else metrics.json's per stage), seed (config.yaml); None where
    not recorded."""
    run = _load_run(Path(run_dir))
    config = yaml.safe_load(run.config_text) if run.config_text else {}
    config = config if isinstance(config, dict) else {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    steps = train.get("steps_per_task") or train.get("epochs_per_task") or run.metrics.get("steps_per_task")
    return {"name": run.name, "strategy": run.describe("strategy"), "benchmark": run.describe("benchmark"),
            "tasks": ", ".join(run.task_names), "steps": json.dumps(steps), "seed": config.get("seed")}


def comparison_warnings(run_dirs: list[Path]) -> list[str]:
    """One line per field (benchmark, tasks, steps per task, seed) whose recorded value differs
    between the runs, naming each run's value; [] when they agree (unrecorded values are skipped)."""
    facts = [_run_facts(d) for d in run_dirs]
    warnings = []
    for key, label in _COMPARED.items():
        if len({f[key] for f in facts if f[key] is not None}) > 1:
            values = "; ".join(f"{f['name']}: {f[key]}" for f in facts)
            warnings.append(f"these runs differ in {label} ({values}): their numbers are not comparable")
    return warnings


def comparison_markdown(run_dirs: list[Path], rows: list[dict]) -> str:
    """Markdown table of ``compare_runs`` rows plus training wall time (train + evaluation, summed
    over stages) and its ratio to a ``finetune`` run of the same benchmark, tasks, steps and seed
    (n/a when there is none; a note names the run used); the warnings of
    :func:`comparison_warnings`, notes and strategy metrics below."""
    metrics = [json.loads((Path(d) / "metrics.json").read_text()) if (Path(d) / "metrics.json").exists() else {}
               for d in run_dirs]
    facts = [_run_facts(d) for d in run_dirs]
    wall = [sum(m.get("wall_time_s_per_task") or []) or None for m in metrics]
    keys = _shown_keys(rows)
    header = ["run", "strategy", *keys, "wall (s)", "wall / finetune"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    baselines = []
    for row, seconds, fact in zip(rows, wall, facts):
        base = next((i for i, (w, f) in enumerate(zip(wall, facts)) if w and f["strategy"] == "finetune"
                     and all(f[k] == fact[k] for k in _COMPARED)), None)
        ratio = seconds / wall[base] if seconds and base is not None else None
        baselines.append(f"- {row['name']}: " + (f"wall / finetune is against {facts[base]['name']}" if base is not None
                                                 else "wall / finetune n/a: no finetune run of the same benchmark, "
                                                      "tasks, steps and seed"))
        cells = [row["name"], row["strategy"] or "n/a", *(_num(row.get(k)) for k in keys), _num(seconds, 1), _num(ratio)]
        lines.append("| " + " | ".join(cells) + " |")
    warnings = [f"- **warning:** {w}" for w in comparison_warnings(run_dirs)]
    notes = [f"- {row['name']}: {m['note']}" for row, m in zip(rows, metrics) if m.get("note")]
    extras = [f"- {row['name']}: " + ", ".join(f"{k} {v}" for k, v in m["strategy_metrics_per_task"][-1].items())
              for row, m in zip(rows, metrics) if (m.get("strategy_metrics_per_task") or [{}])[-1]]
    sections = [warnings, baselines, notes, extras]
    return "\n".join(lines + [line for section in sections if section for line in [""] + section])


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _shown_keys(rows: list[dict]) -> tuple[str, ...]:
    """The accuracy metrics, plus the AUC ones when any run has an AUC value."""
    has_auc = any(r.get(k) is not None for r in rows for k in AUC_METRIC_KEYS)
    return METRIC_KEYS + (AUC_METRIC_KEYS if has_auc else ())
