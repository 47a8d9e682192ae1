"""``medcl study STUDY.yaml [--dry-run | --fresh] [--set KEY=VALUE ...]``: methods x seeds x orders
with equal-budget tuning on validation data, paired statistics, costs and a results board
(``medcl.study``; docs/studies.md)."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    study = subparsers.add_parser("study", help="compare methods over seeds and task orders: tuning, statistics, board")
    study.add_argument("study_file", type=Path)
    study.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a study field (tuning.trials=4) or a base-experiment field "
                            "(experiment.train.steps_per_task=20); repeatable")
    group = study.add_mutually_exclusive_group()
    group.add_argument("--dry-run", action="store_true",
                       help="check the study file and print the plan (tuning trials, runs); run nothing")
    group.add_argument("--report", action="store_true",
                       help="rebuild study.json, the tables, plots and board from the finished runs; run nothing")
    group.add_argument("--from-runs", type=Path, nargs="+", metavar="DIR",
                       help="write the outputs from finished runs under DIR(s) whose experiment equals a point's "
                            "(e.g. method_findings.py's); run nothing (medcl.study.adopt)")
    group.add_argument("--fresh", action="store_true",
                       help="delete the study folder and start over (default: resume, reusing finished runs)")
    study.set_defaults(handler=_study)


def _study(args) -> int:
    from medcl.study import load_study
    from medcl.study.runner import plan_text

    config = load_study(args.study_file, args.overrides)
    if args.dry_run:
        print(plan_text(config), end="")
        return 0
    from medcl.study.runner import adopt_study, collect_study, run_study

    if args.report:
        payload = collect_study(config)
    elif args.from_runs:
        payload = adopt_study(config, args.from_runs)
    else:
        from medcl.engine.localray import quiet_tune_output

        quiet_tune_output()
        payload = run_study(config, fresh=args.fresh)
    root = Path(payload["folder"])
    print((root / "tables" / "accuracy.md").read_text())
    print((root / "tables" / "paired.md").read_text())
    claims = root / "tables" / "claims.md"
    if claims.is_file():
        print(claims.read_text())
    _print_missing(config.name, payload.get("missing", []))
    print(f"Study {config.name}: {len(payload['runs'])} runs in {payload['wall_s']:.0f} s")
    print(f"board        {root / 'index.html'}\nstudy.json   {root / 'study.json'}")
    return 0


def _print_missing(study: str, missing: list[dict]) -> None:
    """One line per method with grid points ``--from-runs`` found no run for."""
    by_method: dict[str, list[str]] = {}
    for point in missing:
        by_method.setdefault(point["method"], []).append(f"{point['seed']}" + (
            "" if point["order"] == "default" else f" ({point['order']})"))
    for method, points in by_method.items():
        print(f"medcl: study {study}: {method}: no finished run for seed(s) {', '.join(points)}: left out")
