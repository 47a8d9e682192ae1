"""Every registered strategy on the synthmed sequence of compare_synthmed.yaml, then one comparison.

    python experiments/compare_synthmed.py                        # all strategies
    python experiments/compare_synthmed.py finetune rehearsal     # a subset
    python experiments/compare_synthmed.py --set train.steps_per_task=40 --fresh

Each strategy runs as experiment ``compare_synthmed-<strategy>`` (the YAML file with
``strategy: {name: <strategy>, **STRATEGY_PARAMS[strategy]}``), one TorchTrainer each; a finished
run is reused (the usual resume), so re-running only runs what is missing. Then ``medcl compare``
writes ``<output_dir>/comparison.md`` (Transfer, Avg, Last, BWT, Forgetting, FWT, wall time and
its ratio to finetune) and ``comparison.png`` (per-task accuracy over training, one panel a run).
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

from medcl.cli import main as medcl_main
from medcl.config import ExperimentConfig, apply_overrides, validate_experiment
from medcl.paths import resolve_paths
from medcl.engine.runner import run_experiment
from medcl.strategies import STRATEGIES

EXPERIMENT = Path(__file__).with_suffix(".yaml")
# Non-default parameters per strategy (the others run with their defaults).
STRATEGY_PARAMS = {
    "rehearsal": {"buffer_size": 300, "policy": "class_balanced", "replay_fraction": 0.5},
    "zscl": {"reference": {"name": "synthmed", "seed": 1, "domains": ["histology", "ct", "dermoscopy"], "per_class": 20},
             "ensemble_period": 0.1},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("strategies", nargs="*", help="strategies to run (default: every registered one)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fresh", action="store_true", help="rerun finished strategies too")
    args = parser.parse_args(argv)
    raw = apply_overrides(yaml.safe_load(EXPERIMENT.read_text()), args.overrides)
    run_dirs, failed = [], []
    for name in args.strategies or STRATEGIES.names():
        experiment = copy.deepcopy(raw)
        experiment["name"] = f"{raw['name']}-{name}"
        experiment["strategy"] = {"name": name, **STRATEGY_PARAMS.get(name, {})}
        try:
            config = validate_experiment(resolve_paths(experiment, ExperimentConfig), str(EXPERIMENT))  # paths: from the cwd
            run_dirs.append(str(run_experiment(config, fresh=args.fresh).run.path))
        except Exception as exc:  # one broken strategy should not lose the others' comparison
            print(f"compare_synthmed: {name} failed: {exc}", file=sys.stderr)
            failed.append(name)
    status = medcl_main(["compare", *run_dirs, "--out", raw.get("output_dir", "runs")]) if run_dirs else 1
    if failed:
        print(f"compare_synthmed: failed: {', '.join(failed)}", file=sys.stderr)
    return status or int(bool(failed))


if __name__ == "__main__":
    sys.exit(main())
