"""Whole sweeps: Tune trials that are sequence runs, ASHA pruning recorded in Optuna, best.yaml,
``--resume`` after the sweep process is killed, trials with Ray Train workers (resources reserved
and released), and a trial retried after its process dies.

Trials are 2-task synthmed sequences of 3 steps a task, trained in the trial process
(``train_workers: 0``, Ray Train local mode) so that a trial costs seconds after the first. The
hopeless arm is the 5-class version of the benchmark: with so few steps every arm stays near chance,
and chance is 20 % there against 50 % for the 2-class arms, so its running Avg after the first
task is certain to be in ASHA's worse half.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from local_sequence import run_local
from medcl.config import load_experiment
from medcl.rundir import read_events
from medcl.sweep import validate_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TWO, FIVE = ["normal", "nodule"], ["normal", "nodule", "cyst", "calcification", "fracture"]


def tiny_sweep(output_dir, name: str, **fields) -> dict:
    return {"name": name, "output_dir": str(output_dir), "experiment": {
        "name": name, "seed": 0,
        "benchmark": {"name": "synthmed", "num_tasks": 2, "image_size": 16, "train_per_class": 8,
                      "val_per_class": 1, "test_per_class": 10, "classes": TWO},
        "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
        "train": {"batch_size": 16, "lr": 3e-3, "steps_per_task": 3, "log_every": 100}},
        "searcher": {"seed": 0}, "resources": {"trial_cpus": 1, "train_workers": 0}, **fields}


def test_sweep_prunes_the_hopeless_arm_and_writes_a_runnable_best(ray_session, tmp_path):
    from medcl.sweep.driver import run_sweep

    sweep = validate_sweep(tiny_sweep(
        tmp_path, "prune", num_samples=4, space={"train.lr": {"loguniform": [1e-3, 1e-2]},
                                                 "benchmark.classes": {"choice": [TWO, FIVE]}},
        enqueue=[{"benchmark.classes": TWO}, {"benchmark.classes": FIVE}],
        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2}))
    result = run_sweep(sweep)
    study = optuna.load_study(study_name="prune", storage=f"sqlite:///{tmp_path / 'prune' / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 4
    for trial in trials:
        hopeless = "cyst" in trial.params["benchmark.classes"]
        assert trial.state.name == ("PRUNED" if hopeless and trial.number > 0 else "COMPLETE"), trial
    assert trials[1].state.name == "PRUNED" and list(trials[1].intermediate_values) == [1]
    assert trials[1].intermediate_values[1] < trials[0].intermediate_values[1]
    table = pd.read_parquet(result.outputs["trials"])
    assert list(table["state"]) == [t.state.name for t in trials]
    assert {"param.train.lr", "avg", "avg@task1", "final.avg", "wall_time_s", "acc.xray"} <= set(table.columns)
    for run_dir in table["run_dir"]:  # full run directories, pruned ones included
        assert (Path(run_dir) / "matrix.csv").is_file() and (Path(run_dir) / "report.html").is_file()
    best = load_experiment(result.outputs["best"], output_dir=str(tmp_path / "runs"))
    assert best.benchmark.options()["classes"] == TWO and best.name == "prune-best"
    assert run_local(best).metrics["complete"]  # medcl run's worker loop accepts it


def _live_placement_groups(ray) -> set[str]:
    return {pg for pg, v in ray.util.placement_group_table().items() if v["state"] != "REMOVED"}


def test_trials_with_train_workers_side_by_side_then_one_after_another(ray_session, tmp_path):
    """Issue #16: 3 trials of one Train worker each, 2 at a time on 2 CPUs (0.5 CPU for the trial,
    0.5 for its worker), the third once a slot is free; ASHA stops some. Every trial gets its
    worker (none FAIL), and no placement group of the sweep is left afterwards."""
    from medcl.sweep.driver import run_sweep

    before = _live_placement_groups(ray_session)
    sweep = validate_sweep(tiny_sweep(
        tmp_path, "workers", num_samples=3, max_concurrent_trials=2,
        resources={"trial_cpus": 0.5, "train_workers": 1, "worker_cpus": 0.5},
        space={"benchmark.classes": {"choice": [TWO, FIVE]}},
        enqueue=[{"benchmark.classes": TWO}, {"benchmark.classes": FIVE}, {"benchmark.classes": TWO}],
        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2}))
    result = run_sweep(sweep)
    states = [t.state.name for t in result.study.get_trials()]
    assert len(states) == 3 and set(states) <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states, states
    assert _live_placement_groups(ray_session) <= before  # the trials' and their workers' groups are gone
    for trial in result.study.get_trials():
        run_dir = tmp_path / "workers" / "trials" / trial.user_attrs["run_name"]
        assert (run_dir / "checkpoints" / f"task-{trial.user_attrs['tasks_trained']}").is_dir()


def test_a_trial_whose_process_dies_is_retried_and_resumes_after_its_last_task(ray_session, tmp_path, monkeypatch):
    """The trial process (in-process training) exits after task 1 is checkpointed, as on a lost
    node; Tune runs the trial again (``trial_retries: 1``) and it trains task 2 only."""
    from medcl.engine.checkpoint import read_state
    from medcl.sweep.driver import run_sweep

    marker = tmp_path / "fired"
    monkeypatch.setenv("MEDCL_FAULT", "after_stage=1,rank=0")
    monkeypatch.setenv("MEDCL_FAULT_ONCE", str(marker))
    sweep = validate_sweep(tiny_sweep(tmp_path, "retry", num_samples=1, scheduler={"name": "none"},
                                      resources={"trial_cpus": 1, "train_workers": 0, "trial_retries": 1}))
    result = run_sweep(sweep)
    assert marker.exists() and [t.state.name for t in result.study.get_trials()] == ["COMPLETE"]
    checkpoints = tmp_path / "retry" / "trials" / result.study.trials[0].user_attrs["run_name"] / "checkpoints"
    first, final = read_state(checkpoints / "task-1"), read_state(checkpoints / "task-2")
    assert final.wall_time_s[0] == first.wall_time_s[0] and final.rows[0] == first.rows[0]  # task 1 not trained again
    events = [json.loads(line) for line in (checkpoints.parent / "events.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in events if e["kind"] == "stage_start"] == [1, 2]


def _study_states(db: Path) -> list[str]:
    if not db.is_file():
        return []
    try:
        return [t.state.name for t in optuna.load_study(study_name="resume", storage=f"sqlite:///{db}").trials]
    except Exception:  # the study is not created yet, or the file is being written
        return []


def _kill_ray(ray_tmp: str) -> None:
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if ray_tmp.encode() in cmdline:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def run_logged(command: list[str], log_file: Path, env: dict) -> tuple[int, str]:
    """Run ``command`` with its output in ``log_file`` (not a pipe: a killed driver's Ray processes
    may hold a pipe open); return its exit code and output."""
    with open(log_file, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=900,
                              start_new_session=True).returncode
    return code, log_file.read_text()


def stage_starts(run_dir: Path) -> list[int]:
    return [e["stage"] for e in read_events(run_dir / "events.jsonl") if e["kind"] == "stage_start"]


def test_resume_after_killing_the_sweep_mid_trial_finishes_without_duplicates(tmp_path):
    """The sweep process is killed (``os._exit``, no cleanup) when trial 1 has reported its first
    task (``MEDCL_FAULT=trial=1,task=1``): trial 0 is COMPLETE, trial 1 RUNNING with task 1
    checkpointed, trial 2 not asked. ``--resume`` runs trial 1 again under its own number and run
    directory from task 2, then trial 2; nothing is run twice."""
    sweep_file = tmp_path / "resume.yaml"
    sweep_file.write_text(yaml.safe_dump(tiny_sweep(
        tmp_path, "resume", num_samples=3, scheduler={"name": "none"},
        space={"train.lr": {"loguniform": [1e-3, 1e-2]}})))
    db = tmp_path / "resume" / "study.db"
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "medcl.cli", "sweep", str(sweep_file)]
    try:
        code, _ = run_logged(command, tmp_path / "first.log", {**env, "MEDCL_FAULT": "trial=1,task=1"})
        _kill_ray(ray_tmp)  # the killed driver's own Ray
        assert code == 17, (tmp_path / "first.log").read_text()[-3000:]  # the injected exit
        before = _study_states(db)
        assert before == ["COMPLETE", "RUNNING"], before
        code, out = run_logged(command + ["--resume"], tmp_path / "second.log", env)
    finally:
        _kill_ray(ray_tmp)  # the resumed sweep shut its Ray down; make sure nothing of it is left
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert code == 0, out[-3000:]
    assert "resuming 1 interrupted trial(s): trial-0001" in out
    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # none RUNNING, none FAIL, no extra trial
    assert len({t.params["train.lr"] for t in trials}) == 3  # no configuration twice
    rerun = [int(line.split("trial-")[1][:4]) for line in out.splitlines()
             if line.startswith("medcl: trial-") and "COMPLETE" in line]
    assert rerun == [1, 2]  # trial 0 is not run again
    runs = tmp_path / "resume" / "trials"
    assert sorted(p.name for p in runs.iterdir()) == sorted(t.user_attrs["run_name"] for t in trials)
    assert stage_starts(runs / trials[1].user_attrs["run_name"]) == [1, 2]  # task 1 of trial 1 not trained again
    assert stage_starts(runs / trials[0].user_attrs["run_name"]) == [1, 2]
    assert len(pd.read_parquet(tmp_path / "resume" / "trials.parquet")) == 3
