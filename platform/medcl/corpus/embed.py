"""``medcl corpus embed``: image and text embeddings of a corpus, decoded on CPUs, encoded by model actors.

    corpus shards --read_parquet--> map_batches(prepare_batch)   decode to uint8, tokenise (fused into
                                                                 the actors on CPU, CPU tasks for GPU actors)
                  --> map_batches(Embedder, compute=ActorPoolStrategy(size=actors | gpus),
                                  num_cpus=0.5 | num_gpus=1) --> workers write + hash the shards

(embed_ray.py has the pipeline; ``use_ray=False`` runs the same two stages in this process and
writes the shards here.) GPUs are asked for explicitly (``--gpus N``: N actors with one GPU each,
bf16 or fp16 autocast by ``--precision``); without it the pool runs on CPUs in fp32 and says so when
the cluster has GPUs.

The CPU stage (embed_prep.py) decodes the image bytes exactly as training does (``images.decode`` to
the model's size with a centre crop, 3 channels, uint8) and tokenises every caption. Each actor
builds the model once (:func:`load_bundle`, checked against the driver's weight fingerprint) and,
per batch, finishes the preprocessing on its device (``engine.preprocess.to_model_input``: /255, the
model's mean/std) and returns ``shards.embeddings_table``: ``image_embedding =
normalize(encode_image(x))`` for rows with an image (null otherwise), ``text_embedding =
normalize(encode_text(tokens))`` for all rows. Shards hold ``shard_rows`` rows (the last fewer) in
corpus order, and the manifest records ``model = {name, pretrained, fingerprint, seed, image_size}``;
a randomly initialised model is built after ``torch.manual_seed(seed)`` so the same weights can be
rebuilt to embed text queries.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch

from medcl import publish, storage
from medcl.corpus import shards
from medcl.corpus.embed_prep import INPUT_COLUMNS
from medcl.corpus.store import CorpusStore
from medcl.corpus.verify import verify_listing


@dataclass(frozen=True)
class ModelInfo:
    name: str
    pretrained: str | None = None
    image_size: int | None = None
    seed: int = 0


def model_from_run(run_dir) -> ModelInfo:
    """The model of a run directory (a local path or an object-store URI such as ``medcl run``'s
    ``s3://bucket/runs/NAME``): config.yaml's ``model`` with the newest task checkpoint's weights."""
    import yaml

    from medcl.engine.checkpoint import MODEL_FILE, latest_checkpoint
    from medcl.models import ModelLoadError

    run_dir = storage.place(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"--run {run_dir}: no config.yaml; is this a run directory (medcl run)?")
    model = (yaml.safe_load(config_file.read_text()) or {}).get("model") or {}
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    verify_run_weights(run_dir / "checkpoints", checkpoint)
    if checkpoint is None or not (checkpoint / MODEL_FILE).is_file():
        raise ModelLoadError(f"--run {run_dir}: no checkpoints/task-*/{MODEL_FILE} yet; train at least one task")
    return ModelInfo(name=model.get("name", "medcl-tiny"), pretrained=str((checkpoint / MODEL_FILE).resolve()),
                     image_size=model.get("image_size"))


def verify_run_weights(checkpoints, chosen) -> None:
    """Refuse (CorruptArtifactError) weights that differ from what training recorded: the chosen
    checkpoint's ``model.safetensors`` is checked against the size and sha256 its
    ``manifest-rank0.json`` lists (written with it by :mod:`medcl.engine.checkpoint`), and a newer
    committed ``task-*`` (one with a manifest) that is not valid is named, never silently skipped
    for an older one."""
    from medcl.corpus.schema import CorruptArtifactError
    from medcl.engine.checkpoint import MODEL_FILE, CorruptCheckpointError, check_files, checkpoint_problem

    committed = sorted(((int(p.name.removeprefix("task-")), p) for p in checkpoints.glob("task-*")
                        if p.name.removeprefix("task-").isdigit() and (p / "manifest-rank0.json").is_file()),
                       key=lambda item: item[0])
    if committed and (chosen is None or committed[-1][1].name != chosen.name):
        newest = committed[-1][1]
        raise CorruptArtifactError(f"--run: {newest}: {checkpoint_problem(newest)}; not embedding with other weights")
    if chosen is not None:
        try:
            check_files(chosen, chosen / "manifest-rank0.json", [MODEL_FILE])
        except CorruptCheckpointError as exc:
            raise CorruptArtifactError(f"--run: {exc}") from None


HALF = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}  # autocast dtype on GPU


def load_bundle(info: ModelInfo, device: str = "cpu"):
    """The model of ``info`` in eval mode (random init seeded with ``info.seed``)."""
    from medcl.models import create_model

    torch.manual_seed(info.seed)
    return create_model(info.name, pretrained=info.pretrained, image_size=info.image_size, device=device)


class Embedder:
    """Ray Data callable class: a prepared batch (``embed_prep.prepare_batch``) -> an embeddings table.

    The pixels arrive decoded (uint8) and the captions tokenised; the actor casts and normalises
    the pixels on its device and runs both encoders, nothing else.
    """

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
        from medcl.corpus.embed_prep import pixels_of, tokens_of

        has_image = batch["has_image"].to_numpy(zero_copy_only=False).astype(bool)
        text = self._encode_tokens(tokens_of(batch))
        image = np.zeros_like(text)
        if has_image.any():
            image[has_image] = self._encode_pixels(pixels_of(batch, self.bundle.image_size))
        return shards.embeddings_table(ids=batch["id"].to_pylist(), captions=batch["caption"].to_pylist(),
                                       modalities=batch["modality"].to_pylist(), sources=batch["source"].to_pylist(),
                                       image_embeddings=image, has_image=has_image, text_embeddings=text)

    @torch.inference_mode()
    def _encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(tokens).to(self.device)
        return self.bundle.model.encode_text(x, normalize=True).float().cpu().numpy()

    @torch.inference_mode()
    def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        from medcl.engine.preprocess import to_model_input

        size = self.bundle.image_size
        with warnings.catch_warnings():  # a read-only Arrow view: to_model_input only reads it
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            x = to_model_input(pixels, size, self.bundle.mean, self.bundle.std, device=self.device)
        return self.bundle.model.encode_image(x, normalize=True).float().cpu().numpy()

    def _encode_images(self, blobs: list[bytes]) -> np.ndarray:
        """Encoded image bytes -> normalised image embeddings (decode + encode, as the two stages do)."""
        from medcl.corpus.embed_prep import decode_images

        return self._encode_pixels(decode_images(blobs, self.bundle.image_size))


@dataclass
class EmbedResult:
    out: storage.Place
    rows: int
    with_image: int
    shards: int
    model: dict


def embed_corpus(corpus_dir, out, info: ModelInfo, *, batch_size: int = 256,
                 actors: int = 2, threads: int = 1, shard_rows: int = 50_000, use_ray: bool = True,
                 gpus: int = 0, precision: str = "bf16",
                 log: Callable[[str], None] = lambda message: None) -> EmbedResult:
    """Embed every row of the corpus at ``corpus_dir`` into embedding shards under ``out`` (each a
    local path, a shared mount or an object-store URI, see :mod:`medcl.storage`).

    On Ray (embed_ray.py), the corpus shards' sha256 are checked in parallel tasks while a model
    actor pool decodes, tokenises and encodes (GPU actors are fed by CPU decode tasks), and workers
    write and hash the shards; ``gpus`` > 0 runs a pool of ``gpus`` actors with one GPU each, in
    ``precision`` (``bf16`` / ``fp16`` autocast, or ``fp32``); ``gpus`` = 0 runs ``actors`` CPU actors
    in fp32. The choice is the caller's: a cluster that has no GPU yet (scaling from zero) is
    waited for, never silently replaced by CPUs. ``use_ray=False`` runs the same two stages in this
    process. Either way every shard but the last holds ``shard_rows`` rows, in corpus order.
    """
    if gpus < 0 or precision not in HALF:
        raise ValueError(f"gpus must be >= 0 (got {gpus}) and precision one of {', '.join(HALF)} (got {precision!r})")
    from medcl.models import state_fingerprint

    store = CorpusStore(corpus_dir, verify=not use_ray)  # on Ray the shards are hashed in parallel tasks
    bundle = load_bundle(info)
    fingerprint = state_fingerprint(bundle.model)
    model = {**asdict(info), "fingerprint": fingerprint}
    prepare_kwargs = {"image_size": bundle.image_size, "tokenizer": bundle.tokenizer}
    out = storage.place(out)
    with publish.publishing(out, verify=lambda stage: _verify(stage, use_ray), command="medcl corpus embed",
                            legacy=LEGACY) as stage:
        if use_ray:
            written, dim = _embed_on_ray(store, stage, info, fingerprint, prepare_kwargs, batch_size=batch_size,
                                         actors=actors, threads=threads, gpus=gpus, precision=precision,
                                         shard_rows=shard_rows, log=log)
        else:
            embedder = Embedder(info, threads=threads, fingerprint=fingerprint, precision=precision)
            written = write_embedding_shards(stage, embed_locally(store.paths, embedder, batch_size, prepare_kwargs),
                                             shard_rows)
            dim = shards.read_shard(stage, written[0], ["text_embedding"]).schema.field("text_embedding") \
                .type.list_size if written else 0
        shards.write_manifest(stage, dim=dim, model=model, corpus=str(store.location.resolve()), shards=written)
    result = EmbedResult(out, sum(s.rows for s in written), sum(s.with_image for s in written), len(written), model)
    log(f"embedded {result.rows} rows ({result.with_image} with an image) into {len(written)} shard(s), dim {dim}")
    return result


LEGACY = ("part-*.parquet", shards.MANIFEST, ".tmp-*")  # an unversioned embedding directory's files


def _verify(stage: storage.Place, use_ray: bool) -> None:
    """The staged embeddings before they are published: every listed shard's sha256, and no other shard."""
    manifest = shards.read_manifest(stage, verify=False)
    listed = {s.file: s.sha256 for s in manifest.shards}
    extra = sorted(set(n for n in storage.listdir(stage) if n.endswith(".parquet")) - set(listed))
    if extra:
        from medcl.corpus.schema import CorruptArtifactError

        raise CorruptArtifactError(f"{stage}: {extra[0]} is not listed in {shards.MANIFEST}; not published")
    verify_listing(stage, listed, shards.MANIFEST, use_ray=use_ray)


def embed_locally(paths: list[str], embedder: Embedder, batch_size: int, prepare_kwargs: dict) -> Iterator[pa.Table]:
    """The plain single-process loop: read each shard in ``batch_size`` batches, prepare and embed in process."""
    from medcl.corpus.embed_prep import prepare_batch
    from medcl.corpus.parquet_io import parquet_file

    for path in paths:
        for batch in parquet_file(path).iter_batches(batch_size=batch_size, columns=INPUT_COLUMNS):
            yield embedder(prepare_batch(pa.Table.from_batches([batch]), **prepare_kwargs))


def _embed_on_ray(store: CorpusStore, out: storage.Place, info: ModelInfo, fingerprint: str, prepare_kwargs: dict, *,
                  batch_size: int, actors: int, threads: int, gpus: int, precision: str, shard_rows: int,
                  log: Callable[[str], None]) -> tuple[list[shards.ShardInfo], int]:
    import ray

    from medcl.corpus.embed_ray import embed_on_ray, start_corpus_check
    from medcl.corpus.store import CORPUS_MANIFEST

    checks = start_corpus_check(store.directory, {s.file: s.sha256 for s in store.manifest.shards}, CORPUS_MANIFEST)
    cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        actors = gpus  # one GPU per actor
        if cluster_gpus < gpus:
            log(f"waiting for {gpus} GPU(s): the cluster has {cluster_gpus} now (an autoscaler adds them)")
    elif cluster_gpus:
        log(f"embedding on CPU with {actors} actor(s) although the cluster has {cluster_gpus} GPU(s): pass --gpus N to use them")
    embedder_kwargs = {"info": info, "threads": threads, "fingerprint": fingerprint, "precision": precision}
    return embed_on_ray(store.paths, out, embedder=Embedder, embedder_kwargs=embedder_kwargs, prepare_kwargs=prepare_kwargs,
                        batch_size=batch_size, actors=actors, gpus=gpus, shard_rows=shard_rows, checks=checks,
                        log=log)


def write_embedding_shards(out: storage.Place, batches: Iterable[pa.Table], shard_rows: int) -> list[shards.ShardInfo]:
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
