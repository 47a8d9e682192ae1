"""Pretraining checkpoints: ``step-<n>`` directories with the model, the optimiser, and progress.

    step-<n>/model.safetensors   the model after n steps (medcl.models.save_weights)
    step-<n>/optimizer.pt        AdamW and LambdaLR state dicts (torch.load(weights_only=True))
    step-<n>/state.json          PretrainState: step, total steps, held-out metrics before/after
    step-<n>/manifest.json       size and sha256 of each file, checked before anything is loaded: the commit marker

Gradients are synced every step, so every rank holds the same weights and optimiser state and
rank 0 alone writes a checkpoint (Ray Train's documented pattern); every rank restores from it.
Commit (as for sequence checkpoints, :mod:`medcl.engine.checkpoint`): Ray Train persists the three
data files; rank 0 writes ``manifest.json`` after ``ray.train.report`` returned, atomically (a
rename on local disk and NFS, one PUT on an object store). A ``step-<n>`` without it, or with a
file of another size or sha256, is torn: at resume it is set aside (``step-<n>.torn-<time>``,
reported on stderr and in ``events.jsonl``) and the previous valid one is used.
A checkpoint in an object store (a :class:`medcl.storage.Location`, when ``output_dir`` is a URI)
is downloaded to a temporary directory before it is verified and read.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from medcl.engine.checkpoint import (CorruptCheckpointError, check_files, checkpoint_problem,
                                     describe_files, report_checkpoint, set_aside, sha256_file)
from medcl.models import load_weights, save_weights
from medcl.storage import is_remote, local_copy

MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, MANIFEST_FILE = "model.safetensors", "optimizer.pt", "state.json", "manifest.json"
DATA_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)
__all__ = ["CorruptCheckpointError", "PretrainState", "sha256_file", "write_checkpoint", "read_state", "restore",
           "verified_model", "latest", "save_and_report", "restore_latest"]


@dataclass
class PretrainState:
    total_steps: int
    step: int = 0
    before: dict | None = None   # held-out metrics of the starting model
    after: dict | None = None    # held-out metrics after the last step (set when done)
    train_loss: list[list[float]] = field(default_factory=list)  # [step, loss] at each checkpoint
    wall_time_s: float = 0.0     # training time summed over attempts
    data_pass: int = 0           # a corpus stream's pass the last step drew from (medcl.pretrain.stream)

    @property
    def done(self) -> bool:
        return self.after is not None


def write_checkpoint(directory: Path, state: PretrainState, model: torch.nn.Module, optimizer, scheduler,
                     *, commit: bool = True) -> dict:
    """Write the data files into ``directory``; returns the manifest (size and sha256 of each), which
    ``commit`` writes too, last (a checkpoint handed to Ray Train is committed after the report:
    :func:`save_and_report`)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / MODEL_FILE)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, directory / OPTIMIZER_FILE)
    (directory / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
    manifest = describe_files(directory, list(DATA_FILES))
    if commit:
        _commit(directory, manifest)
    return manifest


def _commit(directory, manifest: dict) -> None:
    from medcl import storage

    storage.write_text(directory / MANIFEST_FILE, json.dumps(manifest, indent=1))


def save_and_report(state: PretrainState, model, optimizer, scheduler, *, rank: int, checkpoints_dir,
                    persist: bool) -> None:
    """Every rank reports (the call is a barrier); rank 0 attaches ``step-<n>`` and, once Ray Train
    persisted it, commits it (``persist``: copy it to ``checkpoints_dir`` first, Ray Train's local mode)."""
    import ray.train

    name = f"step-{state.step}"
    metrics = {"step": state.step, "total_steps": state.total_steps, "done": state.done}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="medcl-pretrain-") as tmp:
        manifest = write_checkpoint(Path(tmp), state, model, optimizer, scheduler, commit=False)
        report_checkpoint(metrics, Path(tmp), name, checkpoints_dir / name, rank=0, manifest=None, persist=persist)
        _commit(checkpoints_dir / name, manifest)


def read_state(directory: Path) -> PretrainState:
    if is_remote(directory):
        with local_copy(directory) as local:
            return read_state(local)
    _verify(directory, [STATE_FILE])
    return PretrainState(**json.loads((directory / STATE_FILE).read_text()))


def restore(directory: Path, model: torch.nn.Module, optimizer, scheduler) -> PretrainState:
    """Load weights and optimiser state from ``directory`` (sha256-verified) and return its state."""
    if is_remote(directory):
        with local_copy(directory) as local:
            return restore(local, model, optimizer, scheduler)
    _verify(directory, list(DATA_FILES))
    load_weights(model, directory / MODEL_FILE)
    saved = torch.load(directory / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return read_state(directory)


def restore_latest(checkpoints_dir, model, optimizer, scheduler, *, rank: int) -> PretrainState | None:
    """Restore the newest valid ``step-<n>`` (:func:`medcl.engine.resume.restore_newest`: Ray's
    record or the run directory's, whichever is newer and valid); rank 0 sets torn ones aside."""
    from medcl.engine.resume import restore_newest

    on_disk = latest(checkpoints_dir, set_aside_torn=rank == 0, events=checkpoints_dir.parent / "events.jsonl")
    return restore_newest(on_disk, lambda directory: read_state(directory).step,
                          lambda directory: restore(directory, model, optimizer, scheduler),
                          valid=lambda directory: problem(directory) is None)


def verified_model(directory: Path) -> Path:
    """``directory/model.safetensors`` after checking its size and sha256."""
    _verify(directory, [MODEL_FILE])
    return directory / MODEL_FILE


def problem(directory) -> str | None:
    """Why ``directory`` is not a committed, intact checkpoint; None when it is."""
    return checkpoint_problem(directory, manifests=(MANIFEST_FILE,))


def latest(checkpoints_dir: Path, *, set_aside_torn: bool = False, events=None) -> Path | None:
    """The valid (:func:`problem`) ``step-<n>`` directory with the largest n, or None (a local Path
    or a Location). Newer torn ones are skipped and, with ``set_aside_torn`` (one process: the
    driver, or rank 0), set aside (:func:`medcl.engine.checkpoint.set_aside`)."""
    found = [(int(p.name[5:]), p) for p in checkpoints_dir.glob("step-*") if p.name[5:].isdigit()]
    for _, path in sorted(found, key=lambda item: item[0], reverse=True):
        reason = problem(path)
        if reason is None:
            return path
        if set_aside_torn:
            set_aside(path, reason, events=events)
    return None


def _verify(directory: Path, names: list[str]) -> None:
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.exists():
        raise CorruptCheckpointError(f"{directory}: missing {MANIFEST_FILE} (incomplete checkpoint)")
    check_files(directory, manifest_path, names)
