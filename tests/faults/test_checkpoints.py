"""Checkpoints: committed last, sha256-checked, no pickle of untrusted objects; torn ones set aside.

Unit level through ``write_checkpoint``/``restore_checkpoint``/``latest_checkpoint`` (a local
directory, and the moto S3 server for an object store): a checkpoint counts only once every rank's
manifest (its commit marker, written after Ray Train persisted the files) is there and every listed
file has its size and sha256; a torn or mismatched one is renamed ``<name>.torn-<time>``, reported,
and the previous one used. Then two runs in this process (Ray Train local mode, the fault tests'
2-task experiment): the last checkpoint's ``model.safetensors`` cut short after its manifest was
written, and a full disk (ENOSPC) half-way through persisting it; each resumes from ``task-1`` and
ends as the uninterrupted reference run.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from faultkit import STEPS, assert_same_final_model, attempts, fault_experiment, read_events
from local_sequence import run_local
from medcl.config import validate_experiment
from medcl.engine.checkpoint import (CorruptCheckpointError, SequenceState, checkpoint_problem, commit_checkpoint,
                                     latest_checkpoint, restore_checkpoint, verify_checkpoint, write_checkpoint)
from medcl.engine.midtask import latest_midtask
from s3server import BUCKET, s3  # noqa: F401  (s3: the moto server fixture)


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
    """Ray Train persists each rank's files separately: a kill in between leaves rank 1's manifest missing."""
    _write(tmp_path / "task-1")
    write_checkpoint(tmp_path / "task-2", rank=0, state=_state(), model=_model(), strategy_state={})
    assert latest_checkpoint(tmp_path, ranks=2) == tmp_path / "task-1"
    assert latest_checkpoint(tmp_path) == tmp_path / "task-2"  # rank 0's view alone
    (tmp_path / "task-2" / "model.safetensors").unlink()  # rank 0's own copy gone
    assert latest_checkpoint(tmp_path) == tmp_path / "task-1"


def test_files_reported_but_not_committed_are_not_a_checkpoint(tmp_path):
    """``commit=False`` (what the loop hands to ``ray.train.report``) writes no manifest: until the
    rank commits after the report, the directory is not a checkpoint, whatever files it holds."""
    manifest = write_checkpoint(tmp_path / "task-1", rank=0, state=_state(), model=_model(), strategy_state={},
                                commit=False)
    assert not list((tmp_path / "task-1").glob("manifest-*"))
    assert latest_checkpoint(tmp_path) is None
    assert "no manifest-rank0.json" in checkpoint_problem(tmp_path / "task-1")
    commit_checkpoint(tmp_path / "task-1", 0, manifest)
    assert latest_checkpoint(tmp_path) == tmp_path / "task-1"
    sizes = {name: entry["bytes"] for name, entry in manifest.items()}
    assert sizes == {p.name: p.stat().st_size for p in (tmp_path / "task-1").iterdir() if "manifest" not in p.name}


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_a_torn_or_mismatched_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, damage, capsys):
    """A complete manifest beside a cut-short or changed file (or a garbled manifest): never chosen;
    the driver's scan renames it ``task-2.torn-<time>`` (nothing deleted), reports it on stderr and
    in events.jsonl, and picks ``task-1``."""
    _write(tmp_path / "checkpoints" / "task-1")
    torn = tmp_path / "checkpoints" / "task-2"
    _write(torn)
    if damage == "truncate":
        data = (torn / "model.safetensors").read_bytes()
        (torn / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        _flip_byte(torn / "strategy-rank1.pt")
    else:
        (torn / "manifest-rank1.json").write_text("{not json")
    named = {"truncate": "model.safetensors", "flip": "strategy-rank1.pt", "manifest": "manifest-rank1.json"}[damage]
    assert latest_checkpoint(tmp_path / "checkpoints", ranks=2) == tmp_path / "checkpoints" / "task-1"
    assert torn.is_dir(), "a plain scan moves nothing"
    events = tmp_path / "events.jsonl"
    found = latest_checkpoint(tmp_path / "checkpoints", ranks=2, set_aside_torn=True, events=events)
    assert found == tmp_path / "checkpoints" / "task-1"
    assert not torn.exists()
    [moved] = (tmp_path / "checkpoints").glob("task-2.torn-*")
    assert (moved / named).is_file(), "the torn checkpoint is kept, renamed"
    [event] = [json.loads(line) for line in events.read_text().splitlines()]
    assert event["kind"] == "checkpoint_set_aside" and event["checkpoint"] == "task-2" and event["moved_to"] == moved.name
    assert named in event["reason"]
    assert f"checkpoint {torn} set aside as {moved.name}" in capsys.readouterr().err
    assert latest_checkpoint(tmp_path / "checkpoints", ranks=2, set_aside_torn=True) == found  # nothing else moves


def test_a_torn_mid_task_checkpoint_is_set_aside(tmp_path):
    for step in (3, 6):
        _write(tmp_path / "checkpoints" / f"task-1-step-{step}")
    (tmp_path / "checkpoints" / "task-1-step-6" / "manifest-rank1.json").unlink()  # rank 1 never committed
    assert latest_midtask(tmp_path / "checkpoints", 1, ranks=2).name == "task-1-step-3"
    assert latest_midtask(tmp_path / "checkpoints", 1, ranks=2, set_aside_torn=True).name == "task-1-step-3"
    assert [p.name.split(".torn-")[0] for p in (tmp_path / "checkpoints").glob("*.torn-*")] == ["task-1-step-6"]
    assert "checkpoint_set_aside" in (tmp_path / "events.jsonl").read_text()


def test_a_torn_checkpoint_in_an_object_store_is_set_aside_marker_first(s3, tmp_path):
    """No rename on an object store: each object is moved, the manifests first; the checkpoint
    written before it is used."""
    from medcl import appends, storage
    from medcl.storage import Location

    checkpoints = Location(f"s3://{BUCKET}/torn-{os.urandom(4).hex()}/checkpoints")
    for t in (1, 2):
        _write(tmp_path / f"task-{t}")
        storage.upload_dir(tmp_path / f"task-{t}", checkpoints / f"task-{t}")
    data = (tmp_path / "task-2" / "model.safetensors").read_bytes()
    storage.write_bytes(checkpoints / "task-2" / "model.safetensors", data[:100])  # a cut-short upload
    found = latest_checkpoint(checkpoints, ranks=2, set_aside_torn=True, events=checkpoints.parent / "events.jsonl")
    assert found == checkpoints / "task-1"
    assert not storage.exists(checkpoints / "task-2" / "manifest-rank0.json")
    [moved] = list(checkpoints.glob("task-2.torn-*"))
    assert storage.read_bytes(moved / "model.safetensors") == data[:100]
    assert sorted(storage.listdir(moved)) == sorted(p.name for p in (tmp_path / "task-2").iterdir())
    assert "task-2.torn-" in appends.read_appended(checkpoints.parent / "events.jsonl")


def test_ray_trains_record_naming_a_set_aside_checkpoint_is_itself_set_aside(tmp_path):
    """Ray Train V2 restores its record of the run's checkpoints when the same run starts again and
    refuses the run directory when one it lists is gone: the driver keeps the record under another
    name first (only when it is stale), so the next ``medcl run`` starts and resumes from disk."""
    from medcl.engine.resume import RAY_RECORD, drop_stale_ray_record

    checkpoints = tmp_path / "checkpoints"
    for t in (0, 1, 2):
        (checkpoints / f"task-{t}").mkdir(parents=True)
    record = {"checkpoint_results": [{"checkpoint_dir_name": f"task-{t}"} for t in (0, 1, 2)],
              "latest_checkpoint_result": {"checkpoint_dir_name": "task-2"}}
    (checkpoints / RAY_RECORD).write_text(json.dumps(record))
    assert drop_stale_ray_record(checkpoints) is None and (checkpoints / RAY_RECORD).is_file()
    (checkpoints / "task-2").rename(checkpoints / "task-2.torn-x")
    moved = drop_stale_ray_record(checkpoints)
    assert not (checkpoints / RAY_RECORD).exists() and json.loads(moved.read_text()) == record
    assert drop_stale_ray_record(checkpoints) is None


def test_a_torn_pretraining_checkpoint_is_set_aside(tmp_path):
    from medcl.pretrain import checkpoint as pretrain_ckpt

    model = _model()
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for step in (2, 4):
        pretrain_ckpt.write_checkpoint(tmp_path / "checkpoints" / f"step-{step}",
                                       pretrain_ckpt.PretrainState(total_steps=4, step=step), model, optimizer, scheduler)
    manifest = pretrain_ckpt.write_checkpoint(tmp_path / "checkpoints" / "step-6", pretrain_ckpt.PretrainState(
        total_steps=8, step=6), model, optimizer, scheduler, commit=False)
    assert set(manifest) == {"model.safetensors", "optimizer.pt", "state.json"}
    _flip_byte(tmp_path / "checkpoints" / "step-4" / "optimizer.pt")
    assert pretrain_ckpt.latest(tmp_path / "checkpoints").name == "step-2"
    found = pretrain_ckpt.latest(tmp_path / "checkpoints", set_aside_torn=True, events=tmp_path / "events.jsonl")
    assert found.name == "step-2" and pretrain_ckpt.read_state(found).step == 2
    assert sorted(p.name.split(".torn-")[0] for p in (tmp_path / "checkpoints").glob("*.torn-*")) == ["step-4", "step-6"]


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


def _last_checkpoint_torn(run_dir: Path) -> Path:
    """The one set-aside checkpoint of the run."""
    [moved] = (run_dir / "checkpoints").glob("task-*.torn-*")
    return moved


def _assert_resumed_from_task_1(result, reference, capsys, reason: str) -> None:
    """The resumed run set ``task-2`` aside (reported), restored ``task-1``, trained task 2 once
    more (its 10 steps are what was lost) and ended as the uninterrupted reference run."""
    assert result.resumed_after == 1 and result.state.stages_done == 2
    moved = _last_checkpoint_torn(result.run.path)
    assert moved.name.startswith("task-2.torn-")
    err = capsys.readouterr().err
    assert f"set aside as {moved.name}" in err and reason in err
    events = read_events(result.run.path)
    [aside] = [e for e in events if e["kind"] == "checkpoint_set_aside"]
    assert aside["checkpoint"] == "task-2" and reason in aside["reason"]
    assert [e["stage"] for e in events if e["kind"] == "stage_start"] == [1, 2, 2]
    assert [e["step"] for e in attempts(events, stage=2)[-1]] == list(range(1, STEPS + 1))
    assert [e["after"] for e in events if e["kind"] == "row"] == ["zero_shot", "xray", "ultrasound", "ultrasound"]
    assert result.state.rows == reference.state.rows
    assert_same_final_model(result.run.path, reference.run.path, atol=1e-6)


def test_a_truncated_model_beside_its_manifest_resumes_from_the_previous_checkpoint(ray_session, reference_run,
                                                                                      tmp_path, capsys):
    """A finished run whose last checkpoint's ``model.safetensors`` was cut short after its manifest
    was written (a lost node or full disk on NFS): before, every resume chose it and failed on its
    sha256 (``CorruptCheckpointError``); now it is set aside and task 2 is trained again from ``task-1``."""
    config = validate_experiment(fault_experiment(tmp_path, "torn"))
    run_local(config)
    model = config.run_dir / "checkpoints" / "task-2" / "model.safetensors"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 3])
    assert (model.parent / "manifest-rank0.json").is_file()
    capsys.readouterr()
    result = run_local(config, fresh=False)
    _assert_resumed_from_task_1(result, reference_run, capsys, "model.safetensors")
    assert (_last_checkpoint_torn(result.run.path) / "model.safetensors").read_bytes() == data[: len(data) // 3]


def test_a_full_disk_while_a_checkpoint_is_persisted_resumes_from_the_previous_one(ray_session, reference_run,
                                                                                    tmp_path, monkeypatch, capsys):
    """The storage fills while ``task-2`` is being persisted: ``state.json`` lands, ``model.safetensors``
    stops half-way with ENOSPC, the run fails. The rank never committed (no manifest), so the resume
    sets the directory aside and trains task 2 again from ``task-1``."""
    from medcl import storage

    upload = storage.upload_dir

    def full_disk(local, destination):
        if Path(str(destination)).name != "task-2":
            return upload(local, destination)
        Path(destination).mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(local) / "state.json", Path(destination) / "state.json")
        data = (Path(local) / "model.safetensors").read_bytes()
        with open(Path(destination) / "model.safetensors", "wb") as handle:
            handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(destination) / "model.safetensors"))

    config = validate_experiment(fault_experiment(tmp_path, "full-disk"))
    monkeypatch.setattr(storage, "upload_dir", full_disk)
    with pytest.raises(Exception, match="No space left on device"):
        run_local(config)
    monkeypatch.setattr(storage, "upload_dir", upload)
    assert sorted(p.name for p in (config.run_dir / "checkpoints" / "task-2").iterdir()) == ["model.safetensors",
                                                                                             "state.json"]
    capsys.readouterr()
    result = run_local(config, fresh=False)
    _assert_resumed_from_task_1(result, reference_run, capsys, "no manifest-rank0.json")
