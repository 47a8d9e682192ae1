"""``medcl sweep SWEEP.yaml [--resume | --fresh] [--set KEY=VALUE ...]``: a hyperparameter and
task-order sweep over whole sequences (Ray Tune + Optuna + ASHA; see ``medcl.sweep``)."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    sweep = subparsers.add_parser("sweep", help="sweep hyperparameters and task orders over whole sequences")
    sweep.add_argument("sweep_file", type=Path)
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a sweep field (num_samples=4) or a base-experiment field "
                            "(experiment.train.steps_per_task=20); repeatable")
    group = sweep.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the sweep's study: re-run interrupted trials, then the remaining ones")
    group.add_argument("--fresh", action="store_true", help="delete the sweep's study and directory and start over")
    sweep.set_defaults(handler=_sweep)


def _sweep(args) -> int:
    from medcl.engine.localray import quiet_tune_output
    from medcl.sweep import load_sweep
    from medcl.sweep.driver import SweepInterrupted, run_sweep, trial_states
    from medcl.sweep.outputs import best_lines

    quiet_tune_output()  # this command prints its own summary; --verbose keeps Tune's reporter
    config = load_sweep(args.sweep_file, args.overrides)
    try:
        result = run_sweep(config, resume=args.resume, fresh=args.fresh)
    except (SweepInterrupted, KeyboardInterrupt) as exc:
        return _interrupted(args, config, getattr(exc, "states", None))
    states = trial_states(result.study)
    print(f"\nSweep {config.name}: {', '.join(f'{n} {s}' for s, n in sorted(states.items()))} "
          f"in {result.wall_time_s:.0f} s")
    if "orders" in result.outputs:
        print(result.outputs["orders"].read_text())
    for name, path in result.outputs.items():
        print(f"{name:12s} {path}")
    if "best" not in result.outputs:
        print("no trial completed: no best.yaml")
    for line in best_lines(config, result.study):
        print(line)
    return 0


def _interrupted(args, config, states: dict[str, int] | None) -> int:
    """Ctrl-C: say what the study kept and the command that continues it; exit 130."""
    from medcl.interrupt import report_interrupted, set_options
    from medcl.sweep.study import FINISHED

    if states is None:
        kept = f"the sweep's study and trials, if any, in {config.sweep_dir}"
    else:
        finished = sum(n for s, n in states.items() if s in FINISHED)
        kept = (f"{finished} trial(s) finished, {states.get('RUNNING', 0)} running kept in {config.sweep_dir} "
                "(no best.yaml or plots for an unfinished sweep)")
    return report_interrupted(kept, ["medcl", "sweep", args.sweep_file, *set_options(args.overrides), "--resume"])
