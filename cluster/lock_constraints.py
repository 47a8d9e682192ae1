"""Write cluster/constraints.txt: the exact version of every package medcl needs at run time,
as installed in the environment that ran the tests (the repository's .venv).

    .venv/bin/python cluster/lock_constraints.py > cluster/constraints.txt

Every install on a cluster node (cluster/aws.yaml, gcp.yaml setup_commands, cluster/Dockerfile)
passes ``-c cluster/constraints.txt``, so a GPU node the autoscaler adds an hour later gets the same
torch, Ray, numpy... as the head, and as the tests here, instead of the newest release inside
pyproject's ranges. The set is pyproject's ``[project] dependencies`` (with the extras they name,
e.g. ``ray[train,tune,data,default]``) followed transitively through the installed distributions'
metadata, markers evaluated for this interpreter (Python 3.11, Linux x86_64: the nodes' image,
rayproject/ray:2.60.0-py311-gpu). Local version labels (``+cpu``) are dropped, so ``torch==2.14.1``
also admits the node's CUDA build of the same release.
"""
from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _requirements(dist: metadata.Distribution, extras: set[str]) -> list[Requirement]:
    found = []
    for text in dist.requires or ():
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            found.append(req)
    return found


def project_requirements(pyproject: Path = PYPROJECT) -> list[Requirement]:
    """``[project] dependencies`` of pyproject.toml (read from the file: an editable install's
    metadata lags behind a dependency added since)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def closure(roots: list[Requirement]) -> dict[str, str]:
    """``{canonical name: installed version}`` of ``roots`` and everything they need."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset]] = set()
    todo = [(req.name, frozenset(req.extras)) for req in roots if req.marker is None or req.marker.evaluate()]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = metadata.distribution(name)
        pinned[canonicalize_name(name)] = dist.version.split("+", 1)[0]
        for req in _requirements(dist, set(extras)):
            todo.append((req.name, frozenset(req.extras)))
    return dict(sorted(pinned.items()))


def main() -> int:
    pins = closure(project_requirements())
    print("# Exact versions of medcl's run-time dependencies, for every install on a cluster node.")
    print(f"# Made by: python cluster/lock_constraints.py > cluster/constraints.txt (Python "
          f"{sys.version_info.major}.{sys.version_info.minor}, {len(pins)} packages). Do not edit by hand.")
    for name, version in pins.items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
