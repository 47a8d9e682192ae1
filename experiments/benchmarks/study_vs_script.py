"""The same runs made by ``method_findings.py`` (one after another, one process) and by ``medcl study``
(Ray Tune, runs side by side): wall time of each, per-run wall, and whether every run's accuracies agree.

    .venv/bin/python experiments/benchmarks/study_vs_script.py                       # finetune, zscl x seeds 0-2
    .venv/bin/python experiments/benchmarks/study_vs_script.py --methods finetune --seeds 0 --steps 5

The study file (default ``experiments/studies/findings.yaml``) is cut to ``--methods`` and ``--seeds``
(claims between kept methods only, no ablations) and written to a fresh temporary folder; both
commands start there from nothing. Measure on a quiet machine (check ``uptime``): the JSON records
the load average before each. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def cut_study(source: Path, methods: list[str], seeds: list[int], steps: int | None, folder: Path) -> Path:
    """``source`` cut to ``methods`` x ``seeds`` (and ``steps`` per task), its outputs under ``folder``."""
    raw = yaml.safe_load(source.read_text())
    raw["methods"] = [m for m in raw["methods"] if m["label"] in methods]
    raw["claims"] = [c for c in raw.get("claims", []) if c["left"] in methods and c["right"] in methods]
    raw["ablations"], raw["seeds"], raw["name"] = [], seeds, "timed"
    raw["output_dir"] = str(folder / "study")
    if steps is not None:
        raw["experiment"].setdefault("train", {})["steps_per_task"] = steps
    pretrained = raw["experiment"].get("model", {}).get("pretrained")
    if pretrained and not os.path.isabs(pretrained):
        raw["experiment"]["model"]["pretrained"] = str(REPO / pretrained)
    target = folder / "timed.yaml"
    target.write_text(yaml.safe_dump(raw, sort_keys=False))
    return target


def timed(command: list[str], log: Path) -> dict:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"study_vs_script: {' '.join(command)} exited {code}; see {log}")
    return {"wall_s": round(time.perf_counter() - started, 1), "load_before": round(load, 2)}


def script_runs(folder: Path) -> dict:
    """``{(label, seed): (avg, wall)}`` of the script's run directories ``<label>-seed<n>``."""
    out = {}
    for metrics_file in folder.glob("*/metrics.json"):
        label, _, seed = metrics_file.parent.name.rpartition("-seed")
        metrics = json.loads(metrics_file.read_text())
        out[(label, int(seed))] = (metrics["avg"], metrics.get("bench_wall_s"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=REPO / "experiments" / "studies" / "findings.yaml")
    parser.add_argument("--methods", nargs="+", default=["finetune", "zscl"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="steps per task (default: the study's)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="study-vs-script-") as tmp:
        folder = Path(tmp)
        study = cut_study(args.study, args.methods, args.seeds, args.steps, folder)
        script = timed([str(BIN / "python"), "experiments/benchmarks/method_findings.py", str(study), "--out",
                        str(folder / "script"), "--set", f"output_dir={folder / 'script-outputs'}"], folder / "script.log")
        tuned = timed([str(BIN / "medcl"), "study", str(study)], folder / "study.log")
        payload = json.loads((folder / "study" / "timed" / "study.json").read_text())
        made = script_runs(folder / "script" / "timed")
        runs = [{"method": r["method"], "seed": r["seed"], "study_run_wall_s": r["trial_wall_s"],
                 "script_run_wall_s": made[(r["method"], r["seed"])][1],
                 "same_avg": r["metrics"]["avg"] == made[(r["method"], r["seed"])][0]} for r in payload["runs"]]
    print(json.dumps({"benchmark": "study_vs_script", "methods": args.methods, "seeds": args.seeds,
                      "cpus": os.cpu_count(), "script": script, "study": tuned,
                      "study_over_script": round(tuned["wall_s"] / script["wall_s"], 3),
                      "every_run_same_avg": all(r["same_avg"] for r in runs), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
