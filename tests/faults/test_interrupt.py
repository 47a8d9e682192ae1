"""Ctrl-C on ``medcl sweep`` and ``medcl run``: exit 130, say what was kept and the exact command that
resumes; an interrupted sweep writes no best.yaml.

No timing: the sweep driver sends itself SIGINT when trial 1 has reported task 1
(``MEDCL_FAULT=trial=1,task=1``, ``MEDCL_FAULT_ACTION=interrupt``: the signal a terminal's Ctrl-C
sends, handled by whatever handler is installed, Tune's included); the run's Train worker holds at
step 3 of task 2 (``faultkit.held_fault``) and the test sends SIGINT to the whole process group, as a
terminal does, once the worker is known to be there.
"""
from __future__ import annotations

import os
import shutil
import re
import signal
import subprocess
import sys
import tempfile

import optuna
import pytest
import yaml

from faultkit import at_point, fault_experiment, held_fault, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _environment(ray_tmp: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MEDCL_FAULT"))}
    return {**env, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1", **extra}


def _stop_leftovers(pid: int, ray_tmp: str) -> None:
    """SIGKILL what is left of the process group this test started (pid: its leader); remove its Ray folder."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    shutil.rmtree(ray_tmp, ignore_errors=True)


def driver_output(out: str) -> str:
    """The command's own output, stripped: without the lines Ray forwards from trial and worker
    processes (``(SequenceTrial pid=N) ...``), which reach the log whenever they arrive, possibly
    after the command's last line."""
    own = [line for line in out.splitlines() if not re.match(r"\(\w+ pid=\d+(, ip=[\d.]+)?\)", line)]
    return "\n".join(own).rstrip()


def test_ctrl_c_on_a_sweep_keeps_the_study_writes_no_best_and_exits_130(tmp_path):
    sweep_file = tmp_path / "intr.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "intr", "output_dir": str(tmp_path), "num_samples": 3, "scheduler": {"name": "none"},
        "searcher": {"seed": 0}, "resources": {"trial_cpus": 1, "train_workers": 0},
        "space": {"train.lr": {"loguniform": [1e-3, 1e-2]}},
        "experiment": {"name": "intr", "seed": 0, "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
                       "benchmark": {"name": "synthmed", "num_tasks": 2, "image_size": 16, "train_per_class": 8,
                                     "val_per_class": 1, "test_per_class": 10, "classes": ["normal", "nodule"]},
                       "train": {"batch_size": 16, "lr": 3e-3, "steps_per_task": 3, "log_every": 100}}}))
    ray_tmp = tempfile.mkdtemp(prefix="ri", dir="/tmp")
    env = _environment(ray_tmp, MEDCL_FAULT="trial=1,task=1", MEDCL_FAULT_ACTION="interrupt")
    with open(tmp_path / "sweep.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "medcl.cli", "sweep", str(sweep_file)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=900)
        finally:
            _stop_leftovers(proc.pid, ray_tmp)
    out = (tmp_path / "sweep.log").read_text()
    assert code == 130, out[-3000:]
    assert "injected fault at trial_result" in out  # the interrupt came where it was meant to
    states = [t.state.name for t in optuna.load_study(study_name="intr", storage=f"sqlite:///{tmp_path / 'intr' / 'study.db'}").trials]
    assert states == ["COMPLETE", "RUNNING"]  # trial 1 kept RUNNING: --resume runs it again first
    assert (f"interrupted: 1 trial(s) finished, 1 running kept in {tmp_path / 'intr'}" in out
            and driver_output(out).endswith(f"resume with: medcl sweep {sweep_file} --resume")), out[-2000:]
    assert "Tuner.restore" not in out and "Stop signal received" not in out
    assert not (tmp_path / "intr" / "best.yaml").exists() and not list((tmp_path / "intr").glob("*.png"))
    assert "Exception ignored" not in out


def test_ctrl_c_on_a_run_names_the_last_checkpoint_and_the_command_and_exits_130(tmp_path):
    experiment = tmp_path / "run.yaml"
    experiment.write_text(yaml.safe_dump(fault_experiment(tmp_path, "intr-run")))
    ray_tmp = tempfile.mkdtemp(prefix="ri", dir="/tmp")
    env = _environment(ray_tmp, **held_fault(tmp_path, "step=3,stage=2", action="hold"))
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "medcl.cli", "run", str(experiment), "--no-dashboard"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_until(lambda: at_point(tmp_path, 0), "the worker at step 3 of task 2", alive=lambda: proc.poll() is None)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
            code = proc.wait(timeout=300)
        finally:
            _stop_leftovers(proc.pid, ray_tmp)
    out = (tmp_path / "run.log").read_text()
    assert code == 130, out[-3000:]
    run_dir = tmp_path / "intr-run"
    assert (f"interrupted: run directory {run_dir} kept, finished tasks up to checkpoints/task-1" in out
            and driver_output(out).endswith(f"resume with: medcl run {experiment} --no-dashboard")), out[-2000:]
    assert (run_dir / "checkpoints" / "task-1").is_dir()
