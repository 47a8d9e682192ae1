"""Sequence checkpoints at task boundaries: model + strategy state + matrix so far, sha256-checked.

A checkpoint directory ``task-<t>`` (t = stages finished; 0 = only the zero-shot row) holds
``state.json`` (progress and matrix rows), ``model.safetensors`` (t >= 1), and per rank
``strategy-rank<r>.pt`` and ``manifest-rank<r>.json`` (sha256 of each file that rank wrote).
Every rank writes into its own temporary directory and Ray Train persists them all into one
directory. Loading verifies the manifest, so a corrupted file is named, never silently used;
strategy state is read with ``torch.load(weights_only=True)`` (no pickle of arbitrary objects).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from medcl.models import load_weights, save_weights

STATE_FILE, MODEL_FILE = "state.json", "model.safetensors"


class CorruptCheckpointError(RuntimeError):
    pass


@dataclass
class SequenceState:
    """Progress of a sequence run; ``rows[s]`` is the accuracy row after stage ``s + 1``."""

    task_names: list[str]
    stage_names: list[str]
    zero_shot: list[float] | None = None
    rows: list[list[float]] = field(default_factory=list)
    wall_time_s: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    trainable_parameters: list[int] = field(default_factory=list)
    strategy_metrics: list[dict] = field(default_factory=list)  # Strategy.extra_metrics per stage

    @property
    def stages_done(self) -> int:
        return len(self.rows)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(directory: Path, *, rank: int, state: SequenceState, model: torch.nn.Module | None,
                     strategy_state: dict) -> None:
    """Write this rank's part of a checkpoint into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if rank == 0:
        if model is not None:
            save_weights(model, directory / MODEL_FILE)
            written.append(MODEL_FILE)
        (directory / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
        written.append(STATE_FILE)
    strategy_file = f"strategy-rank{rank}.pt"
    torch.save(strategy_state, directory / strategy_file)
    written.append(strategy_file)
    manifest = {name: sha256_file(directory / name) for name in written}
    (directory / f"manifest-rank{rank}.json").write_text(json.dumps(manifest, indent=1))


def read_state(directory: Path) -> SequenceState:
    _verify(directory, 0, [STATE_FILE])
    return SequenceState(**json.loads((directory / STATE_FILE).read_text()))


def restore_checkpoint(directory: Path, *, rank: int, model: torch.nn.Module) -> tuple[SequenceState, dict]:
    """Load the model weights (if saved) and this rank's strategy state; verify sha256 first."""
    state = read_state(directory)
    if (directory / MODEL_FILE).exists():
        _verify(directory, 0, [MODEL_FILE])
        load_weights(model, directory / MODEL_FILE)
    strategy_file = f"strategy-rank{rank}.pt"
    if not (directory / strategy_file).exists():
        raise CorruptCheckpointError(f"{directory}: no {strategy_file}; was it written with a different number of workers?")
    _verify(directory, rank, [strategy_file])
    return state, torch.load(directory / strategy_file, weights_only=True, map_location="cpu")


def _verify(directory: Path, rank: int, names: list[str]) -> None:
    manifest_path = directory / f"manifest-rank{rank}.json"
    if not manifest_path.exists():
        raise CorruptCheckpointError(f"{directory}: missing {manifest_path.name} (incomplete checkpoint)")
    manifest = json.loads(manifest_path.read_text())
    for name in names:
        if name not in manifest or sha256_file(directory / name) != manifest[name]:
            raise CorruptCheckpointError(f"{directory / name}: sha256 does not match {manifest_path.name}; the file is corrupt")


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The ``task-<t>`` directory with the largest ``t`` that has a readable state, or None."""
    best, best_t = None, -1
    for path in checkpoints_dir.glob("task-*"):
        suffix = path.name.removeprefix("task-")
        if suffix.isdigit() and int(suffix) > best_t and (path / "manifest-rank0.json").exists():
            best, best_t = path, int(suffix)
    return best
