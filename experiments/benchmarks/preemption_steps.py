"""Steps lost to a preemption inside a task, before and after mid-task checkpoints (counts, no timings).

    python experiments/benchmarks/preemption_steps.py [--steps 20] [--every 5] [--fault-step 13]

A 2-task synthmed sequence (``faultkit.fault_experiment``, ``--steps`` steps a task, cosine
schedule) runs in this process through Ray Train's local mode and is stopped inside task 2 after
step ``--fault-step`` (``medcl.faults``, ``MEDCL_FAULT_ACTION=raise``: the step is trained, nothing
after it), then resumed, three ways:

* ``task_boundaries``: no mid-task checkpoints (before): the resume restarts task 2 at step 1;
* ``checkpoint_every``: ``train.checkpoint_every: --every``;
* ``preemption_notice``: ``train.checkpoint_on_preemption: true`` and a notice after step
  ``--fault-step - 1`` (local mode has no preemption watcher, so ``ray.train.get_preemption_info``
  is replaced: a simulated notice one step before the node goes).

Prints one JSON object (progress lines go to stderr): per way, ``resumed_at_step`` (steps of task 2 kept), ``steps_lost`` (trained
twice: ``--fault-step`` minus those kept), ``steps_trained`` (all optimizer steps of both attempts,
from the events plus the unlogged fault step) and ``same_losses`` (every step's loss, the last
attempt's, equals the ``task_boundaries`` run's to 1e-6). With ``checkpoint_every: c`` at most
``c`` steps are lost (a fault just before a multiple of ``c``), at least 1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for folder in ("tests", "tests/integration", "tests/faults"):
    sys.path.insert(0, str(REPO / folder))


def _interrupt_and_resume(root: Path, name: str, fault_step: int, steps: int, notice_after: int | None, **train):
    import ray.train

    from faultkit import attempts, fault_experiment, read_events
    from local_sequence import run_local
    from medcl.config import validate_experiment

    config = validate_experiment(fault_experiment(root / name, name, steps_per_task=steps, schedule="cosine",
                                                  warmup_steps=2, **train))
    calls, original = [], ray.train.get_preemption_info

    def notice():  # every rank calls it after every step but a stage's last
        calls.append(1)
        return ray.train.PreemptionInfo(None, {"node": [0]}) if len(calls) >= steps - 1 + notice_after else None

    os.environ.update(MEDCL_FAULT=f"step={fault_step},stage=2", MEDCL_FAULT_ACTION="raise",
                      MEDCL_FAULT_ONCE=str(root / f"{name}-fired"))
    ray.train.get_preemption_info = notice if notice_after else original
    try:
        try:
            run_local(config)
        except Exception as exc:  # noqa: BLE001 - the injected fault, as Ray Train wraps it
            if "injected fault" not in str(exc):
                raise
        result = run_local(config, fresh=False)
    finally:
        ray.train.get_preemption_info = original
        for key in ("MEDCL_FAULT", "MEDCL_FAULT_ACTION", "MEDCL_FAULT_ONCE"):
            os.environ.pop(key, None)
    events = read_events(result.run.path)
    resumed_at = attempts(events, stage=2)[-1][0]["step"] - 1
    losses = {(e["task"], e["step"]): e["loss"] for e in events if e["kind"] == "step"}
    trained = sum(1 for e in events if e["kind"] == "step") + 1  # + the fault step, trained but not logged
    return {"resumed_at_step": resumed_at, "steps_lost": fault_step - resumed_at, "steps_trained": trained}, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--fault-step", type=int, default=13)
    args = parser.parse_args()
    if not 1 < args.fault_step < args.steps:
        parser.error("--fault-step must be inside task 2: 1 < fault_step < steps")
    from medcl.engine.localray import init_local_ray

    init_local_ray(1, dashboard=False)
    ways = {"task_boundaries": {}, "checkpoint_every": {"checkpoint_every": args.every},
            "preemption_notice": {"checkpoint_on_preemption": True, "notice_after": args.fault_step - 1}}
    out = {"steps_per_task": args.steps, "fault": {"task": 2, "after_step": args.fault_step},
           "checkpoint_every": args.every, "ways": {}}
    with tempfile.TemporaryDirectory(prefix="medcl-preemption-") as tmp, contextlib.redirect_stdout(sys.stderr):
        reference = None
        for name, train in ways.items():
            notice_after = train.pop("notice_after", None)
            figures, losses = _interrupt_and_resume(Path(tmp), name, args.fault_step, args.steps, notice_after, **train)
            reference = reference or losses
            figures["same_losses"] = losses.keys() == reference.keys() and all(
                abs(losses[k] - v) <= 1e-6 * max(1.0, abs(v)) for k, v in reference.items())
            out["ways"][name] = figures
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
