"""medcl.report on fake run directories built with medcl.rundir; report.html and the study board
rendered from the shared Jinja2 templates (medcl.templating)."""
from __future__ import annotations

import base64
import importlib.util
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from medcl import rundir
from medcl.metrics import per_task, summarize
from medcl.compare import compare_runs, plot_task_curves
from medcl.metrics import METRIC_KEYS
from medcl.report import format_matrix, format_metrics, plot_matrix, write_report
from medcl.study.board import write_board

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ["xray", "path", "fundus"]
LABELS = [rundir.ZERO_SHOT_ROW, *TASKS]
ZERO_SHOT = [40.0, 35.0, 15.0]
TRAINED = [[80.0, 30.0, 20.0], [85.0, 90.0, 25.0], [70.0, 50.0, 85.0]]
# summarize(TRAINED, ZERO_SHOT) by hand (see test_metrics.py): transfer 26.25, avg 535/9 = 59.44,
# last 205/3 = 68.33, bwt -25, forgetting 27.5, fwt 2.5
FORMATTED = ["26.25", "59.44", "68.33", "-25.00", "27.50", "2.50"]


def make_run(root: Path, name: str, *, strategy: str = "ewc", metrics: bool = True, events: bool = True,
             config: dict | None = None, values=None, tasks: list[str] = TASKS, extra: dict | None = None) -> Path:
    run = rundir.RunDir(root / name)
    run.path.mkdir(parents=True)
    values = np.array([ZERO_SHOT, *TRAINED]) if values is None else np.asarray(values, dtype=float)
    rundir.write_matrix_csv(run.matrix, [rundir.ZERO_SHOT_ROW, *tasks], tasks, values)
    if metrics:
        payload = {**summarize(TRAINED, ZERO_SHOT), "per_task": per_task(TRAINED, ZERO_SHOT, tasks),
                   "wall_time_s_per_task": [12.5, 20.4, 7.0], "trainable_parameters": 1234,
                   "strategy": strategy, "model": "medcl-tiny", "benchmark": "synthetic", **(extra or {})}
        rundir.write_json(run.metrics, payload)
    if events:
        for step, loss in [(10, 1.5), (20, 1.1)]:
            rundir.append_event(run.events, {"kind": "step", "stage": 1, "task": tasks[0], "step": step,
                                             "loss": loss, "samples_per_s": 300.0})
        rundir.append_event(run.events, {"kind": "step", "task": tasks[1], "step": 10, "loss": 0.9, "ce": 0.8,
                                         "samples_per_s": math.nan})
        rundir.append_event(run.events, {"kind": "task_end", "stage": 1, "task": "xray"})
    if config is not None:
        run.config.write_text(yaml.safe_dump(config))
    return run.path


def embedded_pngs(document: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', document)]


VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """A parsed page: nesting errors (an end tag that does not close the innermost open element),
    the elements left open, the text of title/h1/h2, every img's attributes, every table's cells
    (by its data-table name, header row first) and the text of the <style> element."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open, self.errors, self.images, self.tables, self.texts = [], [], [], {}, {}
        self._table = self._row = self._cell = self._text = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in VOID_ELEMENTS:
            self.open.append(tag)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("data-table"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in ("title", "h1", "h2", "style"):
            self._text = []

    def handle_endtag(self, tag):
        if self.open and self.open[-1] == tag:
            self.open.pop()
        else:
            self.errors.append(f"</{tag}> while {self.open[-3:]} are open")
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = self._row = None
        elif tag in ("title", "h1", "h2", "style") and self._text is not None:
            self.texts.setdefault(tag, []).append("".join(self._text))
            self._text = None

    def handle_data(self, data):
        for sink in (self._cell, self._text):
            if sink is not None:
                sink.append(data)


def parse_page(document: str) -> Page:
    """The page parsed, after checking it is a well-formed HTML5 document (every element closed in order)."""
    page = Page()
    page.feed(document)
    page.close()
    assert document.startswith("<!DOCTYPE html>\n<html lang=\"en\">")
    assert not page.errors and not page.open, (page.errors, page.open)
    return page


def table_rows(page: Page, name: str) -> dict[str, dict[str, str]]:
    """A table as {first cell: {column header: cell text}}."""
    header, *rows = page.tables[name]
    return {row[0]: dict(zip(header, row)) for row in rows}


def test_the_well_formedness_check_catches_a_broken_page():
    page = Page()
    page.feed("<!DOCTYPE html>\n<html lang=\"en\"><body><table><tr><td>1</tr></table></body></html>")
    assert page.errors and page.errors[0].startswith("</tr> while")


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



def test_report_numbers_sit_in_their_table_cells(tmp_path):
    run = make_run(tmp_path, "cells", config={"strategy": {"name": "ewc", "lambda_": 0.5}})
    page = parse_page(write_report(run).read_text())
    metrics = table_rows(page, "metrics")
    assert [metrics[key]["value"] for key in METRIC_KEYS] == FORMATTED
    assert metrics["bwt"]["meaning"].startswith("final minus just-trained")
    recorded = json.loads((run / "metrics.json").read_text())["per_task"]
    rows = table_rows(page, "per_task")
    assert list(rows) == TASKS
    for entry in recorded:  # per_task() of metrics.json, 2 decimals, None as n/a
        for column in ("zero_shot", "just_trained", "best", "final", "forgetting"):
            value = entry[column]
            assert rows[entry["task"]][column] == ("n/a" if value is None else f"{value:.2f}"), (entry, column)
    assert rows["fundus"]["final"] == "85.00" and rows["fundus"]["forgetting"] == "n/a"
    assert [rows[t]["wall time (s)"] for t in TASKS] == ["12.5", "20.4", "7.0"]
    assert [rows[t]["samples/s"] for t in TASKS] == ["300.0", "n/a", "n/a"]  # path's only rate was NaN
    assert table_rows(page, "strategy_params") == {"lambda_": {"parameter": "lambda_", "value": "0.5"}}
    assert page.texts["h2"] == ["Accuracy matrix (%)", "Metrics (%)", "Per task (%)", "Strategy parameters: ewc",
                                "Accuracy over training", "Training loss", "Resolved config"]
    assert [image["alt"] for image in page.images] == ["accuracy matrix", "per-task accuracy", "training loss"]


HOSTILE = '<script>alert("x")</script>'


def test_report_escapes_run_task_strategy_and_config_values(tmp_path):
    tasks = ["xray", HOSTILE, "fundus"]
    folder = "<b>run&co"
    extra = {"note": "<i>note</i>", "strategy_params": {"lr": "<svg onload=alert(1)>"},
             "skipped_inputs": {HOSTILE: {"count": 1, "files": [{"file": "<img src=x>.png", "reason": "bad & worse"}]}}}
    run = make_run(tmp_path, folder, strategy='"><img src=x onerror=alert(2)>', tasks=tasks, extra=extra,
                   config={"train": {"comment": "</pre><script>alert(3)</script>"}})
    document = write_report(run).read_text()
    page = parse_page(document)  # an unescaped </pre> or <b> would unbalance the tags
    for raw in ("<script", "<svg", "<img src=x", "<b>", "<i>"):
        assert raw not in document, raw
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in document
    assert page.texts["title"] == [f"medcl report: {folder}"] and page.texts["h1"] == [f"medcl run: {folder}"]
    assert HOSTILE in table_rows(page, "per_task")  # the text comes back intact, only escaped
    assert table_rows(page, "strategy_params")["lr"]["value"] == "<svg onload=alert(1)>"
    assert table_rows(page, "skipped_inputs")[HOSTILE] == {"task": HOSTILE, "file": "<img src=x>.png",
                                                            "reason": "bad & worse"}
    assert len(page.images) == 3 and all(i["src"].startswith("data:image/png;base64,") for i in page.images)


def _study_tables_payload() -> dict:
    """The study payload the board's own tests use (tests/unit/test_study_tables.py)."""
    source = Path(__file__).with_name("test_study_tables.py")
    spec = importlib.util.spec_from_file_location("study_tables_cases", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.payload()


def test_the_board_and_the_report_share_the_base_layout_and_escape(tmp_path):
    data = {**_study_tables_payload(), "study": HOSTILE}
    board = write_board(data, tmp_path).read_text()
    report = write_report(make_run(tmp_path, "r")).read_text()
    board_page, report_page = parse_page(board), parse_page(report)
    assert "<script" not in board and board_page.texts["h1"] == [f"Study {HOSTILE}"]
    assert board_page.texts["title"] == [f"Study {HOSTILE} · medcl"]
    (board_css,), (report_css,) = board_page.texts["style"], report_page.texts["style"]
    assert "img { max-width: 100%; height: auto; }" in report_css
    assert board_css.startswith(report_css.rstrip()) and "tr.baseline td" in board_css  # base CSS + the board's own
    for document in (board, report):  # the same frame: header with the title, then main
        assert re.search(r"<body>\n<header>\n  <h1>.*</h1>\n.*</header>\n<main>\n", document, flags=re.S)
    assert table_rows(board_page, "accuracy")["finetune"]["Tuning"] == "fixed (not tuned)"


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
