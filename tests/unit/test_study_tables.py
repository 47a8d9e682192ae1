"""A study's tables and board from a payload: the same numbers in Markdown, LaTeX, CSV and HTML."""
from __future__ import annotations

import csv
import io

from medcl.stats import Interval, format_interval
from medcl.study.board import write_board
from medcl.study.costs import aggregate_costs
from medcl.study.statistics import analyse
from medcl.study.tables import display_tables, latex, markdown, metric_rows, write_tables


def payload():
    runs = []
    for method, shift in (("finetune", 0.0), ("ewc", 3.0)):
        for seed in (0, 1, 2):
            for order in ("a>b", "b>a"):
                value = 40.0 + shift + seed + (order == "b>a")
                cost = {"wall_s": 10.0, "cpu_hours": 10 / 3600, "gpu_hours": 0.0, "peak_host_rss_bytes": 2 ** 30,
                        "peak_device_bytes": None, "trainable_parameters": 1000}
                runs.append({"method": method, "seed": seed, "order": order, "complete": True, "state": "COMPLETE",
                             "run_dir": f"runs/{method}/trials/t{seed}{order[0]}", "cost": cost,
                             "metrics": {"transfer": value, "avg": value + 1, "last": value + 2, "bwt": -value / 10}})
    labels = ["finetune", "ewc"]
    return {"study": "t", "baseline": "finetune", "seeds": [0, 1, 2], "orders": ["a>b", "b>a"], "wall_s": 5.0,
            "config": {"tuning": {"trials": 4, "objective": {"metric": "avg"}}},
            "methods": [{"label": "finetune", "tuned": False}, {"label": "ewc", "tuned": True}],
            "tuning": {"ewc": {"trials": 4, "chosen": {"strategy.lambda_": 0.5},
                               "cost": {"cpu_hours": 0.01, "gpu_hours": 0.0, "wall_s": 36.0}}},
            "runs": runs, "statistics": analyse(runs, labels, "finetune", 0.95),
            "costs": {l: aggregate_costs([r["cost"] for r in runs if r["method"] == l]) for l in labels}}


def test_every_format_holds_the_same_numbers(tmp_path):
    data = payload()
    tables = {t.name: t for t in display_tables(data)}
    interval = Interval(**data["statistics"]["methods"]["ewc"]["avg"]["interval"])
    text = format_interval(interval, digits=1)
    row = next(r for r in tables["accuracy"].rows if r[0] == "ewc")
    assert text in row and row[1] == "4 trials: lambda_=0.5"
    assert next(r for r in tables["accuracy"].rows if r[0] == "finetune")[1] == "fixed (not tuned)"
    assert text in markdown(tables["accuracy"]) and text in latex(tables["accuracy"])
    assert r"\toprule" in latex(tables["accuracy"]) and "fixed (not tuned)" in latex(tables["accuracy"])
    paired = next(r for r in tables["paired"].rows if r[0] == "ewc")
    assert all(cell.endswith("better") for cell in paired[1:4])  # ewc is 3 points above on every seed
    assert paired[4].endswith("worse")  # BWT = -value/10: lower for ewc on every seed
    header, rows = metric_rows(data)
    by_key = {(r[0], r[1]): dict(zip(header, r)) for r in rows}
    assert by_key[("ewc", "avg")]["mean"] == interval.mean and by_key[("ewc", "avg")]["verdict"] == "better"
    assert by_key[("finetune", "avg")]["order_spread"] == 1.0
    out = write_tables(data, tmp_path / "tables")
    parsed = list(csv.DictReader(io.StringIO((tmp_path / "tables" / "study.csv").read_text())))
    assert float(next(r for r in parsed if r["method"] == "ewc" and r["metric"] == "avg")["mean"]) == interval.mean
    data["outputs"] = out
    board = write_board(data, tmp_path).read_text()
    assert text in board and "fixed (not tuned)" in board and 'href="tables/accuracy.tex"' in board
    assert "<script" not in board  # a static page
