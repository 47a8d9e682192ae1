"""How many sweep trials a cluster can hold at once: cluster files, node layouts, bundle packing.

A trial is a set of resource bundles: its own (``resources.trial_cpus``; plus ``worker_gpus`` when
it trains in process, ``train_workers: 0``) and one per Ray Train worker (``worker_cpus`` CPUs,
``worker_gpus`` GPUs). :func:`trials_that_fit` packs whole trials onto nodes, each bundle on one
node (best fit: the fullest node that still holds it, GPU bundles first), and counts them.

A cluster's largest layout comes from the file its autoscaler reads (:func:`read_cluster_file`):

* a Ray cluster launcher file (``available_node_types``, ``head_node_type``, top-level
  ``max_workers``; ``cluster/aws.yaml``, ``cluster/gcp.yaml``, and the head node's
  ``~/ray_bootstrap_config.yaml``), each node type's ``resources`` and ``max_workers``;
* a KubeRay ``RayCluster`` (or a ``RayJob``'s ``rayClusterSpec``): the head group and each worker
  group's ``maxReplicas``, CPUs and GPUs from ``rayStartParams`` (``num-cpus``, ``num-gpus``) or
  the container's ``limits`` (``cpu``, ``nvidia.com/gpu``).

:func:`largest_fit` tries every mix of worker nodes the autoscaler may start (each type up to its
maximum, all types together up to the file's ``max_workers``) and keeps the best.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

KEYS = ("CPU", "GPU")
MAX_MIXES = 20_000  # worker-type mixes tried by largest_fit before it gives up on exhaustive search


class ClusterFileError(ValueError):
    """A cluster file medcl cannot read a layout from; the message names the file and field."""


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    min_count: int
    max_count: int


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster's node types: ``head`` resources, worker ``types``, ``max_workers`` over all types."""

    source: str
    head: dict[str, float]
    types: tuple[NodeType, ...]
    max_workers: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def can_grow(self) -> bool:
        return any(t.max_count > t.min_count for t in self.types)


def trial_bundles(trial_cpus: float, train_workers: int, worker_cpus: float, worker_gpus: int) -> list[dict]:
    """A trial's bundles: its own first, then one per Train worker."""
    own = {"CPU": trial_cpus, **({"GPU": float(worker_gpus)} if train_workers == 0 and worker_gpus else {})}
    worker = {"CPU": worker_cpus, **({"GPU": float(worker_gpus)} if worker_gpus else {})}
    return [own] + [dict(worker) for _ in range(train_workers)]


def trials_that_fit(nodes: list[dict], bundles: list[dict], limit: int) -> int:
    """Whole trials (``bundles`` each) that ``nodes`` (resources per node) hold at once, at most ``limit``."""
    free = [{k: float(n.get(k, 0.0)) for k in KEYS} for n in nodes]
    order = sorted(bundles, key=lambda b: (b.get("GPU", 0.0), b.get("CPU", 0.0)), reverse=True)
    count = 0
    while count < limit:
        trial = [dict(n) for n in free]
        if not all(_place(trial, b) for b in order):
            break
        free, count = trial, count + 1
    return count


def _place(free: list[dict], bundle: dict) -> bool:
    fits = [n for n in free if all(n[k] + 1e-9 >= bundle.get(k, 0.0) for k in KEYS)]
    if not fits:
        return False
    node = min(fits, key=lambda n: (n["GPU"] - bundle.get("GPU", 0.0), n["CPU"] - bundle.get("CPU", 0.0)))
    for k in KEYS:
        node[k] -= bundle.get(k, 0.0)
    return True


def largest_fit(spec: ClusterSpec, bundles: list[dict], limit: int) -> tuple[int, list[dict]]:
    """The most trials any layout the autoscaler may reach holds, and that layout's nodes."""
    ranges = [range(t.min_count, t.max_count + 1) for t in spec.types]
    mixes = itertools.product(*ranges)
    if _mix_count(ranges) > MAX_MIXES:  # many types: each type alone at its largest, plus the minimum
        mixes = [tuple(t.max_count if i == j else t.min_count for j, t in enumerate(spec.types))
                 for i in range(len(spec.types))]
    best, best_nodes = 0, [spec.head]
    for counts in mixes:
        if spec.max_workers is not None and sum(counts) > spec.max_workers:
            continue
        nodes = [spec.head] + [t.resources for t, n in zip(spec.types, counts) for _ in range(n)]
        fit = trials_that_fit(nodes, bundles, limit)
        if fit > best or (fit == best and len(nodes) < len(best_nodes)):
            best, best_nodes = fit, nodes
    return best, best_nodes


def _mix_count(ranges) -> int:
    total = 1
    for r in ranges:
        total *= len(r)
    return total


def read_cluster_file(path: str | Path) -> ClusterSpec:
    """The layout of a launcher file or the first ``RayCluster``/``RayJob`` in ``path``."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterFileError(f"{path}: cannot read a cluster file ({exc})") from None
    for doc in docs:
        if "available_node_types" in doc:
            return _launcher(doc, str(path))
        if doc.get("kind") in ("RayCluster", "RayJob"):
            spec = doc.get("spec", {})
            return _kuberay(spec.get("rayClusterSpec", spec) if doc["kind"] == "RayJob" else spec, str(path))
    raise ClusterFileError(f"{path}: neither a cluster launcher file (available_node_types) nor a KubeRay "
                           "RayCluster/RayJob")


def _launcher(doc: dict, source: str) -> ClusterSpec:
    types, head_name = doc["available_node_types"], doc.get("head_node_type")
    if head_name not in types:
        raise ClusterFileError(f"{source}: head_node_type {head_name!r} is not in available_node_types")
    for name, node in types.items():
        if not isinstance(node.get("resources"), dict):
            raise ClusterFileError(f"{source}: available_node_types.{name}.resources: give the node's CPU and GPU "
                                   "counts (medcl sizes sweeps from them)")
    workers = tuple(NodeType(name, _resources(node["resources"]), int(node.get("min_workers", 0)),
                             int(node.get("max_workers", 0)))
                    for name, node in types.items() if name != head_name)
    return ClusterSpec(source, _resources(types[head_name]["resources"]), workers,
                       int(doc["max_workers"]) if doc.get("max_workers") is not None else None)


def _kuberay(spec: dict, source: str) -> ClusterSpec:
    head = spec.get("headGroupSpec", {})
    workers = tuple(NodeType(g.get("groupName", f"group{i}"), _pod_resources(g), int(g.get("minReplicas", 0)),
                             int(g.get("maxReplicas", g.get("replicas", 0))))
                    for i, g in enumerate(spec.get("workerGroupSpecs", [])))
    return ClusterSpec(source, _pod_resources(head), workers, None)


def _resources(raw: dict) -> dict[str, float]:
    return {k: float(raw.get(k, 0)) for k in KEYS}


def _pod_resources(group: dict) -> dict[str, float]:
    params = group.get("rayStartParams", {}) or {}
    containers = group.get("template", {}).get("spec", {}).get("containers", [{}])
    limits = (containers[0].get("resources", {}) or {}).get("limits", {}) or {}
    cpu = params.get("num-cpus", limits.get("cpu", 0))
    gpu = params.get("num-gpus", limits.get("nvidia.com/gpu", 0))
    return {"CPU": _quantity(cpu), "GPU": _quantity(gpu)}


def _quantity(value) -> float:
    """A Kubernetes quantity (``"8"``, ``"500m"``) or a number, as a float."""
    text = str(value).strip()
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text or 0)


def node_text(node: dict) -> str:
    """``"{CPU 8, GPU 1}"``."""
    return "{" + ", ".join(f"{k} {node.get(k, 0):g}" for k in KEYS if node.get(k, 0) or k == "CPU") + "}"


def describe(nodes: list[dict]) -> str:
    """``"3 node(s): 1 x {CPU 0}, 2 x {CPU 8, GPU 1}"``."""
    shapes: dict[str, int] = {}
    for n in nodes:
        shapes[node_text(n)] = shapes.get(node_text(n), 0) + 1
    return f"{len(nodes)} node(s): " + ", ".join(f"{c} x {s}" for s, c in shapes.items())
