"""The run directory: where one sequence run keeps everything a user inspects, compares, resumes.

Layout (``runs/<name>/``)::

    config.yaml            resolved experiment, package versions, git revision
    matrix.csv             accuracy (percent); first row "zero_shot" (before training), then one
                           row per training stage, named after the task it trained; columns: tasks
    auc.csv                the same layout: macro one-vs-rest AUC (percent) of every task (medcl.auc)
    metrics.json           summarize() keys (and auc_<key> on the AUC matrix), per-task numbers, wall time per task, parameter counts
    events.jsonl           one JSON object per line: step logs and task ends (in an object store:
                           events.jsonl.d/, one object per write; read_events reads both)
    checkpoints/task-<t>/  model.safetensors + strategy.pt + state.json + manifest.json
    report.html            heat map and tables (``medcl report RUN_DIR`` rebuilds it)
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcl import appends, storage

ZERO_SHOT_ROW = "zero_shot"


@dataclass(frozen=True)
class RunDir:
    """``path``: a local :class:`~pathlib.Path` or a :class:`medcl.storage.Location` (``s3://...``);
    every helper below reads and writes through :mod:`medcl.storage`."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def matrix(self) -> Path:
        return self.path / "matrix.csv"

    @property
    def auc(self) -> Path:
        return self.path / "auc.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    def checkpoint(self, stage: int) -> Path:
        return self.checkpoints / f"task-{stage}"


def write_matrix_csv(path: Path, row_labels: list[str], task_names: list[str], values: np.ndarray) -> None:
    """Write ``values[r, j]`` (percent; NaN = not evaluated) with row labels and task columns."""
    values = np.asarray(values, dtype=float)
    if values.shape != (len(row_labels), len(task_names)):
        raise ValueError(f"matrix shape {values.shape} != ({len(row_labels)}, {len(task_names)})")
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(["after", *task_names])
    for label, row in zip(row_labels, values):
        writer.writerow([label, *("" if math.isnan(v) else f"{v:.4f}" for v in row)])
    storage.write_text(path, handle.getvalue())


def read_matrix_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Inverse of :func:`write_matrix_csv`: ``(row_labels, task_names, values)``."""
    rows = list(csv.reader(io.StringIO(storage.read_text(path), newline="")))
    if not rows or rows[0][:1] != ["after"]:
        raise ValueError(f"{path}: not a medcl matrix.csv (first cell must be 'after')")
    task_names = rows[0][1:]
    labels = [r[0] for r in rows[1:]]
    values = np.array([[float(v) if v else math.nan for v in r[1:]] for r in rows[1:]], dtype=float)
    return labels, task_names, values.reshape(len(labels), len(task_names))


_unwritten_events: dict[str, str] = {}  # path -> event lines whose write failed, written with the next event


def append_event(path: Path, event: dict) -> None:
    """Append ``event`` as one JSON line (:func:`medcl.appends.append_text`: on an object store one
    new part per call, retried with backoff). Never fatal: when the write still fails the line is
    kept in memory, a warning names the path and the error, and the next event's write carries it."""
    key = str(path)
    text = _unwritten_events.pop(key, "") + json.dumps(event, default=_json_default) + "\n"
    try:
        appends.append_text(path, text)
    except OSError as exc:
        _unwritten_events[key] = text
        print(f"medcl: warning: could not write {text.count(chr(10))} event(s) to {path} ({exc}); "
              "keeping them for the next event's write", file=sys.stderr, flush=True)


def read_events(path: Path) -> list[dict]:
    """The events of ``events.jsonl`` in writing order (the parts of an object-store file too)."""
    return [json.loads(line) for line in appends.read_appended(path).splitlines() if line.strip()]


def write_json(path: Path, payload: dict) -> None:
    storage.write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
