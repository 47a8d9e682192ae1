"""Refuse, before training, a local output location that not every node of the cluster can see.

On one machine any local path works. On a cluster of several nodes, Ray Train persists every
worker's checkpoint at ``RunConfig.storage_path`` and rank 0 of the workers writes the run's
events and matrix, from whichever node they were placed on; a path that exists only on the
driver's disk would split the run over several disks (and Ray Train fails at its first report with
"Unable to set up cluster storage"). :func:`check_shared` proves the path is shared by writing a
marker file on the driver and asking one task on every alive node whether it sees it (public Ray
APIs: ``ray.nodes``, ``NodeAffinitySchedulingStrategy``). Object-store URIs (``s3://``, ``gs://``)
are shared by construction and are not probed.
"""
from __future__ import annotations

import os
import uuid

from medcl.storage import Location, StorageError, makedirs, place

PROBE_TIMEOUT_S = 120.0


def alive_nodes() -> list[dict]:
    """The alive nodes of the connected Ray cluster (``ray.nodes()`` entries)."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_shared(value, *, field: str, output: bool = True, example: str = "s3://BUCKET/runs",
                 writers: str = "Ray Train workers write checkpoints and progress", fix: str | None = None) -> None:
    """Raise :class:`~medcl.storage.StorageError` when ``value`` (the place of ``field``) is a local
    path that some alive node of a multi-node cluster does not see; the message names the field,
    the nodes and the fix. Nothing is checked for a URI or on a one-node cluster. Ray must be
    initialised. ``output``: a directory medcl writes (created on the driver, then a marker file
    written there must be seen by every node); else an input, which must exist on every node.
    ``writers`` says who writes an output there, ``fix`` how to name an object store instead
    (default: ``{field}: {example}, or gs://BUCKET/runs; e.g. --output-dir {example}``)."""
    where = place(value)
    if isinstance(where, Location):
        return
    nodes = alive_nodes()
    if len(nodes) < 2:
        return
    if not output:
        blind = _nodes_not_seeing(str(where), nodes)
    else:
        makedirs(where)
        marker = where / f".medcl-shared-{uuid.uuid4().hex}"
        marker.write_text("medcl shared-storage probe\n")
        try:
            blind = _nodes_not_seeing(str(marker), nodes)
        finally:
            marker.unlink(missing_ok=True)
    if not blind:
        return
    problem = (f"{field}: {where} is a node-local path: it is not visible on node(s) {', '.join(blind)} of this "
               f"{len(nodes)}-node cluster, ")
    if output:
        fix = fix or f"{field}: {example}, or gs://BUCKET/runs; e.g. --output-dir {example}"
        raise StorageError(problem + f"where {writers}. Use storage every node sees: an object store ({fix}), or a "
                           "shared mount (NFS, EFS, Filestore) at the same path on every node. See docs/cluster.md.")
    raise StorageError(problem + "where Ray tasks read it. Put it on a shared mount (NFS, EFS, Filestore) at the same "
                       "path on every node, or into the node image at that path. See docs/cluster.md.")


def _nodes_not_seeing(marker: str, nodes: list[dict]) -> list[str]:
    """Addresses of the nodes on which ``marker`` does not exist (one zero-CPU task per node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    sees = ray.remote(num_cpus=0, max_retries=1)(os.path.exists)
    refs = {node["NodeManagerAddress"] + f" ({node['NodeID'][:8]})":
            sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(marker)
            for node in nodes}
    try:
        answers = dict(zip(refs, ray.get(list(refs.values()), timeout=PROBE_TIMEOUT_S)))
    except ray.exceptions.GetTimeoutError:
        raise StorageError(f"could not check within {PROBE_TIMEOUT_S:.0f} s whether {marker.rsplit('/', 1)[0]} is "
                           "shared by every node (a node is not answering)") from None
    return sorted(name for name, seen in answers.items() if not seen)
