"""Package versions and git revision recorded with every run."""
from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("medcl", "torch", "torchvision", "ray", "open_clip_torch", "peft", "faiss-cpu", "pyarrow",
            "optuna", "pydantic", "numpy")


def provenance() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "git_revision": _git_revision()}


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
