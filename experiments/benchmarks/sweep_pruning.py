"""What ASHA saves on a sweep of whole sequences: the tiny sweep with pruning, then the same trials
run to the end.

    .venv/bin/python experiments/benchmarks/sweep_pruning.py [--sweep experiments/sweeps/tiny_synthmed.yaml]
                                                             [--set num_samples=8 ...] [--hopeless-arm]
                                                             [--no-full]

Both sweeps draw the same configurations: the searcher's random start-up covers every trial
(``searcher.n_startup_trials = num_samples``), with the same seed, so TPE's model (which would see
different results once trials are pruned) never picks a configuration. The first sweep uses the
file's ASHA scheduler, the second ``scheduler: none`` (skipped with ``--no-full``); both run in one
local Ray, in temporary output directories. ``--hopeless-arm`` adds a dimension
``benchmark.classes: {choice: [[normal, nodule], <all five findings>]}``: with few steps every arm
stays near chance, which is 50 % for two classes and 20 % for five, so the five-class trials are
certain to be the worse ones. Prints JSON: wall time of each sweep, trials pruned and their share,
tasks trained, the share of task-trainings ASHA saved (1 - tasks trained / (trials x tasks), a
count that does not depend on the machine's load), and the time pruning saved (absolute and as a
share of the unpruned sweep); the sweeps' own progress lines go to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from medcl.engine.cluster import connect
from medcl.sweep import load_sweep
from medcl.sweep.driver import run_sweep


HOPEFUL, HOPELESS = ["normal", "nodule"], ["normal", "nodule", "cyst", "calcification", "fracture"]


def one_sweep(path: str, overrides: list[str], out: str, scheduler: str, hopeless: bool = False) -> dict:
    from medcl.sweep.config import Distribution
    from medcl.sweep.space import check_space

    config = load_sweep(path, overrides + [f"output_dir={out}", f"scheduler.name={scheduler}"])
    config.searcher.n_startup_trials = config.num_samples
    if hopeless:
        config.space["benchmark.classes"] = Distribution(choice=[HOPEFUL, HOPELESS])
        check_space(config, "--hopeless-arm")
    result = run_sweep(config, fresh=True)
    trials = result.study.get_trials()
    states = [t.state.name for t in trials]
    return {"wall_s": round(result.wall_time_s, 1), "trials": len(trials), "pruned": states.count("PRUNED"),
            "complete": states.count("COMPLETE"), "failed": states.count("FAIL"),
            "tasks_trained": sum(int(t.user_attrs.get("tasks_trained", 0)) for t in trials),
            "tasks_per_trial": max(int(t.user_attrs.get("tasks_trained", 0)) for t in trials),
            "hopeless_trials": sum("cyst" in str(t.params.get("benchmark.classes", "")) for t in trials),
            "trial_wall_s": round(sum(float(t.user_attrs.get("wall_time_s", 0.0)) for t in trials), 1),
            "params": [t.params for t in trials]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default="experiments/sweeps/tiny_synthmed.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--hopeless-arm", action="store_true", help="add a 5-class arm certain to be worse")
    parser.add_argument("--no-full", action="store_true", help="skip the sweep without pruning")
    args = parser.parse_args()
    connect(None, dashboard=False)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="medcl-sweep-bench-") as out, contextlib.redirect_stdout(sys.stderr):
        pruned = one_sweep(args.sweep, args.overrides, str(Path(out) / "asha"), "asha", args.hopeless_arm)
        full = None if args.no_full else one_sweep(args.sweep, args.overrides, str(Path(out) / "full"), "none",
                                                   args.hopeless_arm)
    possible = pruned["trials"] * pruned["tasks_per_trial"]
    report = {"sweep": args.sweep, "hopeless_arm": args.hopeless_arm, "asha": pruned,
              "share_pruned": round(pruned["pruned"] / max(pruned["trials"], 1), 3),
              "task_trainings_saved": possible - pruned["tasks_trained"],
              "task_trainings_saved_share": round(1 - pruned["tasks_trained"] / possible, 3) if possible else None,
              "load_avg_1min_before": round(load_before, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2)}
    if full is not None:
        report.update({
            "same_configurations": pruned["params"] == full["params"], "no_pruning": full,
            "time_saved_s": round(full["wall_s"] - pruned["wall_s"], 1),
            "time_saved_share": round(1 - pruned["wall_s"] / full["wall_s"], 3) if full["wall_s"] else None,
            "trial_time_saved_s": round(full["trial_wall_s"] - pruned["trial_wall_s"], 1)})
        full.pop("params")
    pruned.pop("params")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
