"""``medcl pretrain`` with ``output_dir`` in an object store (moto S3 on 127.0.0.1): one Ray Train
worker (a separate process) is killed at step 3, Ray Train restarts it from the step-2 checkpoint it
persisted in the bucket (``RunConfig(storage_path=...)`` through ``medcl.storage.ray_storage``), and
every run file (config, events, checkpoints, weights, metrics) ends up in the bucket, none in a local
folder named ``s3:``; the same command again finds the run finished there.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, ray_in_s3_env, s3  # noqa: E402,F401  (fixtures: moto S3, Ray in its environment)

from medcl import storage  # noqa: E402
from medcl.pretrain.config import validate_pretrain  # noqa: E402
from medcl.pretrain.runner import run_pretrain  # noqa: E402
from medcl.rundir import read_events  # noqa: E402

pytestmark = pytest.mark.ray


def test_pretraining_into_s3_survives_a_worker_kill_and_keeps_every_file_in_the_bucket(ray_in_s3_env, tmp_path,
                                                                                          monkeypatch):
    from medcl.models.weights import read_state_dict

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDCL_FAULT", "step=3,stage=1")
    monkeypatch.setenv("MEDCL_FAULT_ONCE", str(tmp_path / "fired"))
    config = validate_pretrain({"name": "pt-s3", "output_dir": f"s3://{BUCKET}/pretrain",
                                "data": {"domains": ["xray"], "per_class": 4, "heldout_per_class": 2},
                                "train": {"workers": 1, "batch_size": 8, "steps": 4, "warmup_steps": 0,
                                          "checkpoint_every": 2, "max_failures": 1}})
    result = run_pretrain(config)
    assert (tmp_path / "fired-rank0").exists()  # the worker was killed once
    run = result.run.path
    assert isinstance(run, storage.Location) and str(run) == f"s3://{BUCKET}/pretrain/pt-s3"
    written = set(storage.listdir(run))
    assert {"config.yaml", "events.jsonl.d", "checkpoints", "model.safetensors", "metrics.json"} <= written
    assert "step-4" in storage.listdir(run / "checkpoints")
    metrics = json.loads(storage.read_text(run / "metrics.json"))
    assert metrics["steps"] == 4 and metrics["heldout_after"]["pairs"] == 10
    events = read_events(run / "events.jsonl")  # one object per write under events.jsonl.d/
    assert sum(e["kind"] == "stage_start" for e in events) == 2  # the restarted worker began a second time
    assert read_state_dict(storage.cached_file(result.weights, tmp_path / "cache"))
    assert not any(p.name.startswith("s3:") for p in tmp_path.rglob("*"))
    monkeypatch.delenv("MEDCL_FAULT")
    assert run_pretrain(config).already_done
