"""A study's tables, from ``study.json``'s payload: the same cells as Markdown, LaTeX and (numbers) CSV.

* ``accuracy``: per method, each metric's mean and 95 % t-interval over seeds, and how it was tuned;
* ``paired``: per method, ``method - baseline`` per seed: mean [interval] and better / worse / inconclusive;
* ``orders``: per method, each metric's spread over task orders (max - min of the per-order means);
* ``costs``: per method, runs, trainable parameters, wall-clock, CPU- and GPU-hours, peak memory, tuning cost;
* ``claims`` (when the study lists claims): each finding as a paired difference with interval, seeds and
  verdict holds / fails / inconclusive;
* ``ablations`` (when the study lists ablations): what each switches, and the paired difference
  (ablation - its method) on Transfer, Avg and Last.

``study.csv`` holds the numbers behind the first three (one row per method and metric);
``costs.csv`` those of the costs; ``claims.csv`` and ``ablations.csv`` those of the last two.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from medcl.stats import Interval, format_interval
from medcl.study.config import ABLATION_METRICS

METRIC_NAMES = {"transfer": "Transfer", "avg": "Avg", "last": "Last", "bwt": "BWT", "forgetting": "Forgetting",
                "auc_transfer": "AUC Transfer", "auc_avg": "AUC Avg", "auc_last": "AUC Last", "auc_bwt": "AUC BWT"}


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    header: list[str]
    rows: list[list[str]]


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def interval_text(stats: dict | None, signed: bool = False) -> str:
    if not stats:
        return "–"
    return format_interval(Interval(**stats), digits=1, signed=signed)


def tuning_text(payload: dict, label: str) -> str:
    tuning = payload["tuning"].get(label)
    if not tuning:
        return "fixed (not tuned)"
    chosen = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in tuning["chosen"].items())
    return f"{tuning['trials']} trials: {chosen}"


def display_tables(payload: dict) -> list[Table]:
    stats, metrics = payload["statistics"], payload["statistics"]["metrics"]
    labels = [m["label"] for m in payload["methods"]]
    names = [metric_name(m) for m in metrics]
    accuracy = [[label, tuning_text(payload, label)] + [interval_text((stats["methods"][label][m] or {}).get("interval"))
                                                        for m in metrics] for label in labels]
    paired = []
    for label in labels:
        row = [label]
        for m in metrics:
            diff = None if label == payload["baseline"] else stats["paired"][label][m]
            row.append("baseline" if label == payload["baseline"] else
                       f"{interval_text(diff['interval'], signed=True)} {diff['verdict_word']}" if diff else "–")
        paired.append(row)
    orders = [[label] + [_number((stats["methods"][label][m] or {}).get("order_spread")) for m in metrics] for label in labels]
    tables = [Table("accuracy", f"Mean [{_level(payload)} t-interval] over seeds", ["Method", "Tuning", *names], accuracy),
            Table("paired", f"Difference to {payload['baseline']} per seed: mean [{_level(payload)} interval], verdict",
                  ["Method", *names], paired),
            Table("orders", "Order sensitivity: max - min over task orders of the mean over seeds", ["Method", *names],
                  orders),
            Table("costs", "Costs (evaluation runs; tuning separately)", _COST_HEADER, [_cost_row(payload, l) for l in labels])]
    return tables + _finding_tables(payload)


def _finding_tables(payload: dict) -> list[Table]:
    """The ``claims`` and ``ablations`` tables, each only when the study lists some."""
    stats, level, out = payload["statistics"], _level(payload), []
    claims = [c for c in stats.get("claims", []) if c.get("verdict") is not None]
    if claims:
        rows = [[c["claim"], f"{c['left']} - {c['right']}", metric_name(c["metric"]),
                 interval_text(c["interval"], signed=True), str(len(c["seeds"])), c["verdict"]] for c in claims]
        out.append(Table("claims", f"Findings: paired difference per seed, mean [{level} interval]; holds or fails "
                                   "only when the interval excludes 0", ["Finding", "Difference", "Metric",
                                                                        "Mean [interval]", "Seeds", "Verdict"], rows))
    rows = []
    for a in stats.get("ablations", []):
        if any(a["metrics"].values()):
            changed = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in payload.get("changed", {}).get(a["label"], {}).items())
            rows.append([f"{a['label']} vs {a['of']}", changed or "–"]
                        + [interval_text((a["metrics"][m] or {}).get("interval"), signed=True) for m in ABLATION_METRICS])
    if rows:
        out.append(Table("ablations", f"Ablations: paired difference (ablation - its method), mean [{level} interval]",
                         ["Ablation", "Changed", *(metric_name(m) for m in ABLATION_METRICS)], rows))
    return out


_COST_HEADER = ["Method", "Runs", "Trainable params", "Wall s / run", "CPU-h", "GPU-h", "Peak RSS MiB / worker",
                "Peak device MiB", "Tuning trials", "Tuning CPU-h", "Tuning GPU-h"]


def _cost_row(payload: dict, label: str) -> list[str]:
    cost, tuning = payload["costs"][label], payload["tuning"].get(label)
    tcost = tuning["cost"] if tuning else None
    params = cost.get("trainable_parameters")
    return [label, str(cost["runs"]), f"{params:,}" if params is not None else "–", _number(cost.get("mean_wall_s")),
            _number(cost["cpu_hours"], 4), _number(cost["gpu_hours"], 4), _mib(cost.get("peak_host_rss_bytes")),
            _mib(cost.get("peak_device_bytes")), str(tuning["trials"]) if tuning else "0",
            _number(tcost["cpu_hours"], 4) if tcost else "0", _number(tcost["gpu_hours"], 4) if tcost else "0"]


def write_tables(payload: dict, folder: Path) -> dict:
    """``<folder>/<table>.md``, ``.tex`` for each display table, plus ``study.csv`` and ``costs.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for table in display_tables(payload):
        (folder / f"{table.name}.md").write_text(markdown(table))
        (folder / f"{table.name}.tex").write_text(latex(table))
        out[f"table_{table.name}"] = f"tables/{table.name}.md"
    (folder / "study.csv").write_text(_csv(*metric_rows(payload)))
    (folder / "costs.csv").write_text(_csv(*cost_rows(payload)))
    out.update(csv_study="tables/study.csv", csv_costs="tables/costs.csv")
    for name, rows in (("claims", claim_rows(payload)), ("ablations", ablation_rows(payload))):
        if rows[1]:
            (folder / f"{name}.csv").write_text(_csv(*rows))
            out[f"csv_{name}"] = f"tables/{name}.csv"
    return out


def claim_rows(payload: dict) -> tuple[list[str], list[list]]:
    header = ["claim", "left", "right", "metric", "direction", "n_seeds", "diff_mean", "diff_low", "diff_high", "verdict"]
    rows = [[c["claim"], c["left"], c["right"], c["metric"], c["direction"], c["interval"]["n"], c["interval"]["mean"],
             c["interval"]["low"], c["interval"]["high"], c["verdict"]]
            for c in payload["statistics"].get("claims", []) if c.get("verdict") is not None]
    return header, rows


def ablation_rows(payload: dict) -> tuple[list[str], list[list]]:
    header = ["ablation", "of", "metric", "n_seeds", "diff_mean", "diff_low", "diff_high"]
    rows = [[a["label"], a["of"], metric, d["interval"]["n"], d["interval"]["mean"], d["interval"]["low"],
             d["interval"]["high"]]
            for a in payload["statistics"].get("ablations", []) for metric, d in a["metrics"].items() if d]
    return header, rows


def markdown(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def latex(table: Table) -> str:
    spec = "l" + "r" * (len(table.header) - 1)
    body = [" & ".join(_tex(c) for c in row) + r" \\" for row in table.rows]
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(table.title)}}}",
                      rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_tex(h) for h in table.header) + r" \\",
                      r"\midrule", *body, r"\bottomrule", r"\end{tabular}", rf"\label{{tab:{table.name}}}",
                      r"\end{table}"]) + "\n"


def metric_rows(payload: dict) -> tuple[list[str], list[list]]:
    stats = payload["statistics"]
    header = ["method", "metric", "n_seeds", "mean", "sd", "low", "high", "diff_mean", "diff_low", "diff_high",
              "verdict", "order_spread", "order_sd"]
    rows = []
    for m in payload["methods"]:
        for metric in stats["metrics"]:
            s = stats["methods"][m["label"]][metric]
            if not s:
                continue
            i = s["interval"]
            d = (stats["paired"].get(m["label"]) or {}).get(metric)
            di = d["interval"] if d else {}
            rows.append([m["label"], metric, i["n"], i["mean"], i["sd"], i["low"], i["high"], di.get("mean"),
                         di.get("low"), di.get("high"), d["verdict_word"] if d else "", s["order_spread"], s["order_sd"]])
    return header, rows


def cost_rows(payload: dict) -> tuple[list[str], list[list]]:
    header = ["method", "runs", "trainable_parameters", "wall_s", "mean_wall_s", "cpu_hours", "gpu_hours",
              "peak_host_rss_bytes", "peak_device_bytes", "tuning_trials", "tuning_wall_s", "tuning_cpu_hours",
              "tuning_gpu_hours"]
    rows = []
    for m in payload["methods"]:
        c, t = payload["costs"][m["label"]], payload["tuning"].get(m["label"])
        tc = t["cost"] if t else {}
        rows.append([m["label"], c["runs"], c["trainable_parameters"], c["wall_s"], c["mean_wall_s"], c["cpu_hours"],
                     c["gpu_hours"], c["peak_host_rss_bytes"], c["peak_device_bytes"], t["trials"] if t else 0,
                     tc.get("wall_s", 0.0), tc.get("cpu_hours", 0.0), tc.get("gpu_hours", 0.0)])
    return header, rows


def _csv(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue()


def _level(payload: dict) -> str:
    return f"{100 * payload['statistics']['level']:g} %"


def _number(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mib(value) -> str:
    return "–" if value is None else f"{value / 2 ** 20:.0f}"


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$"),
                 ("–", "--"), (">", r"$>$")):
        text = text.replace(a, b)
    return text
