"""``medcl corpus embed``: image and text embeddings of a corpus on a Ray Data actor pool.

    corpus shards --read_parquet--> map_batches(Embedder, compute=ActorPoolStrategy(size=actors | gpus),
                                    num_cpus=0.5 | num_gpus=1, batch_size) --> driver: shards.py files

GPUs are asked for explicitly (``--gpus N``: N actors with one GPU each, bf16 or fp16 autocast by
``--precision``); without it the pool runs on CPUs in fp32 and says so when the cluster has GPUs.

Each actor builds the model once (:func:`load_bundle`, checked against the driver's weight
fingerprint) and, per batch, decodes the image bytes exactly as training does (``images.decode``
to the model's size with a centre crop, then ``engine.preprocess.to_model_input``: /255, grayscale
to 3 channels, the model's mean/std), tokenises every caption, and returns
``shards.embeddings_table``: ``image_embedding = normalize(encode_image(x))`` for rows with an
image (null otherwise), ``text_embedding = normalize(encode_text(tokens))`` for all rows. Output
order is the corpus order (``preserve_order``). The driver streams the batches into shards of
``shard_rows`` rows and writes the manifest with ``model = {name, pretrained, fingerprint, seed,
image_size}``; a randomly initialised model is built after ``torch.manual_seed(seed)`` so the same
weights can be rebuilt to embed text queries.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch

from medcl.corpus import shards
from medcl.corpus.store import CorpusStore

INPUT_COLUMNS = ["id", "image", "caption", "modality", "source"]
BATCHES_PER_BLOCK = 2


@dataclass(frozen=True)
class ModelInfo:
    name: str
    pretrained: str | None = None
    image_size: int | None = None
    seed: int = 0


def model_from_run(run_dir: str | Path) -> ModelInfo:
    """The model of a run directory: config.yaml's ``model`` with the newest task checkpoint's weights."""
    import yaml

    from medcl.engine.checkpoint import MODEL_FILE, latest_checkpoint
    from medcl.models import ModelLoadError

    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"--run {run_dir}: no config.yaml; is this a run directory (medcl run)?")
    model = (yaml.safe_load(config_file.read_text()) or {}).get("model") or {}
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None or not (checkpoint / MODEL_FILE).is_file():
        raise ModelLoadError(f"--run {run_dir}: no checkpoints/task-*/{MODEL_FILE} yet; train at least one task")
    return ModelInfo(name=model.get("name", "medcl-tiny"), pretrained=str((checkpoint / MODEL_FILE).resolve()),
                     image_size=model.get("image_size"))


HALF = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}  # autocast dtype on GPU


def load_bundle(info: ModelInfo, device: str = "cpu"):
    """The model of ``info`` in eval mode (random init seeded with ``info.seed``)."""
    from medcl.models import create_model

    torch.manual_seed(info.seed)
    return create_model(info.name, pretrained=info.pretrained, image_size=info.image_size, device=device)


class Embedder:
    """Ray Data callable class: a corpus batch (pyarrow, INPUT_COLUMNS) -> an embeddings table."""

    def __init__(self, info: ModelInfo, *, threads: int = 1, fingerprint: str | None = None,
                 precision: str = "bf16"):
        from medcl.models import state_fingerprint

        torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.autocast = HALF[precision] if self.device == "cuda" else None  # CPU: fp32 (bf16 matmuls are slower there)
        self.bundle = load_bundle(info, self.device)
        if fingerprint and state_fingerprint(self.bundle.model) != fingerprint:
            raise RuntimeError(f"embedding actor built {info.name} with weights differing from the driver's "
                               f"({fingerprint}); is the weights file on every node?")

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.autocast is None:
            return self._embed(batch)
        with torch.autocast("cuda", dtype=self.autocast):
            return self._embed(batch)

    def _embed(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pydict()
        has_image = np.array([b is not None for b in rows["image"]], dtype=bool)
        text = self._encode_text(rows["caption"])
        image = np.zeros_like(text)
        if has_image.any():
            image[has_image] = self._encode_images([b for b in rows["image"] if b is not None])
        return shards.embeddings_table(ids=rows["id"], captions=rows["caption"], modalities=rows["modality"],
                                       sources=rows["source"], image_embeddings=image, has_image=has_image,
                                       text_embeddings=text)

    @torch.inference_mode()
    def _encode_text(self, captions: list[str]) -> np.ndarray:
        tokens = self.bundle.tokenizer(list(captions)).to(self.device)
        return self.bundle.model.encode_text(tokens, normalize=True).float().cpu().numpy()

    @torch.inference_mode()
    def _encode_images(self, blobs: list[bytes]) -> np.ndarray:
        from medcl.data.images import decode, stack_images
        from medcl.engine.preprocess import to_model_input

        size = self.bundle.image_size
        pixels = stack_images([decode(b, image_size=size) for b in blobs], channels=3)
        x = to_model_input(pixels, size, self.bundle.mean, self.bundle.std, device=self.device)
        return self.bundle.model.encode_image(x, normalize=True).float().cpu().numpy()


@dataclass
class EmbedResult:
    out: Path
    rows: int
    with_image: int
    shards: int
    model: dict


def embed_corpus(corpus_dir: str | Path, out: str | Path, info: ModelInfo, *, batch_size: int = 256,
                 actors: int = 2, threads: int = 1, shard_rows: int = 50_000, use_ray: bool = True,
                 gpus: int = 0, precision: str = "bf16",
                 log: Callable[[str], None] = lambda message: None) -> EmbedResult:
    """Embed every row of the corpus at ``corpus_dir`` into embedding shards under ``out``.

    On Ray, ``gpus`` > 0 runs a pool of ``gpus`` actors with one GPU each, in ``precision``
    (``bf16`` / ``fp16`` autocast, or ``fp32``); ``gpus`` = 0 runs ``actors`` CPU actors in fp32.
    The choice is the caller's: a cluster that has no GPU yet (scaling from zero) is waited for,
    never silently replaced by CPUs.
    """
    if gpus < 0 or precision not in HALF:
        raise ValueError(f"gpus must be >= 0 (got {gpus}) and precision one of {', '.join(HALF)} (got {precision!r})")
    from medcl.models import state_fingerprint

    store = CorpusStore(corpus_dir)  # verifies every shard's sha256 first
    fingerprint = state_fingerprint(load_bundle(info).model)
    model = {**asdict(info), "fingerprint": fingerprint}
    if use_ray:
        batches = _embedded_on_ray(store, info, fingerprint, batch_size=batch_size, actors=actors, threads=threads,
                                   gpus=gpus, precision=precision, log=log)
    else:
        embedder = Embedder(info, threads=threads, fingerprint=fingerprint, precision=precision)
        batches = embed_locally(store.paths, embedder, batch_size)
    out = Path(out)
    for old in [*out.glob("part-*.parquet"), out / shards.MANIFEST]:  # no stale manifest while rewriting
        old.unlink(missing_ok=True)
    written = write_embedding_shards(out, batches, shard_rows)
    dim = shards.read_shard(out, written[0], ["text_embedding"]).schema.field("text_embedding").type.list_size \
        if written else 0
    shards.write_manifest(out, dim=dim, model=model, corpus=str(store.directory.resolve()), shards=written)
    result = EmbedResult(out, sum(s.rows for s in written), sum(s.with_image for s in written), len(written), model)
    log(f"embedded {result.rows} rows ({result.with_image} with an image) into {len(written)} shard(s), dim {dim}")
    return result


def embed_locally(paths: list[str], embedder: Embedder, batch_size: int) -> Iterator[pa.Table]:
    """The plain single-process loop: read each shard in ``batch_size`` batches, embed in process."""
    import pyarrow.parquet as pq

    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=INPUT_COLUMNS):
            yield embedder(pa.Table.from_batches([batch]))


def _embedded_on_ray(store: CorpusStore, info: ModelInfo, fingerprint: str, *, batch_size: int, actors: int,
                     threads: int, gpus: int, precision: str, log: Callable[[str], None]) -> Iterator[pa.Table]:
    import ray
    import ray.data

    from medcl.corpus.raydata import data_context

    data_context()
    cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        actors = gpus  # one GPU per actor
        if cluster_gpus < gpus:
            log(f"waiting for {gpus} GPU(s): the cluster has {cluster_gpus} now (an autoscaler adds them)")
    elif cluster_gpus:
        log(f"embedding on CPU with {actors} actor(s) although the cluster has {cluster_gpus} GPU(s): pass --gpus N to use them")
    # one Parquet file reads as one block, which would feed a single actor: split into blocks of a few batches
    dataset = (ray.data.read_parquet(store.paths).select_columns(INPUT_COLUMNS)
               .repartition(target_num_rows_per_block=batch_size * BATCHES_PER_BLOCK))
    embedded = dataset.map_batches(
        Embedder, fn_constructor_kwargs={"info": info, "threads": threads, "fingerprint": fingerprint,
                                         "precision": precision},
        compute=ray.data.ActorPoolStrategy(size=actors), batch_size=batch_size, batch_format="pyarrow",
        num_cpus=0 if gpus else 0.5, num_gpus=1 if gpus else 0)
    return embedded.iter_batches(batch_format="pyarrow", batch_size=None)


def write_embedding_shards(out: Path, batches: Iterable[pa.Table], shard_rows: int) -> list[shards.ShardInfo]:
    """Stream ``batches`` into ``part-*.parquet`` files of ``shard_rows`` rows (the last may be shorter)."""
    written: list[shards.ShardInfo] = []
    pending: list[pa.Table] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= shard_rows:
            table = pa.concat_tables(pending).combine_chunks()
            written.append(shards.write_shard(out, len(written), table.slice(0, shard_rows)))
            rest = table.slice(shard_rows)
            pending, count = ([rest] if rest.num_rows else []), rest.num_rows
    if count:
        written.append(shards.write_shard(out, len(written), pa.concat_tables(pending).combine_chunks()))
    return written
