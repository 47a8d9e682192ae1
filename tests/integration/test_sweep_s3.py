"""``medcl sweep`` with ``output_dir`` in an object store (moto S3 on 127.0.0.1): the trials' run
directories, Tune's results, the trials table, best.yaml, the plots and the study all land in the
bucket; a resumed sweep finds its study there (the driver's working copy is gone). The trials are
test_sweep.py's tiny 2-task sequences trained in the trial process.
"""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from test_sweep import tiny_sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, ray_in_s3_env, s3  # noqa: E402,F401  (fixtures: moto S3, Ray in its environment)

from medcl import storage  # noqa: E402
from medcl.config import load_experiment  # noqa: E402
from medcl.storage import Location  # noqa: E402
from medcl.sweep import validate_sweep  # noqa: E402
from medcl.sweep.study_store import staging_file  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_sweep_into_s3_keeps_trials_outputs_and_study_in_the_bucket(ray_in_s3_env, tmp_path, monkeypatch):
    from medcl.sweep.driver import run_sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    output_dir = f"s3://{BUCKET}/sweeps-{os.urandom(4).hex()}"
    sweep = validate_sweep(tiny_sweep(output_dir, "s3sweep", num_samples=1, scheduler={"name": "none"},
                                      space={"train.lr": {"loguniform": [1e-3, 1e-2]}}))
    assert sweep.sweep_dir == Location(f"{output_dir}/s3sweep")
    result = run_sweep(sweep)
    assert [t.state.name for t in result.study.get_trials()] == ["COMPLETE"]
    root = sweep.sweep_dir
    assert result.outputs["trials"] == root / "trials.parquet"
    best = tmp_path / "best.yaml"
    best.write_text(storage.read_text(root / "best.yaml"))
    assert f"medcl run best.yaml (a local copy of {root}/best.yaml" in best.read_text()
    assert load_experiment(best).name == "s3sweep-best"
    table = pd.read_parquet(io.BytesIO(storage.read_bytes(root / "trials.parquet")))
    assert list(table["state"]) == ["COMPLETE"] and table["final.avg"].notna().all() and "param.train.lr" in table
    for run_dir in table["run_dir"]:
        assert run_dir.startswith(f"{root}/trials/trial-")
        assert {"matrix.csv", "metrics.json", "report.html", "checkpoints"} <= set(storage.listdir(run_dir))
    assert storage.read_bytes(root / "history.png")[:4] == b"\x89PNG" and storage.listdir(root / "tune")
    assert not staging_file(str(root), sweep.name).exists()  # uploaded, then the working copy removed
    db = tmp_path / "study.db"
    db.write_bytes(storage.read_bytes(root / "study.db"))
    assert len(optuna.load_study(study_name="s3sweep", storage=f"sqlite:///{db}").trials) == 1

    resumed = run_sweep(sweep, resume=True)  # nothing left to run: the study came from the bucket
    assert [t.datetime_complete for t in resumed.study.get_trials()] == [result.study.trials[0].datetime_complete]
    assert not Path("s3:").exists()
