"""medcl.storage against a local directory and a real S3 API (moto_server on 127.0.0.1, started here):
the same operations, the run-directory helpers, checkpoint scanning, Ray Train's storage keywords,
and a run directory prepared, resumed and reported in the object store."""
from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, s3  # noqa: E402,F401  (s3: the moto server fixture)

from medcl import appends, storage  # noqa: E402
from medcl.config import validate_experiment  # noqa: E402
from medcl.engine.checkpoint import (CorruptCheckpointError, SequenceState, latest_checkpoint, read_state,  # noqa: E402
                                     restore_checkpoint, verify_checkpoint, write_checkpoint)
from medcl.rundir import RunDir, append_event, read_events, read_matrix_csv, write_json, write_matrix_csv  # noqa: E402
from medcl.storage import Location, StorageError, place  # noqa: E402


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A fresh empty place: a local directory, or a prefix of the moto bucket."""
    if request.param == "local":
        return tmp_path / "store"
    request.getfixturevalue("s3")
    return Location(f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}-{os.urandom(4).hex()}")


def test_place_keeps_local_paths_as_paths_and_uris_as_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert place("runs/a") == tmp_path / "runs" / "a"
    assert place("file:///tmp/x") == Path("/tmp/x")
    loc = place("s3://bucket/runs/")
    assert isinstance(loc, Location) and str(loc / "q" / "matrix.csv") == "s3://bucket/runs/q/matrix.csv"
    assert (loc / "q").name == "q" and (loc / "q").parent == loc
    assert pickle.loads(pickle.dumps(loc / "q")) == loc / "q"
    with pytest.raises(StorageError, match="object store, not a local path"):
        open(loc / "matrix.csv", "w")  # never a local folder named "s3:"


def test_experiment_output_dir_uri_gives_a_location_run_dir():
    config = validate_experiment({"name": "q", "output_dir": "s3://bucket/runs"})
    assert config.output_dir == "s3://bucket/runs" and config.run_dir == Location("s3://bucket/runs/q")


def test_files_directories_and_copies(root, tmp_path):
    storage.write_text(root / "a" / "x.txt", "one\ntwo\n")
    appends.append_text(root / "a" / "new.jsonl", "{}\n")
    appends.append_text(root / "a" / "new.jsonl", "[]\n")  # object store: a part per append (test_event_parts.py)
    assert appends.read_appended(root / "a" / "new.jsonl") == "{}\n[]\n"
    assert storage.is_file(root / "a" / "x.txt") and storage.is_dir(root / "a") and not storage.exists(root / "b")
    appended = "new.jsonl.d" if isinstance(root, Location) else "new.jsonl"
    assert storage.listdir(root / "a") == [appended, "x.txt"] and storage.listdir(root / "missing") == []
    assert [p.name for p in sorted(place(root / "a").glob("*.txt"))] == ["x.txt"]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(root / "a" / "nope")
    with storage.local_copy(root / "a") as local:
        assert sorted(os.listdir(local)) == [appended, "x.txt"] and (local / "x.txt").read_text() == "one\ntwo\n"
    (tmp_path / "up" / "sub").mkdir(parents=True)
    (tmp_path / "up" / "sub" / "f.bin").write_bytes(b"\x00\x01")
    storage.upload_dir(tmp_path / "up", root / "copied")
    assert storage.read_bytes(root / "copied" / "sub" / "f.bin") == b"\x00\x01"
    storage.rmtree(root / "a")
    assert not storage.exists(root / "a") and storage.exists(root / "copied")


def test_move_and_delete_a_file(root, tmp_path):
    storage.write_bytes(root / "tmp" / "x.parquet", b"data")
    storage.move(root / "tmp" / "x.parquet", root / "part-0.parquet")
    assert storage.read_bytes(root / "part-0.parquet") == b"data" and not storage.exists(root / "tmp" / "x.parquet")
    storage.delete(root / "part-0.parquet")
    storage.delete(root / "part-0.parquet")  # already gone: nothing to do
    assert not storage.exists(root / "part-0.parquet")
    other = tmp_path / "local.bin" if isinstance(root, Location) else Location(f"s3://{BUCKET}/x")
    with pytest.raises(StorageError, match="not in the same store"):
        storage.move(root / "a", other)


def test_run_directory_helpers(root):
    run = RunDir(place(root) / "run")
    values = np.array([[20.0, float("nan")], [80.5, 21.25]])
    write_matrix_csv(run.matrix, ["zero_shot", "xray"], ["xray", "us"], values)
    labels, tasks, back = read_matrix_csv(run.matrix)
    assert labels == ["zero_shot", "xray"] and tasks == ["xray", "us"] and np.allclose(back, values, equal_nan=True)
    append_event(run.events, {"kind": "step", "step": 1})
    append_event(run.events, {"kind": "row", "accuracy": np.float32(0.5)})
    assert [e["kind"] for e in read_events(run.events)] == ["step", "row"]
    write_json(run.metrics, {"avg": np.float64(1.5)})
    assert json.loads(storage.read_text(run.metrics)) == {"avg": 1.5}


def _checkpoint(directory: Path, ranks: int, stages: int) -> None:
    state = SequenceState(task_names=["a", "b"], stage_names=["a", "b"], zero_shot=[1.0, 2.0],
                          rows=[[3.0, 4.0]] * stages)
    torch.manual_seed(stages)
    for rank in range(ranks):
        write_checkpoint(directory, rank=rank, state=state, model=torch.nn.Linear(2, 2),
                         strategy_state={"rank": torch.tensor(rank)})


def test_checkpoint_scan_verify_and_restore(root, tmp_path):
    checkpoints = place(root) / "checkpoints"
    for stages, ranks in ((1, 2), (2, 1)):  # task-2 lacks rank 1: persisted only in part
        _checkpoint(tmp_path / f"task-{stages}", ranks, stages)
        storage.upload_dir(tmp_path / f"task-{stages}", checkpoints / f"task-{stages}")
    found = latest_checkpoint(checkpoints, ranks=2)
    assert found == checkpoints / "task-1" and read_state(found).stages_done == 1
    verify_checkpoint(found)
    model = torch.nn.Linear(2, 2)
    state, strategy_state = restore_checkpoint(found, rank=1, model=model)
    torch.manual_seed(1)
    assert state.rows == [[3.0, 4.0]] and int(strategy_state["rank"]) == 1
    assert torch.equal(model.weight, torch.nn.Linear(2, 2).weight)
    storage.write_bytes(found / "model.safetensors", b"corrupt")
    with pytest.raises(CorruptCheckpointError, match="model.safetensors: sha256 does not match"):
        verify_checkpoint(found)


def test_ray_train_storage_keywords(s3, tmp_path):
    from pyarrow import fs

    assert storage.ray_storage(tmp_path / "run") == {"storage_path": str(tmp_path / "run")}
    keywords = storage.ray_storage(Location(f"s3://{BUCKET}/runs/q"))
    assert keywords["storage_path"] == f"{BUCKET}/runs/q" and isinstance(keywords["storage_filesystem"], fs.S3FileSystem)


def test_run_dir_prepared_resumed_refreshed_and_reported_in_s3(s3):
    from medcl.engine.outputs import write_outputs
    from medcl.engine.runner import RunError, prepare_run_dir, write_run_report

    raw = {"name": "s3run", "output_dir": f"s3://{BUCKET}/prepared-{os.urandom(4).hex()}",
           "benchmark": {"name": "synthmed", "num_tasks": 2}, "train": {"steps_per_task": 2}}
    config = validate_experiment(raw)
    run = prepare_run_dir(config, fresh=False)
    assert run.path == Location(f"{raw['output_dir']}/s3run") and run.config.is_file()
    assert prepare_run_dir(config, fresh=False).path == run.path  # same experiment: resumable
    with pytest.raises(RunError, match="changed: seed"):
        prepare_run_dir(validate_experiment({**raw, "seed": 3}), fresh=False)
    storage.write_text(run.checkpoint(1) / "state.json", "{}")
    prepare_run_dir(validate_experiment({**raw, "seed": 3}), fresh=True)
    assert not storage.exists(run.checkpoints)
    state = SequenceState(task_names=["xray", "us"], stage_names=["xray", "us"], zero_shot=[20.0, 20.0],
                          rows=[[90.0, 30.0], [60.0, 95.0]], wall_time_s=[1.0, 1.0], steps=[2, 2])
    metrics = write_outputs(run, state, strategy="finetune", model="medcl-tiny", benchmark="synthmed")
    write_run_report(run)
    assert json.loads(run.metrics.read_text())["last"] == pytest.approx(metrics["last"])
    assert "<html" in run.report.read_text().lower() and "s3run" in run.report.read_text()
    storage.write_text(run.report, "stale")
    from medcl.cli import main

    assert main(["report", str(run.path)]) == 0 and "<html" in run.report.read_text().lower()  # medcl report s3://...


def test_path_arguments_refuse_a_uri_and_take_file_uris(capsys):
    import argparse

    from medcl.cli import main
    from medcl.paths import cli_path

    assert cli_path("file:///tmp/x") == Path("/tmp/x")
    with pytest.raises(argparse.ArgumentTypeError, match="s3://b/corpus: a local path or a shared mount"):
        cli_path("s3://b/corpus")
    with pytest.raises(SystemExit):
        main(["data", "prepare", "medmnist", "--from", "raw", "--out", "s3://b/corpus"])
    assert "--out: s3://b/corpus: a local path or a shared mount" in capsys.readouterr().err


def test_location_arguments_keep_uris_and_resolve_local_paths(tmp_path, monkeypatch):
    from medcl.paths import cli_place

    monkeypatch.chdir(tmp_path)
    assert cli_place("s3://b/corpus") == "s3://b/corpus" and cli_place("gs://b/x/") == "gs://b/x/"
    assert cli_place("corpus") == tmp_path / "corpus" and cli_place("file:///tmp/c") == Path("/tmp/c")


def test_pretrained_weights_in_the_object_store_load_through_the_node_cache(s3, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from medcl.models import ModelLoadError, check_model_source, create_model

    torch.manual_seed(3)
    source = create_model("medcl-tiny").model
    local = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(local))
    uri = f"s3://{BUCKET}/weights-{os.urandom(4).hex()}/w.safetensors"
    storage.write_bytes(uri, local.read_bytes())
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    check_model_source("medcl-tiny", uri)  # the driver checks, downloads nothing
    assert not (tmp_path / "cache").exists()
    torch.manual_seed(0)
    loaded = create_model("medcl-tiny", pretrained=uri).model  # a worker: through this node's cache
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].read_bytes() == local.read_bytes()
    assert storage.cached_file(uri) == cached[0]  # the second worker of the node reuses it
    with pytest.raises(ModelLoadError, match=r"s3://.*missing\.safetensors: no such object"):
        check_model_source("medcl-tiny", f"s3://{BUCKET}/missing.safetensors")
