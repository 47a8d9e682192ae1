"""What ASHA saves on a sweep of whole sequences: the tiny sweep with pruning, then the same trials
run to the end.

    .venv/bin/python experiments/benchmarks/sweep_pruning.py [--sweep experiments/sweeps/tiny_synthmed.yaml]
                                                             [--set num_samples=8 ...]

Both sweeps draw the same configurations: the searcher's random start-up covers every trial
(``searcher.n_startup_trials = num_samples``), with the same seed, so TPE's model (which would see
different results once trials are pruned) never picks a configuration. The first sweep uses the
file's ASHA scheduler, the second ``scheduler: none``; both run in one local Ray, in temporary
output directories. Prints JSON: wall time of each sweep, trials pruned and their share, tasks
trained, and the time pruning saved (absolute and as a share of the unpruned sweep); the sweeps'
own progress lines go to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from medcl.engine.cluster import connect
from medcl.sweep import load_sweep
from medcl.sweep.driver import run_sweep


def one_sweep(path: str, overrides: list[str], out: str, scheduler: str) -> dict:
    config = load_sweep(path, overrides + [f"output_dir={out}", f"scheduler.name={scheduler}"])
    config.searcher.n_startup_trials = config.num_samples
    result = run_sweep(config, fresh=True)
    trials = result.study.get_trials()
    states = [t.state.name for t in trials]
    return {"wall_s": round(result.wall_time_s, 1), "trials": len(trials), "pruned": states.count("PRUNED"),
            "complete": states.count("COMPLETE"), "failed": states.count("FAIL"),
            "tasks_trained": sum(int(t.user_attrs.get("tasks_trained", 0)) for t in trials),
            "trial_wall_s": round(sum(float(t.user_attrs.get("wall_time_s", 0.0)) for t in trials), 1),
            "params": [t.params for t in trials]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default="experiments/sweeps/tiny_synthmed.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    connect(None, dashboard=False)
    with tempfile.TemporaryDirectory(prefix="medcl-sweep-bench-") as out, contextlib.redirect_stdout(sys.stderr):
        pruned = one_sweep(args.sweep, args.overrides, str(Path(out) / "asha"), "asha")
        full = one_sweep(args.sweep, args.overrides, str(Path(out) / "full"), "none")
    same = pruned.pop("params") == full.pop("params")
    print(json.dumps({
        "sweep": args.sweep, "same_configurations": same, "asha": pruned, "no_pruning": full,
        "share_pruned": round(pruned["pruned"] / max(pruned["trials"], 1), 3),
        "time_saved_s": round(full["wall_s"] - pruned["wall_s"], 1),
        "time_saved_share": round(1 - pruned["wall_s"] / full["wall_s"], 3) if full["wall_s"] else None,
        "trial_time_saved_s": round(full["trial_wall_s"] - pruned["trial_wall_s"], 1),
    }, indent=2))


if __name__ == "__main__":
    main()
