"""The ``medcl`` command: thin argument parsing over the library.

    medcl run EXPERIMENT.yaml [--set train.lr=1e-4 ...] [--fresh] [--output-dir DIR] [--no-dashboard]
    medcl report RUN_DIR
    medcl compare RUN_DIR [RUN_DIR ...] [--out DIR]   # comparison.md + comparison.png
    medcl list {strategies,benchmarks,models}

Further command groups (``corpus``, ``index``, ``pretrain``, ``sweep``...) live in
``medcl/commands/<group>.py``, each exposing ``register(subparsers)`` that adds its parsers and sets
``handler``; they are found by name, so a group is one file.

Expected errors (a bad config, a missing file, an impossible resource request) print one clear
message and exit with status 2; ``MEDCL_DEBUG=1`` shows the traceback too. Ray's internal log
lines that mean nothing to a user are kept off the terminal (``medcl.engine.localray``);
``--verbose`` (or ``MEDCL_DEBUG=1``) shows every one.

Paths: relative paths in experiment, pretraining, sweep and corpus files, in ``--set`` values and in
arguments are taken from the directory the command runs in, and made absolute when the file is
loaded (``medcl.paths``), so Ray workers and Tune trials, which run elsewhere, see absolute paths.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

import medcl.commands
from medcl.engine.localray import plain_output_unless_terminal
from medcl.engine.loopback import prepare_local_environment
from medcl.errors import MedclError
from medcl.paths import BASE_NOTE
from medcl.redact import mask_secrets
from medcl.storage import place


def main(argv: list[str] | None = None) -> int:
    prepare_local_environment()  # before any command imports ray: a local Ray stays on loopback
    plain_output_unless_terminal()  # no colour codes from Ray in a redirected log (or with NO_COLOR)
    args = _parser().parse_args(argv)
    if getattr(args, "verbose", False):
        os.environ["MEDCL_VERBOSE"] = "1"  # read by medcl.engine.localray (and inherited by Ray)
    try:
        return args.handler(args)
    except (MedclError, FileNotFoundError) as exc:
        if os.environ.get("MEDCL_DEBUG"):
            raise
        print(f"medcl: error: {mask_secrets(str(exc))}", file=sys.stderr)  # no URL password in a log
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcl", description=__doc__.split("\n\n")[0], epilog=BASE_NOTE)
    _add_verbose(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) a continual-learning sequence")
    run.add_argument("experiment", type=Path)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a field by its dotted path, e.g. --set train.lr=1e-4 (repeatable)")
    run.add_argument("--fresh", action="store_true", help="delete the run directory and start over")
    run.add_argument("--output-dir", default=None, help="parent of the run directory (default: the file's output_dir)")
    run.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                     help="do not serve the Ray dashboard (default: on 127.0.0.1 at a free port, printed at the "
                          "start, while a local Ray runs)")
    run.set_defaults(handler=_run)
    report = commands.add_parser("report", help="rebuild report.html of a run directory")
    report.add_argument("run_dir", type=place, help="a run directory: a local path or s3://... / gs://...")
    report.set_defaults(handler=_report)
    compare = commands.add_parser("compare", help="compare runs: one metrics table and per-task accuracy curves")
    compare.add_argument("run_dirs", type=Path, nargs="+")
    compare.add_argument("--out", type=Path, default=Path("comparison"),
                         help="folder for comparison.md and comparison.png (default: ./comparison)")
    compare.set_defaults(handler=_compare)
    listing = commands.add_parser("list", help="list registered strategies, benchmarks or models")
    listing.add_argument("what", choices=["strategies", "benchmarks", "models"])
    listing.set_defaults(handler=_list)
    _register_command_groups(commands)
    _finish_subcommands(commands, BASE_NOTE)
    return parser


def _add_verbose(parser: argparse.ArgumentParser, default=False) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="show every Ray log line (as MEDCL_DEBUG=1 does, without tracebacks)")


def _finish_subcommands(subparsers, epilog: str) -> None:
    """Every (nested) sub-command gets ``--verbose`` (also accepted after the sub-command) and,
    when it has none of its own, ``epilog`` under its help."""
    for parser in set(subparsers.choices.values()):
        parser.epilog = parser.epilog or epilog
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not any("--verbose" in a.option_strings for a in parser._actions):
            _add_verbose(parser, default=argparse.SUPPRESS)
        for action in nested:
            _finish_subcommands(action, epilog)


def _register_command_groups(commands) -> None:
    for module in sorted(pkgutil.iter_modules(medcl.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"medcl.commands.{module.name}").register(commands)


def _run(args) -> int:
    from medcl.config import load_experiment

    config = load_experiment(args.experiment, args.overrides, output_dir=args.output_dir)  # errors before torch loads
    from medcl.engine.runner import run_experiment
    from medcl.report import format_matrix, format_metrics
    from medcl.rundir import read_matrix_csv

    from medcl.interrupt import report_run_interrupted, sigint_watch

    with sigint_watch() as interrupted:
        try:
            result = run_experiment(config, fresh=args.fresh, dashboard=args.dashboard)
        except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C; Ray Train's handler ends fit with SystemExit
            if isinstance(exc, SystemExit) and not interrupted():
                raise
            return report_run_interrupted(config, args)  # what was kept, the command that resumes; 130
    labels, tasks, values = read_matrix_csv(result.run.matrix)
    print("\nAccuracy matrix (%): rows = before training, then after each task; columns = tasks")
    print(format_matrix(labels, tasks, values))
    if result.run.auc.exists():
        labels, tasks, values = read_matrix_csv(result.run.auc)
        print("\nAUC matrix (%, macro one-vs-rest over each task's classes): rows and columns as above")
        print(format_matrix(labels, tasks, values))
    print("\nMetrics (%):")
    print(format_metrics(result.metrics))
    if result.metrics.get("note"):
        print(f"note: {result.metrics['note']}")
    print(f"\nRun directory: {result.run.path}\nReport: {result.run.report}")
    return 0


def _report(args) -> int:
    from medcl.report import write_report

    if isinstance(args.run_dir, Path):
        print(write_report(args.run_dir))
        return 0
    from medcl.engine.runner import write_run_report  # a run in an object store (medcl.storage)
    from medcl.rundir import RunDir

    write_run_report(RunDir(args.run_dir))
    print(RunDir(args.run_dir).report)
    return 0


def _compare(args) -> int:
    from medcl.compare import compare_runs, comparison_markdown, comparison_warnings, plot_task_curves

    _, rows = compare_runs(args.run_dirs)
    for warning in comparison_warnings(args.run_dirs):
        print(f"medcl: warning: {warning}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    plot = plot_task_curves(args.run_dirs, args.out / "comparison.png")
    table = comparison_markdown(args.run_dirs, rows)
    markdown = args.out / "comparison.md"
    markdown.write_text(f"# Comparison\n\n{table}\n\n![per-task accuracy over training]({plot.name})\n")
    print(f"{table}\n\nWrote {markdown} and {plot}")
    return 0


def _list(args) -> int:
    if args.what == "strategies":  # from a catalogue checked against the sources: no torch (medcl.strategy_catalogue)
        from medcl.strategy_catalogue import catalogue, format_listing

        print(format_listing(catalogue()))
        return 0
    if args.what == "benchmarks":
        from medcl.data import BENCHMARKS as registry
    else:
        from medcl.models import MODELS, list_models

        for name in list_models():
            spec = MODELS.get(name) if name in MODELS else None
            print(f"{name:32s} {getattr(spec, 'description', '') or '(open_clip)'}")
        return 0
    for name in registry.names():
        print(f"{name:16s} {getattr(registry.get(name), 'description', '')}")
    if args.what == "benchmarks":
        from medcl.data.catalog import format_catalog

        print(format_catalog())
    return 0


if __name__ == "__main__":
    sys.exit(main())
