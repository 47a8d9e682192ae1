"""``medcl corpus embed`` on Ray Data: the driver only plans and collects one small row per shard.

    driver: the corpus manifest (no hashing) -> one Ray task per corpus shard checks its sha256
            (num_cpus=1), concurrently with the pipeline below
    read_parquet(corpus shards) -> repartition(2 batches per block)
    -> map_batches(prepare_batch, num_cpus=0.5)                   decode + crop images to uint8,
                                                                  tokenise captions (embed_prep.py)
    -> map_batches(Embedder, compute=ActorPoolStrategy(size=A),   model actors: cast/normalise on
                   num_cpus=0.5 | num_gpus=1)                     device, both encoders
    -> repartition(target_num_rows_per_block=shard_rows, strict=True)   blocks of exactly shard_rows
    -> map_batches(_write_part, CPU tasks, num_cpus=0.25)         the worker writes its block as one
                                                                  Parquet file and hashes it
    driver: one JSON row per written file -> (all checks passed) renames to part-00000.parquet...
            -> manifest.json

On CPU actors Ray Data fuses ``prepare_batch`` into the actor (same resources: each actor decodes
and encodes its own blocks, no uint8 pixels cross the object store); for GPU actors it stays a pool
of CPU tasks feeding them. A corrupt corpus shard raises CorruptArtifactError naming it, whether it
broke the read or not, as soon as its check has finished and before anything is published.

Order is the corpus order (``preserve_order``), so the n-th statistics row is shard n, and every
shard but the last holds exactly ``shard_rows`` rows, as the in-process path writes them. The
embeddings never reach the driver: it holds the statistics rows only. Files are written to
``out/.tmp-<uuid>/`` first and renamed into place once all are written (a failed run leaves no
``part-*`` and no manifest). The corpus and the output directory must be reachable from every node:
object-store URIs (``s3://bucket/...``: Ray Data reads with medcl's pyarrow filesystem, the workers
write and hash through :mod:`medcl.storage`) or a shared mount (``medcl corpus embed`` refuses
node-local paths on a multi-node cluster before it starts).
"""
from __future__ import annotations

import json
import uuid
from typing import Callable

import pyarrow as pa

from medcl.confine import rmtree_below
from medcl import storage
from medcl.corpus import shards
from medcl.corpus.embed_prep import INPUT_COLUMNS

BATCHES_PER_BLOCK = 2


def start_corpus_check(directory, listed: dict[str, str], manifest: str) -> list:
    """Start checking every listed corpus shard's sha256 in parallel Ray tasks; returns their refs
    for :func:`raise_if_corrupt`. The checks run while the shards are already being embedded."""
    import ray

    check = ray.remote(_check_file).options(num_cpus=1)  # sha256 keeps a core busy
    return [check.remote(str(directory), name, sha, manifest) for name, sha in listed.items()]


def raise_if_corrupt(checks: list, *, wait: bool = True) -> None:
    """CorruptArtifactError naming the first bad file (in listing order) among the checks of
    :func:`start_corpus_check`: all of them (``wait``) or those finished so far (fail fast while
    embedding)."""
    import ray

    from medcl.corpus.schema import CorruptArtifactError

    if not checks:
        return
    if not wait:
        done, _ = ray.wait(checks, num_returns=len(checks), timeout=0, fetch_local=True)
        finished = {ref.hex() for ref in done}
        checks = [ref for ref in checks if ref.hex() in finished]
    first = next((problem for problem in ray.get(checks) if problem), None)
    if first:
        raise CorruptArtifactError(first)


def _check_file(directory: str, name: str, sha256: str, manifest: str) -> str | None:
    from medcl.corpus.schema import CorruptArtifactError, verify_listed_files

    try:
        verify_listed_files(directory, {name: sha256}, manifest)
    except CorruptArtifactError as exc:
        return str(exc)
    return None


def _write_part(block: pa.Table, staging: str) -> pa.Table:
    """Write ``block`` (an embeddings table) to one staging file; return its statistics as one JSON row."""
    import pyarrow.compute as pc

    from medcl.corpus.parquet_io import write_table
    from medcl.hashing import sha256_file

    path = storage.place(staging) / f"{uuid.uuid4().hex}.parquet"
    write_table(block, path)
    stats = {"file": path.name, "rows": block.num_rows, "sha256": sha256_file(path),
             "with_image": int(pc.sum(block["has_image"]).as_py() or 0),
             "dim": block.schema.field("text_embedding").type.list_size}
    return pa.table({"stats": [json.dumps(stats)]})


def embed_on_ray(paths: list[str], out: storage.Place, *, embedder, embedder_kwargs: dict, prepare_kwargs: dict,
                 batch_size: int, actors: int, gpus: int, shard_rows: int, checks: list,
                 log: Callable[[str], None]) -> tuple[list, int]:
    """Run the pipeline over the corpus files ``paths`` into ``out`` with the model actor class
    ``embedder`` (``medcl.corpus.embed.Embedder``); returns ``(shard infos, dim)``. ``checks`` are
    the corpus checks of :func:`start_corpus_check`: a corrupt shard raises CorruptArtifactError
    (also when it made the pipeline fail) and nothing is published."""
    from medcl.corpus.raydata import data_context

    data_context()
    log(f"{len(paths)} corpus shard(s) -> {actors} {'GPU' if gpus else 'CPU'} model actor(s); "
        f"shards of {shard_rows} rows written by the workers")
    staging = out / f".tmp-{uuid.uuid4().hex[:8]}"
    storage.makedirs(staging)
    try:
        try:
            written = _pipeline(paths, staging, embedder=embedder, embedder_kwargs=embedder_kwargs,
                                prepare_kwargs=prepare_kwargs, batch_size=batch_size, actors=actors, gpus=gpus,
                                shard_rows=shard_rows)
            parts = []
            for batch in written.iter_batches(batch_format="pyarrow", batch_size=None):
                raise_if_corrupt(checks, wait=False)
                parts += [json.loads(row) for row in batch["stats"].to_pylist()]
        except Exception:
            raise_if_corrupt(checks)  # a corrupt shard is the likelier cause: name it
            raise
        raise_if_corrupt(checks)
        return _publish(out, staging, parts), (parts[0]["dim"] if parts else 0)
    finally:
        rmtree_below(staging, out)


def _pipeline(paths: list[str], staging: storage.Place, *, embedder, embedder_kwargs: dict, prepare_kwargs: dict,
              batch_size: int, actors: int, gpus: int, shard_rows: int):
    """The lazy Dataset of the module docstring: one statistics row per file written to ``staging``."""
    import ray.data

    from medcl.corpus.embed_prep import prepare_batch
    from medcl.corpus.parquet_io import ray_parquet_source

    source, read_keywords = ray_parquet_source(paths)
    prepared = (ray.data.read_parquet(source, **read_keywords).select_columns(INPUT_COLUMNS)
                .repartition(target_num_rows_per_block=batch_size * BATCHES_PER_BLOCK)
                .map_batches(prepare_batch, fn_kwargs=prepare_kwargs, batch_size=batch_size,
                             batch_format="pyarrow", num_cpus=0.5))
    embedded = prepared.map_batches(
        embedder, fn_constructor_kwargs=embedder_kwargs, compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size, batch_format="pyarrow", num_cpus=0 if gpus else 0.5, num_gpus=1 if gpus else 0)
    return (embedded.repartition(target_num_rows_per_block=shard_rows, strict=True)
            .map_batches(_write_part, fn_kwargs={"staging": str(staging)}, batch_size=shard_rows,
                         batch_format="pyarrow", num_cpus=0.25))


def _publish(out: storage.Place, staging: storage.Place, parts: list[dict]) -> list[shards.ShardInfo]:
    """Rename the staging files, in dataset order, to ``part-00000.parquet``..."""
    written = []
    for number, part in enumerate(parts):
        name = shards.shard_file_name(number)
        storage.move(staging / part["file"], out / name)
        written.append(shards.ShardInfo(name, part["rows"], part["with_image"], part["sha256"]))
    return written
