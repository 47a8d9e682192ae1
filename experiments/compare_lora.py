"""MSLoRA-CR against its two LoRA baselines on one sequence, then one comparison table.

    python experiments/compare_lora.py                                   # experiments/mslora_synthmed.yaml
    python experiments/compare_lora.py experiments/mslora_medical.yaml   # the shared medical sequence
    python experiments/compare_lora.py --set train.steps_per_task=40 --set strategy.rank=4 --fresh

Each strategy (mslora_cr, lora_incremental, lora_separate) runs as experiment ``<name>-<strategy>``
(the YAML file with ``strategy.name`` replaced; ``alpha``/``beta`` dropped for the baselines, which
have none), one after the other; a finished run is reused (the usual resume). Then ``medcl compare``
writes ``<output_dir>/<name>/comparison.md`` + ``comparison.png``, and this script prints (and writes
as ``lora.md`` beside them) Transfer, Avg, Last, BWT, trainable parameters per task, the adapter
parameters stored after the last task and the wall time (train + evaluation summed over tasks).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml

from medcl.cli import main as medcl_main
from medcl.config import ExperimentConfig, apply_overrides, validate_experiment
from medcl.paths import resolve_paths
from medcl.engine.runner import run_experiment

DEFAULT = Path(__file__).with_name("mslora_synthmed.yaml")
STRATEGIES = ("mslora_cr", "lora_incremental", "lora_separate")
CR_ONLY = ("alpha", "beta")


def strategy_section(base: dict, name: str) -> dict:
    """The experiment's strategy parameters for ``name`` (the regularisers only for mslora_cr)."""
    params = {k: v for k, v in base.items() if k != "name" and (name == "mslora_cr" or k not in CR_ONLY)}
    return {"name": name, **params}


def table(run_dirs: list[Path]) -> str:
    header = ["strategy", "Transfer", "Avg", "Last", "BWT", "trainable params / task", "adapter params stored", "wall (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run_dir in run_dirs:
        m = json.loads((run_dir / "metrics.json").read_text())
        num = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        stored = (m.get("strategy_metrics_per_task") or [{}])[-1].get("adapter_parameters")
        lines.append("| " + " | ".join([m["strategy"], num(m.get("transfer")), num(m.get("avg")), num(m.get("last")),
                                         num(m.get("bwt")), f"{m.get('trainable_parameters', 0):,}",
                                         f"{stored:,}" if stored is not None else "n/a",
                                         f"{sum(m.get('wall_time_s_per_task') or []):.1f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fresh", action="store_true", help="rerun finished strategies too")
    args = parser.parse_args(argv)
    raw = apply_overrides(yaml.safe_load(args.experiment.read_text()), args.overrides)
    run_dirs = []
    for name in args.strategies:
        experiment = copy.deepcopy(raw)
        experiment["name"] = f"{raw['name']}-{name}"
        experiment["strategy"] = strategy_section(raw["strategy"], name)
        config = validate_experiment(resolve_paths(experiment, ExperimentConfig), str(args.experiment))
        run_dirs.append(run_experiment(config, fresh=args.fresh).run.path)
    out = Path(raw.get("output_dir", "runs")) / raw["name"]
    status = medcl_main(["compare", *map(str, run_dirs), "--out", str(out)])
    text = table(run_dirs)
    (out / "lora.md").write_text(f"# {raw['name']}: LoRA strategies\n\n{text}\n")
    print(f"\n{text}\n\nWrote {out / 'lora.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
