"""A real local Ray cluster (``ray start --head``, token auth) and ``ray job submit`` of a tiny run.

Everything runs in subprocesses: the cluster is not the pytest process's Ray (``ray_session``),
and it is stopped by PID at the end (see ``local_ray_cluster.py``); other Ray instances on the
machine are never touched.
"""
from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from local_ray_cluster import LocalRayCluster  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = {
    "name": "submitted", "seed": 0,
    "benchmark": {"name": "synthmed", "num_tasks": 2, "train_per_class": 16, "val_per_class": 2,
                  "test_per_class": 6},
    "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
    "train": {"workers": 1, "batch_size": 16, "lr": 2e-3, "steps_per_task": 8, "log_every": 2},
}
MEDCL_SAMPLE = re.compile(r"^ray_medcl_(train_step|train_loss|eval_accuracy)\{([^}]*)\} (\S+)$", re.M)


def _medcl_samples(text: str) -> list[tuple[str, str, float]]:
    return [(name, labels, float(value)) for name, labels, value in MEDCL_SAMPLE.findall(text)]


def test_ray_job_submit_to_a_token_auth_cluster(tmp_path):
    working_dir = tmp_path / "job"  # the experiment file only: --working-dir uploads the folder
    working_dir.mkdir()
    (working_dir / "tiny.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    out = tmp_path / "runs"
    seen: list[tuple[str, str, float]] = []
    with LocalRayCluster(num_cpus=2) as cluster:
        with pytest.raises(OSError, match="401"):  # the dashboard refuses a client without the token
            urllib.request.urlopen(cluster.dashboard_url + "/api/jobs/", timeout=30)
        cluster.submit("medcl-test", ["medcl", "run", "tiny.yaml", "--output-dir", str(out)],
                       working_dir=working_dir, runtime_env=REPO / "cluster" / "runtime_env.yaml")

        def scrape():
            if not seen:
                seen.extend(_medcl_samples(cluster.metrics_text()))

        status = cluster.wait("medcl-test", timeout=900, poll=scrape)
        logs = cluster.logs("medcl-test")
        for _ in range(10):  # metrics are pushed to the node's agent every second
            scrape()
            if seen:
                break
            time.sleep(1)
    assert status == "SUCCEEDED", logs[-3000:]
    assert "Accuracy matrix" in logs
    run = out / "submitted"
    lines = (run / "matrix.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["zero_shot", "xray", "ultrasound"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["tasks"] == ["xray", "ultrasound"]
    assert seen, "no ray_medcl_* metric on the node's Prometheus endpoint"
    name, labels, value = seen[0]
    assert 'run="submitted"' in labels and value >= 0
