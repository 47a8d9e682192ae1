"""Sweep plots (matplotlib, Agg): optimisation history, parameter importances, metric by order.

* ``history.png``: each objective per trial number (COMPLETE dots; PRUNED trials as crosses at
  their last per-task value, single objective) and the best value so far.
* ``importances.png``: Optuna's parameter importances (its default evaluator: PED-ANOVA in Optuna 5)
  for the first objective, over COMPLETE trials; a note instead ("too few trials") below
  :data:`MIN_TRIALS_FOR_IMPORTANCE` COMPLETE trials, or when no parameter varied.
* ``order.png``: the first objective of COMPLETE trials grouped by task order (when orders vary).

So that noise does not read as signal: every value axis spans at least :data:`MIN_SPAN_POINTS`
percentage points (centred on the data when the data spans less), and trial numbers get integer
ticks only. Importances estimated from a handful of trials change with every trial, hence the
minimum of :data:`MIN_TRIALS_FOR_IMPORTANCE` (8 is a judgement, not a statistical threshold).

Each file is written through :mod:`medcl.storage` (a local folder or an object store).
"""
from __future__ import annotations

from medcl.sweep.config import SweepConfig
from medcl.sweep.space import ORDER_SEP

MIN_SPAN_POINTS = 5.0  # smallest range of a value axis, in metric points (accuracy %)
MIN_TRIALS_FOR_IMPORTANCE = 8  # COMPLETE trials before parameter importances are computed


def write_plots(sweep: SweepConfig, study, table, root) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    out = {"history": _history(sweep, table, root / "history.png"),
           "importances": _importances(sweep, study, root / "importances.png")}
    if "param.order" in table and table["param.order"].nunique() > 1:
        out["order_plot"] = _by_order(sweep, table, root / "order.png")
    return out


def widen_value_axis(ax, min_span: float = MIN_SPAN_POINTS) -> None:
    """Make the y axis of ``ax`` span at least ``min_span``, centred on its current limits (so
    differences of a few tenths of a point between trials do not fill the plot)."""
    low, high = ax.get_ylim()
    if high - low < min_span:
        centre = (low + high) / 2
        ax.set_ylim(centre - min_span / 2, centre + min_span / 2)


def _history(sweep: SweepConfig, table, path):
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    objectives = sweep.objective
    fig, axes = plt.subplots(1, len(objectives), figsize=(5 * len(objectives), 3.5), squeeze=False)
    for ax, objective in zip(axes[0], objectives):
        m = objective.metric
        done = table[table["state"] == "COMPLETE"] if len(table) else table
        if len(done):
            ax.plot(done["number"], done[m], "o", label="complete")
            values = done[m].to_numpy(dtype=float)
            best = np.maximum.accumulate(values) if objective.mode == "max" else np.minimum.accumulate(values)
            ax.step(done["number"], best, where="post", label="best so far")
        pruned = table[table["state"] == "PRUNED"] if len(table) else table
        last = [c for c in table.columns if c.startswith(f"{sweep.prune_metric}@task")]
        if len(pruned) and last and m == sweep.prune_metric:
            ax.plot(pruned["number"], pruned[last].ffill(axis=1).iloc[:, -1], "x", label="pruned (last task)")
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        widen_value_axis(ax)
        ax.set_ylabel(f"{m} (%)")
        ax.set_title(f"{m} ({objective.mode})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def _importances(sweep: SweepConfig, study, path):
    import matplotlib.pyplot as plt
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(5, 3))
    importances, note = {}, ""
    try:
        target = (lambda t: t.values[0]) if len(sweep.objective) > 1 else None
        if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
            importances = optuna.importance.get_param_importances(study, target=target)
        else:
            note = (f"too few trials for parameter importances: {len(complete)} complete, "
                    f"needs >= {MIN_TRIALS_FOR_IMPORTANCE}")
    except (RuntimeError, ValueError) as exc:  # e.g. every trial has the same parameters
        note = str(exc).split("\n")[0]
    if importances:
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel(f"importance for {sweep.objective[0].metric}")
    else:
        ax.text(0.5, 0.5, note or "no parameter varied over the complete trials", ha="center",
                va="center", wrap=True, fontsize=8)
        ax.set_axis_off()
    return _save(fig, path)


def _by_order(sweep: SweepConfig, table, path):
    import matplotlib.pyplot as plt

    m = sweep.objective[0].metric
    col = f"final.{m}" if f"final.{m}" in table else m
    done = table[table["state"] == "COMPLETE"]
    groups = [(o, g[col].dropna().to_numpy(dtype=float)) for o, g in done.groupby("param.order")]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(groups) + 1), 3.5))
    for i, (_, values) in enumerate(groups):
        ax.plot([i] * len(values), values, "o", alpha=0.7)
    ax.set_xticks(range(len(groups)), [o.replace(ORDER_SEP, "\n") for o, _ in groups], fontsize=7)
    widen_value_axis(ax)
    ax.set_ylabel(f"{m} (%)")
    ax.set_title(f"{m} by task order")
    return _save(fig, path)


def _save(fig, path):
    """Write ``fig`` as a PNG at the place ``path`` (local or object store); close it; return ``path``."""
    import io

    import matplotlib.pyplot as plt

    from medcl.storage import write_bytes

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
    return path
