"""``medcl sweep`` with ``output_dir`` in an object store (moto S3 on 127.0.0.1): the trials' run
directories, Tune's results, the trials table, best.yaml, the plots and the study all land in the
bucket; a resumed sweep finds its study there (the driver's working copy is gone); a killed driver
loses no finished trial, a second driver is refused, a run directory is never reused for other
parameters. The trials are test_sweep.py's tiny 2-task sequences trained in the trial process.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from test_sweep import _kill_ray, tiny_sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, ray_in_s3_env, s3  # noqa: E402,F401  (fixtures: moto S3, Ray in its environment)

from medcl import storage  # noqa: E402
from medcl.config import load_experiment  # noqa: E402
from medcl.rundir import read_events  # noqa: E402
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


def _bucket_study(root, tmp_path, name: str) -> list:
    copy = tmp_path / f"bucket-{os.urandom(3).hex()}.db"
    copy.write_bytes(storage.read_bytes(root / "study.db"))
    return optuna.load_study(study_name=name, storage=f"sqlite:///{copy}").get_trials()


def test_a_killed_driver_loses_no_finished_trial_a_second_driver_is_refused_and_folders_are_never_reused(
        ray_in_s3_env, tmp_path, monkeypatch, capsys):
    """Driver A (its own process and Ray) is held, then ended with ``os._exit``, when trial 1 has
    reported task 1. While it holds the sweep a second driver is refused, naming it; after it died
    the bucket holds trial 0 COMPLETE and trial 1 RUNNING (uploaded after each change), and a driver
    on another machine (another working-copy cache) takes the dead driver's lease over and finishes
    trials 1 and 2 only. Then the study is lost (deleted) and the sweep resumed with another seed:
    trial 0 gets other parameters and its own run directory; the old one is untouched."""
    from medcl.sweep.driver import run_sweep
    from medcl.sweep.study import SweepError, run_name

    output_dir = f"s3://{BUCKET}/sweeps-kill-{os.urandom(4).hex()}"
    raw = tiny_sweep(output_dir, "s3kill", num_samples=3, scheduler={"name": "none"},
                     space={"train.lr": {"loguniform": [1e-3, 1e-2]}})
    sweep_file = tmp_path / "s3kill.yaml"
    sweep_file.write_text(yaml.safe_dump(raw))
    sweep = validate_sweep(raw)
    root = sweep.sweep_dir
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    ready, go = tmp_path / "at", tmp_path / "go"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1", "MEDCL_CACHE": str(tmp_path / "machine-a"),
           "MEDCL_FAULT": "trial=1,task=1", "MEDCL_FAULT_READY": str(ready), "MEDCL_FAULT_GO": str(go)}
    env.pop("RAY_ADDRESS", None)
    with open(tmp_path / "a.log", "w") as log:
        driver_a = subprocess.Popen([sys.executable, "-m", "medcl.cli", "sweep", str(sweep_file)], stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        announced = Path(f"{ready}-rank0.json")
        while not announced.exists() and driver_a.poll() is None:  # readiness, bounded by the driver's life
            time.sleep(0.5)
        assert announced.exists(), (tmp_path / "a.log").read_text()[-3000:]
        monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "machine-b"))
        with pytest.raises(SweepError) as refused:  # driver B while A holds the sweep
            run_sweep(sweep, resume=True)
        assert f"pid {driver_a.pid}" in str(refused.value) and "expires at" in str(refused.value)
        go.touch()
        assert driver_a.wait(timeout=120) == 17  # A ends with no cleanup, as a SIGKILL would
    finally:
        if driver_a.poll() is None:
            driver_a.kill()
            driver_a.wait()
        _kill_ray(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    before = _bucket_study(root, tmp_path, "s3kill")
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]  # nothing finished was lost with A

    capsys.readouterr()
    resumed = run_sweep(sweep, resume=True)  # "machine B": no working copy; A's lease taken over
    out = capsys.readouterr().out
    assert f"took over the lease of sweep s3kill from {socket.gethostname()}:{driver_a.pid}:" in out
    assert "resuming 1 interrupted trial(s): trial-0001" in out
    trials = _bucket_study(root, tmp_path, "s3kill")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 and trials[0].datetime_complete == before[0].datetime_complete
    assert [t.datetime_complete for t in resumed.study.get_trials()] == [t.datetime_complete for t in trials]
    assert not storage.exists(root / "study.lease")
    names = [t.user_attrs["run_name"] for t in trials]
    assert sorted(storage.listdir(root / "trials")) == sorted(names)
    resumed_events = read_events(root / "trials" / names[1] / "events.jsonl")
    assert [e["stage"] for e in resumed_events if e["kind"] == "stage_start"] == [1, 2]  # task 1 not trained again

    old_metrics = storage.read_text(root / "trials" / names[0] / "metrics.json")
    storage.delete(root / "study.db")  # the study is lost (as an upload lost by the old driver was)
    other = validate_sweep({**raw, "num_samples": 1, "searcher": {"seed": 7}})
    again = run_sweep(other, resume=True).study.get_trials()[0]
    assert again.number == 0 and again.params != trials[0].params
    assert again.user_attrs["run_name"] == run_name(0, again.params) != names[0]
    assert storage.read_text(root / "trials" / names[0] / "metrics.json") == old_metrics  # untouched
    new_run = root / "trials" / again.user_attrs["run_name"]
    assert [e["stage"] for e in read_events(new_run / "events.jsonl") if e["kind"] == "stage_start"] == [1, 2]
