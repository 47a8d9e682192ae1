"""Sequence checkpoints at task boundaries: model + strategy state + matrix so far, sha256-checked.

A checkpoint directory ``task-<t>`` (t = stages finished; 0 = only the zero-shot row) holds
``state.json`` (progress and matrix rows), ``model.safetensors`` (t >= 1), and per rank
``strategy-rank<r>.pt`` and ``manifest-rank<r>.json`` (sha256 of each file that rank wrote).
Every rank writes into its own temporary directory and Ray Train persists them all into one
directory. Loading verifies the manifest, so a corrupted file is named, never silently used;
strategy state is read with ``torch.load(weights_only=True)`` (no pickle of arbitrary objects).
"""
from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from medcl.errors import MedclError
from medcl.hashing import sha256_file
from medcl.models import load_weights, save_weights
from medcl.storage import is_remote, local_copy
from medcl.models.weights import describe_mismatch

STATE_FILE, MODEL_FILE = "state.json", "model.safetensors"


class CorruptCheckpointError(MedclError, RuntimeError):
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
    auc_zero_shot: list[float] | None = None  # macro one-vs-rest AUC (%) beside zero_shot and rows;
    auc_rows: list[list[float]] = field(default_factory=list)  # absent from checkpoints before AUC
    mid_step: int = 0  # steps of stage stages_done + 1 done: > 0 only in a mid-task checkpoint (midtask.py)

    @property
    def stages_done(self) -> int:
        return len(self.rows)


def write_checkpoint(directory: Path, *, rank: int, state: SequenceState, model: torch.nn.Module | None,
                     strategy_state: dict, model_files: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """Write this rank's part of a checkpoint into ``directory``; ``model_files`` (file name ->
    tensors by state-dict name, see ``Strategy.model_files``) are written by rank 0 beside or
    instead of the whole ``model``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if rank == 0:
        if model is not None:
            save_weights(model, directory / MODEL_FILE)
            written.append(MODEL_FILE)
        for name, tensors in (model_files or {}).items():
            save_weights(tensors, directory / name)
            written.append(name)
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
    """Load the model weights (if saved) and this rank's strategy state; verify sha256 first. A
    checkpoint in an object store (:class:`medcl.storage.Location`) is downloaded first."""
    if is_remote(directory):
        with local_copy(directory) as local:
            return restore_checkpoint(local, rank=rank, model=model)
    state = read_state(directory)
    if (directory / MODEL_FILE).exists():
        _verify(directory, 0, [MODEL_FILE])
        load_weights(model, directory / MODEL_FILE)
    for name in _partial_model_files(directory):
        _verify(directory, 0, [name])
        mismatch = load_weights(model, directory / name, strict=False)
        if mismatch.unexpected:
            raise CorruptCheckpointError(f"{directory / name}: {describe_mismatch(mismatch)}; not this model's weights")
    strategy_file = f"strategy-rank{rank}.pt"
    if not (directory / strategy_file).exists():
        raise CorruptCheckpointError(f"{directory}: no {strategy_file}; was it written with a different number of workers?")
    _verify(directory, rank, [strategy_file])
    try:
        return state, torch.load(directory / strategy_file, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:  # weights_only refused an object: never fall back to full pickle
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptCheckpointError(f"{directory / strategy_file}: refused (holds objects other than tensors and "
                                     f"plain containers; loaded with weights_only=True): {reason}") from None


def verify_checkpoint(directory: Path) -> None:
    """Check every file that every ``manifest-rank<r>.json`` of ``directory`` lists against its sha256
    (the driver does this before resuming, so a corrupt file is named before any worker starts)."""
    manifests = sorted(directory.glob("manifest-rank*.json"))
    if not manifests:
        raise CorruptCheckpointError(f"{directory}: no manifest-rank<r>.json (incomplete checkpoint)")
    for manifest_path in manifests:
        _check_files(directory, manifest_path, list(_read_manifest(manifest_path)))


def _partial_model_files(directory: Path) -> list[str]:
    """The ``.safetensors`` files besides ``model.safetensors`` that rank 0's manifest lists."""
    manifest = _read_manifest(directory / "manifest-rank0.json")
    return sorted(n for n in manifest if n.endswith(".safetensors") and n != MODEL_FILE)


def _verify(directory: Path, rank: int, names: list[str]) -> None:
    manifest_path = directory / f"manifest-rank{rank}.json"
    if not manifest_path.exists():
        raise CorruptCheckpointError(f"{directory}: missing {manifest_path.name} (incomplete checkpoint)")
    _check_files(directory, manifest_path, names)


def _check_files(directory: Path, manifest_path: Path, names: list[str]) -> None:
    manifest = _read_manifest(manifest_path)
    for name in names:
        if not (directory / name).is_file():
            raise CorruptCheckpointError(f"{directory / name}: listed in {manifest_path.name} but missing")
        if name not in manifest or sha256_file(directory / name) != manifest[name]:
            raise CorruptCheckpointError(f"{directory / name}: sha256 does not match {manifest_path.name}; the file is corrupt")


def _read_manifest(path: Path) -> dict[str, str]:
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(f"{path}: not a readable manifest ({exc}); the file is corrupt") from None
    if not isinstance(manifest, dict):
        raise CorruptCheckpointError(f"{path}: not a manifest (expected file name -> sha256)")
    return manifest


def latest_checkpoint(checkpoints_dir: Path, ranks: int | None = None) -> Path | None:
    """The complete ``task-<t>`` directory with the largest ``t``, or None.

    Complete: ``manifest-rank<r>.json`` of rank 0 (and of every rank below ``ranks`` when given),
    and every file those manifests list present. Ray Train persists each rank's files separately,
    so a run killed while a checkpoint was being persisted leaves one without some rank's files;
    Ray never registered it, and the one before it is the last finished task. A present file whose
    sha256 differs is corruption, not incompleteness: it is named when the checkpoint is read.
    """
    numbered = [(int(p.name.removeprefix("task-")), p) for p in checkpoints_dir.glob("task-*")
                if p.name.removeprefix("task-").isdigit()]
    for _, path in sorted(numbered, reverse=True):
        if _complete(path, ranks or 1):
            return path
    return None


def _complete(directory: Path, ranks: int) -> bool:
    manifests = [directory / f"manifest-rank{r}.json" for r in range(ranks)]
    if not all(m.is_file() for m in manifests):
        return False
    try:
        return all((directory / name).is_file() for m in manifests for name in _read_manifest(m))
    except CorruptCheckpointError:
        return True  # an unreadable manifest is corruption: reading the checkpoint names it
