"""Sequence checkpoints at task boundaries: model + strategy state + matrix so far, committed and sha256-checked.

A checkpoint directory ``task-<t>`` (t = stages finished; 0 = only the zero-shot row) holds
``state.json`` (progress and matrix rows), ``model.safetensors`` (t >= 1), and per rank
``strategy-rank<r>.pt`` and ``manifest-rank<r>.json`` (size in bytes and sha256 of each file that
rank wrote). Every rank writes its data files into its own temporary directory and Ray Train
persists them all into one directory, file by file and in no set order, with no temporary name.

Commit: a rank's ``manifest-rank<r>.json`` is its commit marker. It is *not* among the files Ray
Train persists: the rank writes it after ``ray.train.report`` returned (its files are then all in
place), atomically (local disk and NFS: a temporary name, then a rename; object store: one PUT,
which a reader sees whole or not at all). A checkpoint is valid when the manifest of every rank is
there and every file each lists has its size and sha256 (:func:`checkpoint_problem`). A kill or a
full disk while Ray persists leaves a directory without some manifest; a file cut short or changed
after its manifest was written fails the size or sha256 check. At resume such a checkpoint is set
aside (:func:`set_aside`: renamed ``task-<t>.torn-<UTC time>``, reported on stderr and in
``events.jsonl``; nothing is deleted) and the previous valid one is used.

Loading verifies the manifest, so a corrupted file is named, never silently used; strategy state
is read with ``torch.load(weights_only=True)`` (no pickle of arbitrary objects).
"""
from __future__ import annotations

import json
import pickle
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from medcl.confine import inside_place
from medcl import storage
from medcl.errors import MedclError
from medcl.hashing import sha256_file
from medcl.models import load_weights, save_weights
from medcl.storage import is_remote, local_copy
from medcl.models.weights import describe_mismatch
from medcl.paths import OutsideRoot

STATE_FILE, MODEL_FILE = "state.json", "model.safetensors"
TORN = ".torn-"  # set-aside checkpoints: <name>.torn-<UTC time>


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
    peak_memory: list[dict] = field(default_factory=list)  # per stage: medcl.engine.memory.peak_memory (rank 0)
    mid_step: int = 0  # steps of stage stages_done + 1 done: > 0 only in a mid-task checkpoint (midtask.py)

    @property
    def stages_done(self) -> int:
        return len(self.rows)


def write_checkpoint(directory: Path, *, rank: int, state: SequenceState, model: torch.nn.Module | None,
                     strategy_state: dict, model_files: dict[str, dict[str, torch.Tensor]] | None = None,
                     commit: bool = True) -> dict:
    """Write this rank's part of a checkpoint into ``directory``; ``model_files`` (file name ->
    tensors by state-dict name, see ``Strategy.model_files``) are written by rank 0 beside or
    instead of the whole ``model``. Returns the rank's manifest (file name -> size and sha256);
    ``commit`` writes it too, last. A checkpoint handed to ``ray.train.report`` is written with
    ``commit=False`` and committed after the report (:func:`commit_checkpoint`)."""
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
    manifest = describe_files(directory, written)
    if commit:
        commit_checkpoint(directory, rank, manifest)
    return manifest


def describe_files(directory, names: list[str]) -> dict[str, dict]:
    """``{name: {"bytes": size, "sha256": hex}}`` of files of ``directory`` (a manifest's entries)."""
    return {name: {"bytes": _size(directory / name), "sha256": sha256_file(directory / name)} for name in names}


def commit_checkpoint(directory, rank: int, manifest: dict) -> None:
    """Write ``manifest-rank<rank>.json`` into ``directory`` (a local path or an object-store
    :class:`~medcl.storage.Location`), atomically: the rank's commit marker, written after every
    file it lists is in place."""
    storage.write_text(directory / manifest_name(rank), json.dumps(manifest, indent=1))


def manifest_name(rank: int) -> str:
    return f"manifest-rank{rank}.json"


def report_checkpoint(metrics: dict, directory: Path, name: str, destination, *, rank: int, manifest: dict | None,
                      persist: bool = False) -> None:
    """``ray.train.report`` the checkpoint in the temporary ``directory`` as ``name`` (Ray Train
    persists it to ``destination``, ``<run>/checkpoints/<name>``), then commit this rank's part there
    (``manifest``: what :func:`write_checkpoint` returned with ``commit=False``; None: this rank
    wrote no files). ``persist``: copy the files to ``destination`` here first (Ray Train's local
    mode keeps a reported checkpoint in memory only)."""
    import ray.train

    if persist:
        storage.upload_dir(directory, destination)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)), checkpoint_dir_name=name)
    if manifest is not None:
        commit_checkpoint(destination, rank, manifest)


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
    """Check every file that every ``manifest-rank<r>.json`` of ``directory`` lists against its size
    and sha256 (the driver does this before resuming, so a corrupt file is named before any worker starts)."""
    manifests = sorted(directory.glob("manifest-rank*.json"))
    if not manifests:
        raise CorruptCheckpointError(f"{directory}: no manifest-rank<r>.json (incomplete checkpoint)")
    for manifest_path in manifests:
        _check_files(directory, manifest_path, list(_read_manifest(manifest_path)))


def checkpoint_problem(directory, ranks: int = 1, manifests: tuple[str, ...] | None = None) -> str | None:
    """Why ``directory`` is not a committed, intact checkpoint (None when it is): a missing commit
    marker (``manifests``, by default ``manifest-rank<r>.json`` for each of ``ranks`` ranks), an
    unreadable one, or a listed file missing, of another size, or with another sha256. A place that
    vanished while being checked (set aside by another rank) is a problem too, never an error."""
    try:
        for name in manifests or tuple(manifest_name(r) for r in range(ranks)):
            if not (directory / name).is_file():
                return f"no {name}: not committed (stopped while being written)"
            _check_files(directory, directory / name, list(_read_manifest(directory / name)))
    except CorruptCheckpointError as exc:
        return str(exc)
    except FileNotFoundError as exc:
        return f"{exc} (gone while being checked)"
    return None


def _partial_model_files(directory: Path) -> list[str]:
    """The ``.safetensors`` files besides ``model.safetensors`` that rank 0's manifest lists."""
    manifest = _read_manifest(directory / "manifest-rank0.json")
    return sorted(n for n in manifest if n.endswith(".safetensors") and n != MODEL_FILE)


def _verify(directory: Path, rank: int, names: list[str]) -> None:
    manifest_path = directory / f"manifest-rank{rank}.json"
    if not manifest_path.exists():
        raise CorruptCheckpointError(f"{directory}: missing {manifest_path.name} (incomplete checkpoint)")
    _check_files(directory, manifest_path, names)


def check_files(directory, manifest_path, names: list[str]) -> None:
    """Each of ``names`` is present with the size and sha256 ``manifest_path`` lists, else
    :class:`CorruptCheckpointError` naming the file (a manifest entry may be a bare sha256, as
    written before sizes were listed)."""
    manifest = _read_manifest(manifest_path)
    for name in names:
        if not (directory / name).is_file():
            raise CorruptCheckpointError(f"{directory / name}: listed in {manifest_path.name} but missing")
        entry = manifest.get(name)
        if entry is None:
            raise CorruptCheckpointError(f"{directory / name}: not listed in {manifest_path.name}")
        expected = entry.get("bytes") if isinstance(entry, dict) else None
        size = _size(directory / name)
        if expected is not None and size != expected:  # another size: another sha256, without reading it
            raise CorruptCheckpointError(f"{directory / name}: sha256 does not match {manifest_path.name}; the file is "
                                         f"corrupt ({size} bytes, {expected} listed: cut short by a torn write?)")
        digest = entry.get("sha256") if isinstance(entry, dict) else entry
        if sha256_file(directory / name) != digest:
            raise CorruptCheckpointError(f"{directory / name}: sha256 does not match {manifest_path.name}; the file is corrupt")


_check_files = check_files


def _read_manifest(path) -> dict:
    try:
        manifest = json.loads(storage.read_text(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(f"{path}: not a readable manifest ({exc}); the file is corrupt") from None
    if not isinstance(manifest, dict) or not all(isinstance(v, (str, dict)) for v in manifest.values()):
        raise CorruptCheckpointError(f"{path}: not a manifest (expected file name -> size and sha256)")
    folder = storage.place(path).parent
    for name in manifest:  # every listed file inside the checkpoint: a torn or hostile manifest reads nothing else
        try:
            inside_place(folder, name)
        except OutsideRoot as exc:
            raise CorruptCheckpointError(f"{path}: entry {name!r} is not a file inside {folder} ({exc}); the "
                                         "manifest is corrupt or hostile") from None
    return manifest


def _size(where) -> int:
    filesystem, path = storage.resolve(where)
    info = filesystem.get_file_info(path)
    if info.type.name != "File":
        raise FileNotFoundError(f"{where}: no such file")
    return info.size


def set_aside(directory, reason: str, *, events=None):
    """Rename the torn or mismatched checkpoint ``directory`` to ``<name>.torn-<UTC time>`` beside it
    (nothing is deleted; no resume picks it again) and report it: a warning on stderr and, with
    ``events`` (a run's ``events.jsonl``), a ``checkpoint_set_aside`` event. Local disk and NFS: one
    rename. Object store (no rename): each object is moved, the commit markers first, so the
    checkpoint stops being valid before anything else moves. Returns the new place, or None when
    another process moved it first."""
    stamp = f"{directory.name}{TORN}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    target, count = directory.parent / stamp, 1
    while storage.exists(target):
        target, count = directory.parent / f"{stamp}-{count}", count + 1
    try:
        if is_remote(directory):
            _move_objects(directory, target)
        else:
            Path(directory).rename(target)
    except FileNotFoundError:
        return None
    print(f"medcl: warning: checkpoint {directory} set aside as {target.name}: {reason}; resuming from the "
          "previous valid checkpoint", file=sys.stderr, flush=True)
    if events is not None:
        from medcl.rundir import append_event

        append_event(events, {"kind": "checkpoint_set_aside", "checkpoint": directory.name, "moved_to": target.name,
                              "reason": reason, "time": time.time()})
    return target


def _move_objects(directory, target) -> None:
    names = storage.listdir(directory)
    if not names:
        raise FileNotFoundError(str(directory))
    for name in sorted(names, key=lambda n: not n.startswith("manifest")):  # commit markers first
        source = directory / name
        if storage.is_dir(source):
            _move_objects(source, target / name)
        else:
            storage.move(source, target / name)


def latest_checkpoint(checkpoints_dir: Path, ranks: int | None = None, *, set_aside_torn: bool = False,
                      events=None) -> Path | None:
    """The valid ``task-<t>`` directory with the largest ``t`` (:func:`checkpoint_problem` with
    ``ranks``, default 1: rank 0's manifest), or None. Newer ones that are not valid are skipped
    and, with ``set_aside_torn`` (one process at a time: the driver before Ray starts, rank 0 of a
    worker group), set aside (:func:`set_aside`, ``events``: where to record it)."""
    numbered = [(int(p.name.removeprefix("task-")), p) for p in checkpoints_dir.glob("task-*")
                if p.name.removeprefix("task-").isdigit()]
    for _, path in sorted(numbered, key=lambda item: item[0], reverse=True):
        problem = checkpoint_problem(path, ranks or 1)
        if problem is None:
            return path
        if set_aside_torn:
            set_aside(path, problem, events=events)
    return None
