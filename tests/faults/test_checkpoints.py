"""Checkpoints: sha256-checked files, no pickle of untrusted objects, corruption named at resume time.

Unit level through ``write_checkpoint``/``restore_checkpoint``; then a run directory whose last
checkpoint has one flipped byte, resumed through ``run_experiment`` and the CLI: the driver checks
every rank's manifest before starting Ray, so the error names the file and costs no worker start.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from medcl.cli import main
from medcl.config import validate_experiment
from medcl.engine.checkpoint import (CorruptCheckpointError, SequenceState, latest_checkpoint, restore_checkpoint,
                                     verify_checkpoint, write_checkpoint)
from medcl.engine.runner import prepare_run_dir, run_experiment


def _state(done: int = 1) -> SequenceState:
    return SequenceState(task_names=["xray", "ultrasound"], stage_names=["xray", "ultrasound"],
                         zero_shot=[20.0, 20.0], rows=[[60.0, 20.0]][:done], steps=[5][:done])


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3)


def _write(directory: Path, workers: int = 2) -> torch.nn.Module:
    model = _model()
    for rank in range(workers):
        write_checkpoint(directory, rank=rank, state=_state(), model=model,
                         strategy_state={"anchor": torch.arange(3.0) + rank, "count": rank})
    return model


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip_restores_model_and_each_ranks_state(tmp_path):
    saved = _write(tmp_path)
    verify_checkpoint(tmp_path)
    for rank in (0, 1):
        model = _model(seed=1)
        state, strategy_state = restore_checkpoint(tmp_path, rank=rank, model=model)
        assert state.rows == [[60.0, 20.0]] and strategy_state["count"] == rank
        assert torch.equal(model.weight, saved.weight)


@pytest.mark.parametrize("name,rank", [("model.safetensors", 0), ("state.json", 0), ("strategy-rank1.pt", 1)])
def test_one_flipped_byte_is_named(tmp_path, name, rank):
    _write(tmp_path)
    _flip_byte(tmp_path / name)
    for check in (lambda: verify_checkpoint(tmp_path), lambda: restore_checkpoint(tmp_path, rank=rank, model=_model())):
        with pytest.raises(CorruptCheckpointError, match="sha256 does not match") as excinfo:
            check()
        assert str(tmp_path / name) in str(excinfo.value)


def test_a_missing_file_or_garbled_manifest_is_named(tmp_path):
    _write(tmp_path)
    (tmp_path / "strategy-rank1.pt").unlink()
    with pytest.raises(CorruptCheckpointError, match="strategy-rank1.pt"):
        verify_checkpoint(tmp_path)
    (tmp_path / "manifest-rank1.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(CorruptCheckpointError, match="manifest-rank1.json: not a readable manifest"):
        verify_checkpoint(tmp_path)


def test_a_checkpoint_killed_while_persisting_is_not_resumed_from(tmp_path):
    """Ray Train persists each rank's files separately: a kill in between leaves rank 1's missing."""
    _write(tmp_path / "task-1")
    write_checkpoint(tmp_path / "task-2", rank=0, state=_state(), model=_model(), strategy_state={})
    assert latest_checkpoint(tmp_path, ranks=2) == tmp_path / "task-1"
    assert latest_checkpoint(tmp_path) == tmp_path / "task-2"  # rank 0's view alone
    (tmp_path / "task-2" / "model.safetensors").unlink()  # rank 0's own copy cut short
    assert latest_checkpoint(tmp_path) == tmp_path / "task-1"
    _flip_byte(tmp_path / "task-1" / "model.safetensors")  # corrupt, not incomplete: still chosen, then named
    assert latest_checkpoint(tmp_path, ranks=2) == tmp_path / "task-1"
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        verify_checkpoint(tmp_path / "task-1")


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: the kind of object a hostile checkpoint holds."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_pickled_object_in_strategy_state_is_refused_naming_the_file(tmp_path):
    checkpoint, marker = tmp_path / "task-1", tmp_path / "payload-ran"
    _write(checkpoint)
    strategy_file = checkpoint / "strategy-rank0.pt"
    torch.save({"anchor": torch.zeros(3), "hook": _Payload(marker)}, strategy_file)
    # the attacker rewrites the manifest too, so the sha256 check passes and only weights_only stands
    manifest_path = checkpoint / "manifest-rank0.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["strategy-rank0.pt"] = hashlib.sha256(strategy_file.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    verify_checkpoint(checkpoint)
    with pytest.raises(CorruptCheckpointError, match="weights_only=True") as excinfo:
        restore_checkpoint(checkpoint, rank=0, model=_model())
    assert str(strategy_file) in str(excinfo.value)
    assert not marker.exists(), "the pickled payload must not run"
    torch.load(strategy_file, weights_only=False)  # the payload is real: a full unpickle runs it
    assert marker.exists()


def _config(tmp_path):
    return {"name": "corrupt", "seed": 0, "output_dir": str(tmp_path),
            "benchmark": {"name": "synthmed", "num_tasks": 2, "train_per_class": 2, "val_per_class": 1,
                          "test_per_class": 2},
            "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
            "train": {"workers": 2, "batch_size": 8, "steps_per_task": 5}}


@pytest.mark.parametrize("name", ["model.safetensors", "strategy-rank1.pt"])
def test_corrupt_checkpoint_is_named_when_resuming(tmp_path, name, capsys):
    raw = _config(tmp_path)
    config = validate_experiment(raw)
    run = prepare_run_dir(config, fresh=False)  # as a run killed after task 1 leaves it
    write_checkpoint(run.checkpoints / "task-0", rank=0, state=_state(done=0), model=None, strategy_state={})
    write_checkpoint(run.checkpoints / "task-0", rank=1, state=_state(done=0), model=None, strategy_state={})
    _write(run.checkpoints / "task-1")
    _flip_byte(run.checkpoints / "task-1" / name)
    with pytest.raises(CorruptCheckpointError) as excinfo:
        run_experiment(config)
    assert str(run.checkpoints / "task-1" / name) in str(excinfo.value)
    experiment = tmp_path / "corrupt.yaml"
    experiment.write_text(yaml.safe_dump(raw))
    assert main(["run", str(experiment), "--no-dashboard"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medcl: error: ") and f"task-1/{name}" in err and "Traceback" not in err
    assert not (run.checkpoints / "task-2").exists()
