"""Where a sweep keeps its study and outputs (sweep/study_store.py, moto S3 on 127.0.0.1): the study
URL for each kind of ``output_dir``, the object-store study's working copy fetched, uploaded and
removed around an invocation (also when it fails, and continued when a killed driver left it), and
a node-local ``output_dir`` refused on a multi-node cluster before any trial (the cluster faked:
two alive nodes, one not seeing the directory)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, s3  # noqa: E402,F401  (s3: the moto server fixture)

from medcl import storage  # noqa: E402
from medcl.storage import Location  # noqa: E402
from medcl.sweep import validate_sweep  # noqa: E402
from medcl.sweep.study import SweepError, open_study  # noqa: E402
from medcl.sweep.study_store import staged_study, staging_file  # noqa: E402

BASE = {"benchmark": {"name": "synthmed", "num_tasks": 2}, "train": {"steps_per_task": 5}}


def sweep_at(output_dir, **fields):
    return validate_sweep({"name": "st", "experiment": BASE, "output_dir": str(output_dir),
                           "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}, **fields})


def test_study_url_for_each_kind_of_output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    assert sweep_at(tmp_path).storage_url == f"sqlite:///{tmp_path / 'st' / 'study.db'}"
    remote = sweep_at("s3://bucket/sweeps")
    assert remote.sweep_dir == Location("s3://bucket/sweeps/st")
    assert remote.storage_url == f"sqlite:///{staging_file('s3://bucket/sweeps/st', 'st')}"
    assert str(staging_file("s3://bucket/sweeps/st", "st")).startswith(str(tmp_path / "cache" / "sweeps" / "st-"))
    given = "postgresql://medcl@db/sweeps"
    assert sweep_at("s3://bucket/sweeps", storage=given).storage_url == given


def test_an_object_store_study_is_fetched_uploaded_and_its_working_copy_removed(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    sweep = sweep_at(f"s3://{BUCKET}/sweeps-staged")
    local = staging_file(str(sweep.sweep_dir), sweep.name)
    with staged_study(sweep):
        open_study(sweep, resume=False, fresh=False, enqueue=[{"train.lr": 1e-3}]).ask()
    assert storage.is_file(sweep.sweep_dir / "study.db") and not local.exists()
    with pytest.raises(SweepError, match="already has 1 trial"):  # the study came back from the bucket
        with staged_study(sweep):
            open_study(sweep, resume=False, fresh=False, enqueue=[])
    assert not local.exists()  # uploaded on the error too
    with staged_study(sweep):
        study = open_study(sweep, resume=True, fresh=False, enqueue=[])
        study.ask()
        assert len(study.trials) == 2
    storage.write_text(sweep.sweep_dir / "trials" / "trial-0000" / "matrix.csv", "old")
    with staged_study(sweep):  # --fresh: the study and the sweep's objects start over
        assert open_study(sweep, resume=False, fresh=True, enqueue=[]).trials == []
    assert storage.listdir(sweep.sweep_dir) == ["study.db"]


def test_a_working_copy_left_by_a_killed_driver_is_continued(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    sweep = sweep_at(f"s3://{BUCKET}/sweeps-killed")
    local = staging_file(str(sweep.sweep_dir), sweep.name)
    local.parent.mkdir(parents=True)
    local.write_bytes(b"")  # an empty SQLite file: a new study
    with staged_study(sweep):
        open_study(sweep, resume=False, fresh=False, enqueue=[]).ask()
    assert "continuing from the study" in capsys.readouterr().out
    assert storage.read_bytes(sweep.sweep_dir / "study.db")[:15] == b"SQLite format 3"


def test_a_node_local_output_dir_is_refused_on_a_multi_node_cluster(tmp_path, monkeypatch):
    from medcl.engine import shared
    from medcl.sweep.driver import _check_shared_output

    monkeypatch.setattr(shared, "alive_nodes", lambda: [{"NodeID": "a" * 16}, {"NodeID": "b" * 16}])
    monkeypatch.setattr(shared, "_nodes_not_seeing", lambda marker, nodes: ["10.0.0.3 (bbbbbbbb)"])
    with pytest.raises(SweepError, match=f"output_dir: {tmp_path} is a node-local path") as raised:
        _check_shared_output(sweep_at(tmp_path))
    assert "e.g. --set output_dir=s3://BUCKET/sweeps" in str(raised.value) and "10.0.0.3" in str(raised.value)
    _check_shared_output(sweep_at("s3://bucket/sweeps"))  # an object store is shared: not probed
