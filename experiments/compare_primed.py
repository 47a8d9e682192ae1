"""PRIMED against finetune, rehearsal and ZSCL (and the uniform-retrieval ablation), then one comparison.

    python experiments/compare_primed.py synthmed                       # experiments/primed_synthmed.yaml
    python experiments/compare_primed.py medical                        # experiments/primed_medical.yaml
    python experiments/compare_primed.py synthmed primed finetune --set train.steps_per_task=40 --fresh

Each strategy runs the experiment file with ``strategy`` replaced by ``{name, **PARAMS[name]}``
(PRIMED keeps the file's own strategy section), named ``<file name>-<strategy>``; finished runs are
reused (the usual resume). Then ``medcl compare`` writes ``<output_dir>/<file name>/comparison.md``
(Transfer, Avg, Last, BWT, Forgetting, FWT, wall time and its ratio to finetune) and
``comparison.png``. Build the corpus and index first (commands at the top of each YAML file).
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

EXPERIMENTS = {"synthmed": "primed_synthmed.yaml", "medical": "primed_medical.yaml"}
STRATEGIES = ("finetune", "rehearsal", "zscl", "primed", "primed_uniform")
PARAMS = {
    "rehearsal": {"buffer_size": 300, "policy": "class_balanced", "replay_fraction": 0.5},
    # ZSCL's reference pairs: synthmed domains outside the synthmed sequence (the ZSCL default style)
    "zscl": {"reference": {"name": "synthmed", "seed": 1, "domains": ["histology", "ct", "dermoscopy"], "per_class": 20},
             "ensemble_period": 0.1},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("strategies", nargs="*", help=f"default: {' '.join(STRATEGIES)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fresh", action="store_true", help="rerun finished strategies too")
    args = parser.parse_args(argv)
    path = Path(__file__).with_name(EXPERIMENTS[args.experiment])
    raw = apply_overrides(yaml.safe_load(path.read_text()), args.overrides)
    out = Path(raw.get("output_dir", "runs")) / raw["name"]
    run_dirs, failed = [], []
    for name in args.strategies or STRATEGIES:
        experiment = copy.deepcopy(raw)
        experiment["name"], experiment["output_dir"] = f"{raw['name']}-{name}", str(out)
        if not name.startswith("primed"):
            experiment["strategy"] = {"name": name, **PARAMS.get(name, {})}
        experiment["strategy"]["name"] = name
        try:
            config = validate_experiment(resolve_paths(experiment, ExperimentConfig), str(path))  # paths: from the cwd
            run_dirs.append(str(run_experiment(config, fresh=args.fresh).run.path))
        except Exception as exc:  # one failed strategy should not lose the others' comparison
            print(f"compare_primed: {name} failed: {exc}", file=sys.stderr)
            failed.append(name)
    status = medcl_main(["compare", *run_dirs, "--out", str(out)]) if run_dirs else 1
    if failed:
        print(f"compare_primed: failed: {', '.join(failed)}", file=sys.stderr)
    return status or int(bool(failed))


if __name__ == "__main__":
    sys.exit(main())
