"""Peak memory of a training worker, recorded per stage (``metrics.json``: ``peak_host_rss_bytes``,
``peak_device_bytes``).

* host: the process's peak resident set size so far (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on
  Linux, bytes on macOS), i.e. the high-water mark of the worker process since it started;
* device: ``torch.cuda.max_memory_allocated`` on a CUDA device (the caching allocator's peak of
  tensor memory, not the driver's reserved total); None elsewhere.

Each Ray Train worker is its own process, so these are per-worker figures (rank 0's are kept).
"""
from __future__ import annotations

import resource
import sys

import torch


def peak_memory(device) -> dict:
    """``{"host_rss_bytes": int, "device_bytes": int | None}`` of this process now (see module doc)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    host = int(rss if sys.platform == "darwin" else rss * 1024)
    device_bytes = None
    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        device_bytes = int(torch.cuda.max_memory_allocated(device))
    return {"host_rss_bytes": host, "device_bytes": device_bytes}


def peak_memory_summary(per_stage: list[dict]) -> dict:
    """The run's peaks over its stages (None when no stage recorded them, e.g. an older checkpoint)."""
    hosts = [p["host_rss_bytes"] for p in per_stage if p.get("host_rss_bytes") is not None]
    devices = [p["device_bytes"] for p in per_stage if p.get("device_bytes") is not None]
    return {"peak_host_rss_bytes": max(hosts, default=None), "peak_device_bytes": max(devices, default=None)}
