"""What a run cost, beside what it scored: read from its run directory.

Per run (``metrics.json`` and ``config.yaml``)::

    wall_s          = sum over stages of wall_time_s_per_task   (training + evaluation of each stage;
                      the zero-shot evaluation and worker start-up are not counted)
    cpu_hours       = train.workers * train.cpus_per_worker * wall_s / 3600
    gpu_hours       = train.workers * (1 if train.use_gpu else 0) * wall_s / 3600
    peak_host_rss_bytes, peak_device_bytes   per worker (rank 0), medcl.engine.memory
    trainable_parameters                     the most parameters any stage optimised

Aggregated over runs: sums of ``wall_s``, ``cpu_hours``, ``gpu_hours``; the mean ``wall_s`` per
run; the maxima of peak memory and trainable parameters.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

COST_KEYS = ("wall_s", "cpu_hours", "gpu_hours", "peak_host_rss_bytes", "peak_device_bytes", "trainable_parameters")


def read_metrics(run_dir: Path) -> dict | None:
    """``metrics.json`` of ``run_dir``, or None when absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def run_costs(run_dir: Path, metrics: dict | None = None) -> dict:
    """The cost of one run (module doc); keys of :data:`COST_KEYS`, None where not recorded."""
    metrics = metrics if metrics is not None else (read_metrics(run_dir) or {})
    try:
        train = (yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}).get("train", {})
    except OSError:
        train = {}
    wall = float(sum(metrics.get("wall_time_s_per_task") or []))
    workers, cpus = int(train.get("workers", 1)), float(train.get("cpus_per_worker", 1.0))
    gpus = 1 if train.get("use_gpu") else 0
    return {"wall_s": wall, "cpu_hours": workers * cpus * wall / 3600.0, "gpu_hours": workers * gpus * wall / 3600.0,
            "peak_host_rss_bytes": metrics.get("peak_host_rss_bytes"),
            "peak_device_bytes": metrics.get("peak_device_bytes"),
            "trainable_parameters": metrics.get("trainable_parameters"), "workers": workers,
            "cpus_per_worker": cpus, "gpus_per_worker": gpus}


def aggregate_costs(costs: list[dict]) -> dict:
    """Totals and maxima over runs (module doc); ``runs`` is how many were counted."""

    def values(key):
        return [c[key] for c in costs if c.get(key) is not None]

    walls = values("wall_s")
    return {"runs": len(costs), "wall_s": sum(walls), "mean_wall_s": sum(walls) / len(walls) if walls else None,
            "cpu_hours": sum(values("cpu_hours")), "gpu_hours": sum(values("gpu_hours")),
            "peak_host_rss_bytes": max(values("peak_host_rss_bytes"), default=None),
            "peak_device_bytes": max(values("peak_device_bytes"), default=None),
            "trainable_parameters": max(values("trainable_parameters"), default=None)}
