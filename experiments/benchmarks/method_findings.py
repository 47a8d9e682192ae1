"""The findings studies' runs one after another in this process, then the study's own outputs.

    .venv/bin/python experiments/benchmarks/method_findings.py experiments/studies/findings.yaml
    .venv/bin/python experiments/benchmarks/method_findings.py experiments/studies/findings_repeated.yaml \\
        --methods finetune mslora_cr --set seeds=[0,1]

What this script runs is a study file (``experiments/studies/findings*.yaml``: methods, fixed
parameters, claims, ablations, seeds; ``medcl study`` runs the same file with Ray Tune, its runs
side by side). Here every (method, seed, order) of the study's grid is an ordinary run in Ray
Train's local mode (one worker in this process, :mod:`medcl.engine.local`), one after another,
under ``--out/<study name>/<label>-seed<seed>[-<order>]``; a finished run is reused (``--fresh``
reruns). The outputs then come from the study itself, adopting these runs
(:func:`medcl.study.runner.adopt_study`, nothing rerun): ``study.json``, the tables (accuracy, the
claims with their paired differences and verdicts, the ablations, costs), plots and the board,
in the study's folder (``output_dir/name``). ``docs/findings.md`` is rendered from that
``study.json`` (``render_tables.py --study ... --as findings``).

This is the sequential, single-process way to make a study's runs (no Ray Tune, one core): the
baseline against which ``medcl study`` is timed (docs/studies.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_one(raw: dict, fresh: bool) -> dict:
    """metrics.json of one run (reused when complete), with ``bench_wall_s``: the run end to end."""
    from medcl.config import validate_experiment
    from medcl.engine.local import run_local

    config = validate_experiment(raw)
    metrics_file = config.run_dir / "metrics.json"
    if not fresh and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("complete"):
            return metrics
    started = time.perf_counter()
    metrics = run_local(config, fresh=True).metrics
    metrics["bench_wall_s"] = time.perf_counter() - started
    metrics_file.write_text(json.dumps(metrics, indent=2))
    return metrics


def run_name(label: str, point: dict) -> str:
    from medcl.study.plan import order_label

    suffix = "" if point["order"] is None else "-" + order_label(point["order"]).replace(">", "_")
    return f"{label}-seed{point['seed']}{suffix}"


def run_all(study, labels: list[str], out: Path, fresh: bool) -> float:
    """Every grid point of the ``labels`` methods, one after another; returns the seconds it took."""
    from medcl.study.adopt import point_experiment
    from medcl.study.plan import grid_points

    started = time.perf_counter()
    for label in labels:
        for point in grid_points(study):
            raw = {**point_experiment(study, study.method(label), point), "name": run_name(label, point),
                   "output_dir": str(out)}
            metrics = run_one(raw, fresh)
            print(f"{label} seed {point['seed']}: Avg {metrics.get('avg', float('nan')):.1f} "
                  f"({metrics.get('bench_wall_s', 0):.0f} s)", flush=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_file", type=Path, nargs="?", default=REPO / "experiments" / "studies" / "findings.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study field, as `medcl study --set` (seeds=[0,1], experiment.train.steps_per_task=20)")
    parser.add_argument("--methods", nargs="+", default=None, help="labels to run (default: every method of the study)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "method_findings",
                        help="run directories go under OUT/<study name>/")
    parser.add_argument("--fresh", action="store_true", help="rerun finished runs")
    args = parser.parse_args(argv)
    from medcl.study import load_study

    study = load_study(args.study_file, args.overrides)
    pretrained = study.experiment.get("model", {}).get("pretrained")
    if pretrained and not Path(pretrained).is_file():
        sys.exit(f"method_findings: {pretrained} not found: run `make demo` (or `medcl pretrain "
                 "experiments/pretrain_synthmed.yaml`) first")
    labels = args.methods or [m.label for m in study.methods]
    unknown = sorted(set(labels) - {m.label for m in study.methods})
    if unknown:
        sys.exit(f"method_findings: --methods {unknown}: not in {args.study_file}")
    from medcl.engine.localray import init_local_ray
    from medcl.study.runner import adopt_study

    init_local_ray(1)  # on loopback only (medcl.engine.loopback)
    folder = args.out.resolve() / study.name
    wall = run_all(study, labels, folder, args.fresh)
    payload = adopt_study(study, [folder])
    tables = Path(payload["folder"]) / "tables"
    for name in ("accuracy", "claims", "ablations"):
        if (tables / f"{name}.md").is_file():
            print((tables / f"{name}.md").read_text())
    print(json.dumps({"study": study.name, "runs_made_or_reused": len(payload["runs"]), "wall_s": round(wall, 1),
                      "missing": payload.get("missing", []), "study_json": str(Path(payload["folder"]) / "study.json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
