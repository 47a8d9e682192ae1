"""medcl.report on fake run directories built with medcl.rundir."""
from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from medcl import rundir
from medcl.metrics import per_task, summarize
from medcl.compare import compare_runs, plot_task_curves
from medcl.report import format_matrix, format_metrics, plot_matrix, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ["xray", "path", "fundus"]
LABELS = [rundir.ZERO_SHOT_ROW, *TASKS]
ZERO_SHOT = [40.0, 35.0, 15.0]
TRAINED = [[80.0, 30.0, 20.0], [85.0, 90.0, 25.0], [70.0, 50.0, 85.0]]
# summarize(TRAINED, ZERO_SHOT) by hand (see test_metrics.py): transfer 26.25, avg 535/9 = 59.44,
# last 205/3 = 68.33, bwt -25, forgetting 27.5, fwt 2.5
FORMATTED = ["26.25", "59.44", "68.33", "-25.00", "27.50", "2.50"]


def make_run(root: Path, name: str, *, strategy: str = "ewc", metrics: bool = True, events: bool = True,
             config: dict | None = None, values=None) -> Path:
    run = rundir.RunDir(root / name)
    run.path.mkdir(parents=True)
    values = np.array([ZERO_SHOT, *TRAINED]) if values is None else np.asarray(values, dtype=float)
    rundir.write_matrix_csv(run.matrix, LABELS, TASKS, values)
    if metrics:
        payload = {**summarize(TRAINED, ZERO_SHOT), "per_task": per_task(TRAINED, ZERO_SHOT, TASKS),
                   "wall_time_s_per_task": [12.5, 20.4, 7.0], "trainable_parameters": 1234,
                   "strategy": strategy, "model": "medcl-tiny", "benchmark": "synthetic"}
        rundir.write_json(run.metrics, payload)
    if events:
        for step, loss in [(10, 1.5), (20, 1.1)]:
            rundir.append_event(run.events, {"kind": "step", "stage": 1, "task": "xray", "step": step,
                                             "loss": loss, "samples_per_s": 300.0})
        rundir.append_event(run.events, {"kind": "step", "task": "path", "step": 10, "loss": 0.9, "ce": 0.8,
                                         "samples_per_s": math.nan})
        rundir.append_event(run.events, {"kind": "task_end", "stage": 1, "task": "xray"})
    if config is not None:
        run.config.write_text(yaml.safe_dump(config))
    return run.path


def embedded_pngs(document: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', document)]


def test_write_report_full_run(tmp_path):
    run = make_run(tmp_path, "ewc-run", config={"name": "ewc-run", "note": "<script>alert(1)</script>"})
    path = write_report(run)
    assert path == run / "report.html"
    document = path.read_text()
    assert "<title>medcl report: ewc-run</title>" in document
    for text in [*FORMATTED, *TASKS, "before training", "after fundus", "strategy: ewc", "medcl-tiny"]:
        assert text in document, text
    assert '<img alt="accuracy matrix" src="data:image/png;base64,' in document
    images = embedded_pngs(document)
    assert len(images) == 3  # heat map, accuracy over stages, loss curves
    assert all(image.startswith(PNG_MAGIC) for image in images)
    assert "Training loss" in document
    assert "<td>20.4</td>" in document  # wall time of path, 1 decimal
    assert "<td>300.0</td>" in document  # mean samples/s of xray
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert "<script>" not in document
    assert "src=\"http" not in document and "href=" not in document  # no external assets


def test_write_report_only_matrix_computes_metrics(tmp_path):
    run = make_run(tmp_path, "bare", metrics=False, events=False)
    document = write_report(run).read_text()
    for text in FORMATTED:
        assert text in document, text
    assert "Training loss" not in document
    assert "Resolved config" not in document
    assert len(embedded_pngs(document)) == 2


def test_write_report_partial_matrix_shows_na(tmp_path):
    values = np.array([ZERO_SHOT, TRAINED[0], [math.nan] * 3, [math.nan] * 3])
    document = write_report(make_run(tmp_path, "partial", metrics=False, values=values)).read_text()
    assert "<td>n/a</td>" in document
    assert "26.25" not in document
    assert all(image.startswith(PNG_MAGIC) for image in embedded_pngs(document))


def test_write_report_missing_matrix(tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a finished medcl run") as info:
        write_report(empty)
    assert str(empty) in str(info.value)
    assert not (empty / "report.html").exists()


def test_format_matrix_numbers_and_nan():
    values = np.array([ZERO_SHOT, TRAINED[0], [85.0, math.nan, 25.0], TRAINED[2]])
    lines = format_matrix(LABELS, TASKS, values).splitlines()
    assert lines[0].split() == TASKS
    assert lines[2].startswith("before training")
    assert lines[2].split()[-3:] == ["40.0", "35.0", "15.0"]
    assert lines[4].split() == ["after", "path", "85.0", "-", "25.0"]
    assert len({len(line) for line in lines[2:]}) == 1  # fixed width: numbers right-aligned


def test_format_metrics_values_na_and_legend():
    text = format_metrics({**summarize(TRAINED), "bwt": None})
    lines = text.splitlines()
    assert lines[2].split() == ["transfer", "26.25"]
    assert lines[5].split() == ["bwt", "n/a"]
    assert lines[7].split() == ["fwt", "n/a"]
    assert lines[-1].startswith("transfer: ") and "forgetting: " in lines[-1]


def test_compare_runs_lists_both(tmp_path):
    first = make_run(tmp_path, "run-a", strategy="ewc")
    second = make_run(tmp_path, "run-b", metrics=False, config={"strategy": {"name": "lwf"}, "model": "medcl-small"})
    text, rows = compare_runs([first, second])
    assert [r["name"] for r in rows] == ["run-a", "run-b"]
    assert [r["strategy"] for r in rows] == ["ewc", "lwf"]
    assert rows[1]["model"] == "medcl-small"
    assert rows[0]["transfer"] == pytest.approx(26.25) and rows[1]["bwt"] == pytest.approx(-25.0)
    table = text.splitlines()
    assert table[0].split() == ["run", "strategy", "model", "transfer", "avg", "last", "bwt", "forgetting", "fwt"]
    assert table[2].split() == ["run-a", "ewc", "medcl-tiny", *FORMATTED]
    assert table[3].split()[:3] == ["run-b", "lwf", "medcl-small"]
    with pytest.raises(FileNotFoundError, match="missing"):
        compare_runs([first, tmp_path / "missing"])


def test_plots_write_png(tmp_path):
    runs = [make_run(tmp_path, "a"), make_run(tmp_path, "b")]
    heat = plot_matrix(LABELS, TASKS, np.array([ZERO_SHOT, *TRAINED]), tmp_path / "heat.png")
    curves = plot_task_curves(runs, tmp_path / "curves.png")
    assert heat.read_bytes().startswith(PNG_MAGIC)
    assert curves.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="at least one"):
        plot_task_curves([], tmp_path / "none.png")
