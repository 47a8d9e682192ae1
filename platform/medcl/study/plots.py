"""A study's plots (matplotlib's object API, as :mod:`medcl.report`: no pyplot, no display):

    plots/intervals.png   each metric's mean and 95 % t-interval per method
    plots/matrices.png    each method's accuracy matrix (mean over seeds; first order)
    plots/curves.png      per method, each task's accuracy after every stage (mean over seeds; first order)
    plots/orders.png      per method, Avg of each task order (mean over seeds) and the spread
    plots/cost.png        mean CPU-hours per run against Avg, per method
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from medcl.rundir import read_matrix_csv
from medcl.study.tables import metric_name


def write_plots(payload: dict, root: Path, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, draw in (("intervals", _intervals), ("matrices", _matrices), ("curves", _curves), ("orders", _orders),
                       ("cost", _cost)):
        figure = draw(payload, root)
        if figure is None:
            continue
        FigureCanvasAgg(figure)
        figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
        out[f"plot_{name}"] = f"plots/{name}.png"
    return out


def _labels(payload: dict) -> list[str]:
    return [m["label"] for m in payload["methods"]]


def _intervals(payload: dict, root: Path):
    stats, metrics, labels = payload["statistics"], payload["statistics"]["metrics"], _labels(payload)
    columns = min(len(metrics), 4)
    grid_rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(3.3 * columns, (0.4 * len(labels) + 1.4) * grid_rows))
    for k, metric in enumerate(metrics):
        ax = figure.add_subplot(grid_rows, columns, k + 1)
        for y, label in enumerate(labels):
            s = stats["methods"][label][metric]
            if not s:
                continue
            i = s["interval"]
            err = None if i["low"] is None else [[i["mean"] - i["low"]], [i["high"] - i["mean"]]]
            ax.errorbar([i["mean"]], [y], xerr=err, fmt="o", capsize=3,
                        color="black" if label == payload["baseline"] else f"C{y % 10}")
        ax.set_yticks(range(len(labels)), labels if k % columns == 0 else [""] * len(labels))
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.invert_yaxis()
        ax.set_title(metric_name(metric))
        ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def _first_order_matrices(payload: dict, root: Path, label: str):
    """``(row labels, task names, mean matrix)`` over the complete runs of ``label`` in the first order."""
    first = payload["orders"][0]
    runs = [r for r in payload["runs"] if r["method"] == label and r["order"] == first and r["complete"]]
    mats = []
    for r in runs:
        rows, tasks, values = read_matrix_csv(root / r["run_dir"] / "matrix.csv")
        mats.append(values)
    if not mats:
        return None
    return rows, tasks, np.mean(mats, axis=0)


def _method_panels(payload: dict, root: Path, height: float):
    """A figure with one panel per method and, per panel, ``(k, ax, rows, tasks, values)`` of the
    method's first-order mean matrix (methods without one get an empty, titled panel)."""
    labels = _labels(payload)
    figure = Figure(figsize=(3.4 * len(labels), height))
    panels = []
    for k, label in enumerate(labels):
        ax = figure.add_subplot(1, len(labels), k + 1)
        ax.set_title(label)
        found = _first_order_matrices(payload, root, label)
        if found is not None:
            panels.append((k, ax, *found))
    return figure, panels


def _matrices(payload: dict, root: Path):
    figure, panels = _method_panels(payload, root, 3.2)
    for k, ax, rows, tasks, values in panels:
        ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), rows if k == 0 else [""] * len(rows))
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="white" if v < 60 else "black", fontsize=8)
    figure.suptitle(f"accuracy (%), mean over seeds; order {payload['orders'][0]}")
    figure.tight_layout()
    return figure


def _curves(payload: dict, root: Path):
    figure, panels = _method_panels(payload, root, 3.0)
    for k, ax, rows, tasks, values in panels:
        for j, task in enumerate(tasks):
            ax.plot(range(len(rows)), values[:, j], marker="o", label=task)
        ax.set_xticks(range(len(rows)), rows, rotation=30, ha="right")
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)" if k == 0 else "")
        ax.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def _orders(payload: dict, root: Path):
    labels, orders = _labels(payload), payload["orders"]
    figure = Figure(figsize=(max(4.0, 1.2 * len(labels) + 2), 3.2))
    ax = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(len(orders), 1)
    for o, order in enumerate(orders):
        values = [((payload["statistics"]["methods"][l]["avg"] or {}).get("per_order") or {}).get(order, np.nan)
                  for l in labels]
        ax.bar(np.arange(len(labels)) + (o - (len(orders) - 1) / 2) * width, values, width, label=order)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("Avg (%), mean over seeds")
    ax.legend(fontsize=7, title="task order")
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def _cost(payload: dict, root: Path):
    figure = Figure(figsize=(4.6, 3.4))
    ax = figure.add_subplot(1, 1, 1)
    for k, label in enumerate(_labels(payload)):
        cost, stats = payload["costs"][label], payload["statistics"]["methods"][label]["avg"]
        if not stats or not cost["runs"]:
            continue
        x = cost["cpu_hours"] / cost["runs"]
        ax.scatter([x], [stats["interval"]["mean"]], color=f"C{k % 10}")
        ax.annotate(label, (x, stats["interval"]["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3), useOffset=False)
    ax.set_xlabel("CPU-hours per run")
    ax.set_ylabel("Avg (%)")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure
