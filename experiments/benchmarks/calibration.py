"""Calibration on real data: medcl's specialist models against MedMNIST v2's published ResNet-18 (28).

    .venv/bin/python experiments/benchmarks/calibration.py                      # seeds 0 1 2
    .venv/bin/python experiments/benchmarks/calibration.py --seeds 0 --docs     # also docs/results/calibration.json

Runs ``experiments/calibration_medmnist.yaml`` (the ``specialist`` strategy: one model per task,
trained from scratch on PneumoniaMNIST and on BreastMNIST) once per seed in Ray Train's local mode
(:mod:`medcl.engine.local`, one worker in this process, the real worker loop) and compares each
task's just-trained test accuracy, ``a[j, j]``, with MedMNIST v2's ResNet-18 (28) test accuracy
(Yang et al., Scientific Data 2023, Table 3): 85.4 % (PneumoniaMNIST) and 86.3 % (BreastMNIST).
A task is "within" when ``|mean over seeds - reference| <= 3`` points and every seed is within too.
The test AUC (macro one-vs-rest, :mod:`medcl.auc`) is set beside MedMNIST's (94.4 and 90.1).

Prints JSON: per task the accuracy and AUC per seed, mean, std, the references and the gap, plus
the engine's wall time per run (training and evaluation, summed over tasks) and the machine load
when it started. Finished runs under ``--out`` are reused (``--fresh`` reruns them). Needs
``../shared/data/medmnist/*.npz``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "experiments" / "calibration_medmnist.yaml"
REFERENCE = {"pneumoniamnist": 85.4, "breastmnist": 86.3}  # MedMNIST v2, Table 3, ResNet-18 (28), ACC
REFERENCE_AUC = {"pneumoniamnist": 94.4, "breastmnist": 90.1}  # the same table, AUC
TOLERANCE = 3.0
DOCS_RESULT = REPO / "docs" / "results" / "calibration.json"


def run_seed(seed: int, out: Path, overrides: list[str], fresh: bool) -> dict:
    """Just-trained accuracy and AUC per task, and the engine's wall time, of one seed's run."""
    from medcl.config import load_experiment
    from medcl.engine.local import run_local

    config = load_experiment(EXPERIMENT, overrides=[f"seed={seed}", f"name=calibration-seed{seed}", *overrides],
                             output_dir=str(out))
    metrics_file = config.run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() and not fresh else {}
    if not metrics.get("complete"):
        metrics = run_local(config, fresh=True).metrics
    return {"seed": seed, "wall_s": sum(metrics["wall_time_s_per_task"]),
            "accuracy": {row["task"]: row["just_trained"] for row in metrics["per_task"]},
            "auc": {row["task"]: row["just_trained"] for row in metrics.get("auc_per_task") or []}}


def summarise(runs: list[dict]) -> dict:
    tasks = {}
    for task, reference in REFERENCE.items():
        values = [run["accuracy"][task] for run in runs]
        mean = statistics.fmean(values)
        aucs = [run["auc"][task] for run in runs if task in run["auc"]]
        tasks[task] = {"per_seed": values, "mean": mean, "std": statistics.pstdev(values),
                       "reference": reference, "gap": mean - reference,
                       "within": abs(mean - reference) <= TOLERANCE
                       and all(abs(v - reference) <= TOLERANCE for v in values),
                       "auc_per_seed": aucs, "auc_mean": statistics.fmean(aucs) if aucs else None,
                       "auc_reference": REFERENCE_AUC[task]}
    return tasks


def docs_result(result: dict) -> dict:
    """``result`` as a ``rows`` table for ``experiments/benchmarks/render_tables.py``."""
    rows = [{"cells": [task, "{seeds}", "{mean:.1f} ± {std:.1f}", "{reference:.1f}", "{gap:+.1f}",
                       "yes" if row["within"] else "no", "{auc:.1f}", "{auc_reference:.1f}"],
             "values": {"seeds": [f"{v:.1f}" for v in row["per_seed"]], "mean": row["mean"], "std": row["std"],
                        "reference": row["reference"], "gap": row["gap"], "auc": row["auc_mean"],
                        "auc_reference": row["auc_reference"]}}
            for task, row in result["tasks"].items()]
    walls = [run["wall_s"] for run in result["runs"]]
    return {"kind": "rows",
            "measured": f"`.venv/bin/python experiments/benchmarks/calibration.py --seeds "
                        f"{' '.join(map(str, result['seeds']))} --docs` ({result['load_note']}; "
                        f"{statistics.fmean(walls):.0f} s per seed for both tasks, training and evaluation), test "
                        "accuracy and AUC (%) of each specialist right after training on its task:",
            "columns": ["task", "accuracy per seed", "mean ± std", "MedMNIST v2 ResNet-18 (28)", "gap",
                        "within 3 points", "AUC (mean)", "MedMNIST AUC"],
            "rows": rows, "result": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "calibration")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fresh", action="store_true", help="rerun finished runs")
    parser.add_argument("--docs", action="store_true", help=f"also write {DOCS_RESULT.relative_to(REPO)}")
    args = parser.parse_args(argv)
    data = REPO.parent / "shared" / "data" / "medmnist"
    if not data.is_dir():
        sys.exit(f"calibration: {data} is absent (PneumoniaMNIST and BreastMNIST .npz files)")
    os.chdir(REPO)  # the experiment's data_root is relative to the repository root
    import ray

    load = os.getloadavg()[0]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = [run_seed(seed, args.out, args.overrides, args.fresh) for seed in args.seeds]
    result = {"benchmark": "calibration", "experiment": str(EXPERIMENT.relative_to(REPO)),
              "overrides": args.overrides, "seeds": args.seeds, "tolerance": TOLERANCE,
              "load_note": f"2-core machine, load average {load:.1f} at start", "runs": runs,
              "tasks": summarise(runs)}
    print(json.dumps(result, indent=2))
    if args.docs:
        DOCS_RESULT.write_text(json.dumps(docs_result(result), indent=2) + "\n")
    return 0 if all(row["within"] for row in result["tasks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
