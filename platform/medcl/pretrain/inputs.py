"""What the driver of ``medcl pretrain`` hands its TorchTrainer, per data source.

* synthmed: the pairs are built in memory and ``ray.put`` once (``loop_config["data"]``); every
  worker draws its rows of each global batch from them (:class:`medcl.pretrain.data.PairSampler`).
* corpus: :func:`medcl.pretrain.corpus_plan.plan_corpus` reads the footers and the held-out rows;
  the training rows stream through Ray Data (``datasets={"train": ...}``,
  :mod:`medcl.pretrain.stream`) and ``loop_config`` carries the held-out pairs and the step count
  (:func:`medcl.pretrain.data.steps_for` of the planned training rows). The driver holds no
  training image.

:meth:`TrainerInputs.stats` is the ``data`` entry of ``metrics.json``: rows read, used for
training, held out, and skipped by reason (``caption_only``, ``undecodable_image``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from medcl.pretrain.config import CorpusData, PretrainConfig


@dataclass
class TrainerInputs:
    loop_config: dict                      # entries added to the worker's loop config
    datasets: dict | None = None           # TorchTrainer(datasets=...)
    dataset_config: object | None = None   # TorchTrainer(dataset_config=...)
    stats: Callable[[], dict] = dict       # called after training
    release: Callable[[], None] = field(default=lambda: None)  # called when the trainer is done


def trainer_inputs(config: PretrainConfig) -> TrainerInputs:
    """The inputs of ``config``'s data source (module docstring); Ray must be initialised."""
    if isinstance(config.data, CorpusData):
        return _streamed(config)
    return _in_memory(config)


def check_stream_cpus(config: PretrainConfig) -> None:
    """Raise ConfigError when a corpus stream would get no CPU: its read and decode tasks run beside
    the Ray Train workers, so the cluster (as it is now) needs at least one CPU more than
    ``train.workers * train.cpus_per_worker``. Synthmed, or a cluster that may scale
    (``RAY_ADDRESS`` set), is not checked."""
    import os

    import ray

    from medcl.config import ConfigError

    if not isinstance(config.data, CorpusData) or os.environ.get("RAY_ADDRESS"):
        return
    have = ray.cluster_resources().get("CPU", 0)
    wanted = config.train.workers * config.train.cpus_per_worker
    if have - wanted < 1:
        raise ConfigError(config.name, [("train.cpus_per_worker", f"{config.train.workers} workers x "
                                         f"{config.train.cpus_per_worker} CPUs leave {have - wanted:g} of {have:g} "
                                         "CPUs for the corpus stream's decode tasks, which need at least 1; lower "
                                         "train.workers or train.cpus_per_worker")])


def _in_memory(config: PretrainConfig) -> TrainerInputs:
    import ray

    from medcl.pretrain.data import load_pairs

    data = load_pairs(config.data)
    return TrainerInputs({"data": ray.put(data)}, stats=lambda: data.stats)


def _streamed(config: PretrainConfig) -> TrainerInputs:
    import ray

    from medcl.pretrain import stream
    from medcl.pretrain.corpus_plan import plan_corpus
    from medcl.pretrain.data import steps_for

    plan = plan_corpus(config.data)
    skipped = ray.remote(stream.SkippedRows).options(num_cpus=0).remote()
    dataset = stream.training_dataset(plan.files, config.data, exclude=plan.heldout_ids, seed=config.seed,
                                      skipped=skipped)
    total = steps_for(plan.train_rows, config.train.batch_size, config.train.steps, config.train.epochs)

    def stats() -> dict:
        undecodable = ray.get(skipped.count.remote())
        return {"source": "corpus", "path": str(config.data.path), "ingest": "ray_data_stream", "rows": plan.rows,
                "train": plan.train_rows - undecodable, "heldout": len(plan.heldout),
                "skipped": {"caption_only": plan.caption_only, "undecodable_image": undecodable}}

    return TrainerInputs({"heldout": plan.heldout, "total_steps": total}, datasets={stream.STREAM_NAME: dataset},
                         dataset_config=stream.dataset_config(), stats=stats, release=lambda: ray.kill(skipped))
