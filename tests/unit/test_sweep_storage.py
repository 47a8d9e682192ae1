"""Where a sweep keeps its study and outputs (sweep/study_store.py, moto S3 on 127.0.0.1): the study
URL for each kind of ``output_dir``, the object-store study's working copy fetched, uploaded and
removed around an invocation (also when it fails, and continued when a killed driver left it), and
a node-local ``output_dir`` refused on a multi-node cluster before any trial (the cluster faked:
two alive nodes, one not seeing the directory)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, s3  # noqa: E402,F401  (s3: the moto server fixture)

from medcl import storage  # noqa: E402
from medcl.storage import Location  # noqa: E402
from medcl.sweep import validate_sweep  # noqa: E402
from medcl.sweep.study import SweepError, open_study  # noqa: E402
from medcl.sweep.lease import LEASE_FILE, Lease, LeaseLost  # noqa: E402
from medcl.sweep.objects import Bucket  # noqa: E402
from medcl.sweep.study_store import ObjectStudy, StudyConflict, staged_study, staging_file  # noqa: E402

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


def _killed_driver(sweep, trials: int, expired: bool = False):
    """An ObjectStudy left as a SIGKILLed driver leaves it: lease held (by a pid that no longer
    exists on this host), working copy and its ETag file on disk, ``trials`` trials asked and synced."""
    store = ObjectStudy(sweep)
    store.open()
    study = open_study(sweep, resume=True, fresh=False, enqueue=[])
    store.sync()
    for _ in range(trials):
        study.ask()
        store.sync()
    store.lease._stop.set()  # its renewal thread dies with it
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    body = json.loads(storage.read_bytes(store.lease.uri))
    body["pid"] = int(gone.stdout)  # a finished process: the holder is gone from this host
    body["expires"] = time.time() - 1 if expired else body["expires"]
    store.bucket.put(store.lease.uri, json.dumps(body).encode(), expected=store.lease.etag)
    return store


def test_every_change_is_in_the_bucket_and_a_killed_drivers_copy_is_continued(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    sweep = sweep_at(f"s3://{BUCKET}/sweeps-killed-{os.urandom(3).hex()}")
    store = _killed_driver(sweep, trials=2)
    assert len(_bucket_trials(sweep, tmp_path)) == 2 and store.uploads == 3  # created, then each ask
    study = optuna.load_study(study_name="st", storage=sweep.storage_url)
    study.tell(study.trials[0].number, 0.5)  # told after its last upload: only in the working copy
    with staged_study(sweep) as resumed:  # same machine: the lease of the dead pid is taken over at once
        assert "continuing from the study" in capsys.readouterr().out
        assert [t.state.name for t in open_study(sweep, resume=True, fresh=False, enqueue=[]).trials] == \
            ["COMPLETE", "RUNNING"]
        resumed.sync()
    assert [t.state.name for t in _bucket_trials(sweep, tmp_path)] == ["COMPLETE", "RUNNING"]
    assert not storage.exists(sweep.sweep_dir / LEASE_FILE)  # released


def test_a_stale_working_copy_is_set_aside_for_the_buckets_study(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    sweep = sweep_at(f"s3://{BUCKET}/sweeps-stale-{os.urandom(3).hex()}")
    store = _killed_driver(sweep, trials=1, expired=True)
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "other"))  # another machine resumes the sweep
    monkeypatch.setattr("socket.gethostname", lambda: "another-host")  # it cannot see the holder's pid
    with staged_study(sweep) as other:
        open_study(sweep, resume=True, fresh=False, enqueue=[]).ask()
        other.sync()
    out = capsys.readouterr().out
    assert f"took over the lease of sweep st from {store.lease.owner}" in out and "it expired at" in out
    monkeypatch.undo()
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    with staged_study(sweep):  # back on the first machine: its copy is older than the bucket's
        assert len(open_study(sweep, resume=True, fresh=False, enqueue=[]).trials) == 2
    assert "changed since the working copy" in capsys.readouterr().out
    assert list(store.local.parent.glob("study.db.stale-*"))


def test_a_second_driver_is_refused_naming_the_holder(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    sweep = sweep_at(f"s3://{BUCKET}/sweeps-two-{os.urandom(3).hex()}")
    with staged_study(sweep) as first:
        open_study(sweep, resume=False, fresh=False, enqueue=[]).ask()
        first.sync()
        monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "second"))
        with pytest.raises(SweepError) as refused:
            with staged_study(sweep):
                pass
        message = str(refused.value)
        assert first.lease.owner in message and f"pid {os.getpid()}" in message and "expires at" in message
        assert "--resume after the expiry time" in message
        assert storage.exists(sweep.sweep_dir / LEASE_FILE)  # the refused driver left the holder's lease
    assert len(_bucket_trials(sweep, tmp_path)) == 1


def test_a_study_written_by_another_driver_is_never_overwritten(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    sweep = sweep_at(f"s3://{BUCKET}/sweeps-cas-{os.urandom(3).hex()}")
    with pytest.raises(StudyConflict, match="written by another driver"):
        with staged_study(sweep) as store:
            open_study(sweep, resume=False, fresh=False, enqueue=[]).ask()
            store.sync()
            storage.write_bytes(sweep.sweep_dir / "study.db", b"another driver's study")  # bypasses the lease
            open_study(sweep, resume=True, fresh=False, enqueue=[]).ask()
            store.sync()
    assert storage.read_bytes(sweep.sweep_dir / "study.db") == b"another driver's study"


def test_a_lease_taken_over_stops_the_stalled_driver(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    sweep = sweep_at(f"s3://{BUCKET}/sweeps-lost-{os.urandom(3).hex()}")
    bucket = Bucket(str(sweep.sweep_dir))
    lease = Lease(bucket, str(sweep.sweep_dir / LEASE_FILE), "st", lease_s=600)
    lease.acquire()
    thief = Lease(bucket, lease.uri, "st", lease_s=600)
    body, etag = bucket.get(lease.uri)
    bucket.put(lease.uri, body.replace(b'"expires": ', b'"expires": -1, "x": '), expected=etag)  # it expired
    thief.acquire()
    with pytest.raises(LeaseLost, match=f"lost its lease .* to {thief.owner}"):
        lease.check()
    lease.release()
    assert bucket.get(lease.uri)[0] is not None  # not ours any more: left to the new holder
    thief.release()
    assert bucket.get(lease.uri)[0] is None


def test_gs_output_dir_without_a_database_storage_is_refused(monkeypatch):
    with pytest.raises(SweepError, match="s3:// only.*storage: a database URL"):
        with staged_study(sweep_at("gs://bucket/sweeps")):
            pass


def _bucket_trials(sweep, tmp_path) -> list:
    copy = tmp_path / f"bucket-copy-{os.urandom(3).hex()}.db"
    copy.write_bytes(storage.read_bytes(sweep.sweep_dir / "study.db"))
    return optuna.load_study(study_name="st", storage=f"sqlite:///{copy}").trials


def test_a_node_local_output_dir_is_refused_on_a_multi_node_cluster(tmp_path, monkeypatch):
    from medcl.engine import shared
    from medcl.sweep.driver import _check_shared_output

    monkeypatch.setattr(shared, "alive_nodes", lambda: [{"NodeID": "a" * 16}, {"NodeID": "b" * 16}])
    monkeypatch.setattr(shared, "_nodes_not_seeing", lambda marker, nodes: ["10.0.0.3 (bbbbbbbb)"])
    with pytest.raises(SweepError, match=f"output_dir: {tmp_path} is a node-local path") as raised:
        _check_shared_output(sweep_at(tmp_path))
    assert "e.g. --set output_dir=s3://BUCKET/sweeps" in str(raised.value) and "10.0.0.3" in str(raised.value)
    _check_shared_output(sweep_at("s3://bucket/sweeps"))  # an object store is shared: not probed
