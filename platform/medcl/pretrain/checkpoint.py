"""Pretraining checkpoints: ``step-<n>`` directories with the model, the optimiser, and progress.

    step-<n>/model.safetensors   the model after n steps (medcl.models.save_weights)
    step-<n>/optimizer.pt        AdamW and LambdaLR state dicts (torch.load(weights_only=True))
    step-<n>/state.json          PretrainState: step, total steps, held-out metrics before/after
    step-<n>/manifest.json       sha256 of each file, checked before anything is loaded

Gradients are synced every step, so every rank holds the same weights and optimiser state and
rank 0 alone writes a checkpoint (Ray Train's documented pattern); every rank restores from it.
A checkpoint in an object store (a :class:`medcl.storage.Location`, when ``output_dir`` is a URI)
is downloaded to a temporary directory before it is verified and read.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from medcl.engine.checkpoint import CorruptCheckpointError, sha256_file
from medcl.models import load_weights, save_weights
from medcl.storage import is_remote, local_copy

MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, MANIFEST_FILE = "model.safetensors", "optimizer.pt", "state.json", "manifest.json"


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


def write_checkpoint(directory: Path, state: PretrainState, model: torch.nn.Module, optimizer, scheduler) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / MODEL_FILE)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, directory / OPTIMIZER_FILE)
    (directory / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
    manifest = {name: sha256_file(directory / name) for name in (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


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
    _verify(directory, [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE])
    load_weights(model, directory / MODEL_FILE)
    saved = torch.load(directory / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return read_state(directory)


def verified_model(directory: Path) -> Path:
    """``directory/model.safetensors`` after checking its sha256."""
    _verify(directory, [MODEL_FILE])
    return directory / MODEL_FILE


def latest(checkpoints_dir: Path) -> Path | None:
    """The complete ``step-<n>`` directory with the largest n, or None (a local Path or a Location)."""
    found = [(int(p.name[5:]), p) for p in checkpoints_dir.glob("step-*")
             if p.name[5:].isdigit() and (p / MANIFEST_FILE).exists()]
    return max(found)[1] if found else None


def _verify(directory: Path, names: list[str]) -> None:
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.exists():
        raise CorruptCheckpointError(f"{directory}: missing {MANIFEST_FILE} (incomplete checkpoint)")
    manifest = json.loads(manifest_path.read_text())
    for name in names:
        if name not in manifest or not (directory / name).exists() or sha256_file(directory / name) != manifest[name]:
            raise CorruptCheckpointError(f"{directory / name}: sha256 does not match {MANIFEST_FILE}; the file is corrupt")
