"""Driver side of ``medcl pretrain``: run directory, pairs, Ray, one TorchTrainer, final outputs.

    medcl pretrain experiments/pretrain_synthmed.yaml           # trains, resumes, or says it is done
    medcl pretrain experiments/pretrain_synthmed.yaml --fresh   # starts over

Run directory ``<output_dir>/<name>/``: ``config.yaml`` (resolved config + provenance),
``events.jsonl`` (step events: loss, logit scale, samples/s), ``checkpoints/step-<n>/`` (Ray Train
persists them there: ``RunConfig(name="checkpoints", **storage.ray_storage(<run dir>))``), and when done
``model.safetensors`` (load it with ``model.pretrained:`` in an experiment) and ``metrics.json``
(held-out retrieval recall and InfoNCE before and after, training loss, wall time). A killed run
resumes from its newest checkpoint when the same command is run again; a finished one is a no-op.
``output_dir`` may be an object-store URI (``s3://bucket/runs``): every file above is then written
through :mod:`medcl.storage` (pyarrow.fs) and Ray Train persists the checkpoints there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


from medcl.config import ConfigError
from medcl.engine.runner import RunError, _root_cause, prepare_run_dir
from medcl.models import ModelLoadError, check_model_source
from medcl.pretrain import checkpoint as ckpt
from medcl.pretrain.config import PretrainConfig
from medcl.rundir import RunDir, write_json
from medcl import storage

# Fields that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = {"output_dir", "train.log_every", "train.max_failures", "train.cpus_per_worker",
                     "train.eval_batch_size", "train.torch_threads", "train.checkpoint_every",
                     "train.node_wait_s"}
WEIGHTS = "model.safetensors"


@dataclass
class PretrainResult:
    run: RunDir
    weights: Path  # or a medcl.storage.Location when output_dir is an object store
    metrics: dict
    already_done: bool


def run_pretrain(config: PretrainConfig, *, fresh: bool = False, dashboard: bool = False,
                 local: bool = False) -> PretrainResult:
    """Train (or resume, or find finished) the pretraining ``config`` describes.

    ``local``: run the one worker in this process through Ray Train's local mode (``ScalingConfig(
    num_workers=0)``; needs ``train.workers == 1`` and ``ray.init`` done): no worker start-up,
    for tests and quick checks.
    """
    try:
        check_model_source(config.model.name, config.model.pretrained)
    except ModelLoadError as exc:
        raise ConfigError(config.name, [("model.pretrained", str(exc))]) from None
    if local and config.train.workers != 1:
        raise ConfigError(config.name, [("train.workers", "local mode runs exactly one worker")])
    run = _prepare_run_dir(config, fresh=fresh)
    weights = run.path / WEIGHTS
    if weights.exists() and run.metrics.exists():
        return PretrainResult(run, weights, json.loads(run.metrics.read_text()), already_done=True)
    resume = ckpt.latest(run.checkpoints, set_aside_torn=True, events=run.events)  # torn ones: renamed, reported
    if resume is not None:
        state = ckpt.read_state(resume)
        print(f"medcl: resuming {run.path} at step {state.step}/{state.total_steps} ({resume.name})", flush=True)
    return _finish(config, run, _fit(config, run, dashboard=dashboard, local=local))


def _prepare_run_dir(config: PretrainConfig, *, fresh: bool) -> RunDir:
    """The run directory, a local path or an object-store place (``output_dir: s3://...``)."""
    return prepare_run_dir(config, fresh=fresh, resumable=RESUMABLE_CHANGES, kind="a pretraining with another config")


def _fit(config: PretrainConfig, run: RunDir, *, dashboard: bool, local: bool) -> dict:
    """Train through one TorchTrainer fed by :func:`medcl.pretrain.inputs.trainer_inputs` (pairs in
    memory for synthmed, a Ray Data stream for a corpus); return the data statistics."""
    from medcl.engine.cluster import check_resources, connect
    from medcl.engine.launch import Workers, make_trainer
    from medcl.pretrain.inputs import check_stream_cpus, trainer_inputs
    from medcl.pretrain.loop import pretrain_worker

    if not local:
        connect(None, dashboard=dashboard)
        check_resources(config)
        check_stream_cpus(config)
    inputs = trainer_inputs(config)
    loop_config = {"config": config.model_dump(mode="json"), "run_dir": str(run.path), "persist": local,
                   **inputs.loop_config}
    trainer = make_trainer(pretrain_worker, loop_config, run.path, Workers.local() if local else Workers.of(config.train),
                           num_to_keep=2, datasets=inputs.datasets, dataset_config=inputs.dataset_config)
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; show the root cause, keep the checkpoints
        raise RunError(f"pretraining failed: {_root_cause(exc)}\nCheckpoints are in {run.checkpoints}; "
                       "run the same command again to resume.") from exc
    else:
        return inputs.stats()
    finally:
        inputs.release()


def _finish(config: PretrainConfig, run: RunDir, data_stats: dict) -> PretrainResult:
    """Copy the final checkpoint's weights to ``model.safetensors``; write ``metrics.json`` (both
    through :mod:`medcl.storage`, so the run directory may be in an object store)."""
    final = ckpt.latest(run.checkpoints)
    state = ckpt.read_state(final) if final is not None else None
    if state is None or not state.done:
        raise RunError(f"{run.path}: the pretraining wrote no final checkpoint; see the errors above")
    weights = run.path / WEIGHTS
    with storage.local_copy(final) as local:  # the checkpoint itself when local; a download from an object store
        storage.write_bytes(weights, ckpt.verified_model(local).read_bytes())  # atomic for a reader
    metrics = {"model": config.model.name, "pretrained_from": config.model.pretrained, "weights": str(weights),
               "steps": state.total_steps, "global_batch_size": config.train.batch_size,
               "workers": config.train.workers, "samples_seen": state.total_steps * config.train.batch_size,
               "data": data_stats, "heldout_before": state.before, "heldout_after": state.after,
               "train_loss": state.train_loss, "train_wall_time_s": state.wall_time_s}
    write_json(run.metrics, metrics)
    return PretrainResult(run, weights, metrics, already_done=False)
