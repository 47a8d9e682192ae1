"""The seed papers' qualitative findings, reproduced from the demo's pretrained CLIP (issue "Results a
researcher can trust").

    .venv/bin/python experiments/benchmarks/method_findings.py                     # synthmed + medical, seeds 0 1 2
    .venv/bin/python experiments/benchmarks/method_findings.py --sequence synthmed --seeds 0 --steps 60

Every strategy runs the same sequence from the same pretrained weights (``make demo`` writes them:
``runs/pretrain-synthmed/model.safetensors``; ``--pretrained`` for others), in Ray Train's local
mode (one worker in this process, :mod:`medcl.engine.local`), once per seed. Sequences:

* ``synthmed``: xray -> ultrasound -> fundus (32 px, 120 train / 50 test images per class);
* ``medical``: PneumoniaMNIST -> BreastMNIST -> MedNIST from ``../shared/data`` (skipped, with the
  reason, when that folder is absent).

Prints JSON (per sequence: mean and std over seeds of Transfer / Avg / Last / BWT and wall time per
strategy, wall time relative to ``finetune``, and each finding with the numbers it rests on) and
writes ``findings.json`` and ``findings.md`` (a table) under ``--out``. The findings checked:

(a) ZSCL, PRIMED, WiSE-FT and LwF keep more Transfer than fine-tuning (ZSCL, Zheng et al. 2023);
(b) PRIMED >= ZSCL on Avg and Last, and PRIMED > primed_uniform and primed_bm25 on Avg (PRIMED's claim
    and ablations);
(c) rehearsal raises Last and BWT over fine-tuning (CLMFM, Yi et al. 2023);
(d) MSLoRA-CR >= lora_incremental on Last (MSLoRA-CR's +1.88 %);
(e) joint and specialist reach at least fine-tuning's Last (upper bounds of the sequence);
(f) PRIMED's baselines: MoE-Adapters keeps more Transfer and reaches a higher Last than fine-tuning
    (PRIMED's Table: 56.8 / 76.1 vs 51.4 / 70.8), iCaRL's exemplars raise Last over fine-tuning.
``primed_uniform`` is the paper's PRIMED_uni (30 uniform keywords, sized like ZSCL's reference set
here: 300 pairs); ``primed_bm25`` the same-size BM25 ablation.

A finding that does not hold is reported as such; the numbers are never tuned until they agree.
Finished runs under ``--out`` are reused (``--fresh`` reruns them).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PRETRAINED = REPO / "runs" / "pretrain-synthmed" / "model.safetensors"
SHARED_DATA = REPO.parent / "shared" / "data"
METRICS = ("transfer", "avg", "last", "bwt")
ZSCL_REFERENCE = {"name": "synthmed", "seed": 1, "domains": ["histology", "ct", "dermoscopy"], "per_class": 20}
ZSCL_REFERENCE_SIZE = 300  # pairs in ZSCL_REFERENCE: PRIMED_uni (primed_uniform) is sized like ZSCL's set
STRATEGIES = {
    "finetune": {}, "joint": {}, "specialist": {},
    "rehearsal": {"buffer_size": 300, "policy": "class_balanced", "replay_fraction": 0.5},
    "l2": {}, "ewc": {}, "lwf": {}, "wiseft": {},
    "zscl": {"reference": ZSCL_REFERENCE},
    "primed": {}, "primed_uniform": {"size": ZSCL_REFERENCE_SIZE}, "primed_bm25": {},
    "lora_incremental": {"rank": 8, "lora_alpha": 8}, "mslora_cr": {"rank": 8, "lora_alpha": 8},
    "icarl": {"buffer_size": 300, "replay_fraction": 0.5},
    "moe_adapters": {"num_experts": 22, "top_k": 2, "bottleneck": 16},
}


# Learning rates of methods that train only small added modules, as their authors train them (every
# other method fine-tunes the whole model at --lr): MoE-Adapters trains its adapters at 1e-3 to 5e-3.
LR = {"moe_adapters": 3e-3}


def benchmark_section(sequence: str) -> dict:
    if sequence == "synthmed":
        return {"name": "synthmed", "order": ["xray", "ultrasound", "fundus"], "image_size": 32,
                "train_per_class": 120, "test_per_class": 50}
    return {"name": "sequence", "data_root": str(SHARED_DATA), "image_size": 32,
            "tasks": [{"adapter": "medmnist", "dataset": "pneumoniamnist", "root": "medmnist"},
                      {"adapter": "medmnist", "dataset": "breastmnist", "root": "medmnist"},
                      {"adapter": "imagefolder", "dataset": "mednist", "root": "mednist/MedNIST"}],
            "order": ["pneumoniamnist", "breastmnist", "mednist"]}


def experiment(sequence: str, strategy: str, seed: int, args) -> dict:
    return {"name": f"{strategy}-seed{seed}", "seed": seed, "output_dir": str(Path(args.out) / sequence),
            "benchmark": benchmark_section(sequence),
            "model": {"name": args.model, "pretrained": str(args.pretrained)},
            "strategy": {"name": strategy, **STRATEGIES[strategy]},
            "train": {"workers": 1, "batch_size": 64, "lr": LR.get(strategy, args.lr), "steps_per_task": args.steps},
            "telemetry": False}


def run_one(raw: dict, fresh: bool) -> dict:
    """metrics.json of one run (reused when complete) plus its wall time."""
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


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per strategy: mean and std over seeds of each metric and of the wall time."""
    out = {}
    for strategy, seeds in runs.items():
        row = {}
        for key in METRICS + ("bench_wall_s",):
            values = [m[key] for m in seeds if m.get(key) is not None]
            if values:
                row[key] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}
        row["seeds"] = len(seeds)
        params = [m["trainable_parameters"] for m in seeds if m.get("trainable_parameters") is not None]
        if params:
            row["trainable_parameters"] = max(params)  # the same for every seed
        out[strategy] = row
    base = out.get("finetune", {}).get("bench_wall_s", {}).get("mean")
    for row in out.values():
        if base and "bench_wall_s" in row:
            row["wall_vs_finetune"] = row["bench_wall_s"]["mean"] / base
    return out


def findings(summary: dict) -> list[dict]:
    """Each finding: its claim, the compared means, whether it holds (None: a strategy missing) and
    whether the difference exceeds the seeds' noise, sqrt(std_left^2 + std_right^2) ("clear")."""
    def stat(strategy, metric, key):
        return summary.get(strategy, {}).get(metric, {}).get(key)

    def compare(claim, left, right, metric, strict=True):
        a, b = stat(left, metric, "mean"), stat(right, metric, "mean")
        if a is None or b is None:
            return {"claim": claim, "metric": metric, "holds": None}
        noise = (stat(left, metric, "std") ** 2 + stat(right, metric, "std") ** 2) ** 0.5
        return {"claim": claim, "metric": metric, left: a, right: b, "difference": a - b, "noise": noise,
                "holds": a > b if strict else a >= b, "clear": abs(a - b) > noise}

    checks = [compare(f"(a) {s} keeps more Transfer than finetune", s, "finetune", "transfer")
              for s in ("zscl", "primed", "wiseft", "lwf")]
    checks += [compare("(b) primed >= zscl on Avg", "primed", "zscl", "avg", strict=False),
               compare("(b) primed >= zscl on Last", "primed", "zscl", "last", strict=False),
               compare("(b) primed > primed_uniform on Avg", "primed", "primed_uniform", "avg"),
               compare("(b) primed > primed_bm25 on Avg", "primed", "primed_bm25", "avg"),
               compare("(c) rehearsal raises Last over finetune", "rehearsal", "finetune", "last"),
               compare("(c) rehearsal raises BWT over finetune", "rehearsal", "finetune", "bwt"),
               compare("(d) mslora_cr >= lora_incremental on Last", "mslora_cr", "lora_incremental", "last",
                       strict=False),
               compare("(e) joint bounds finetune's Last", "joint", "finetune", "last", strict=False),
               compare("(e) specialist bounds finetune's Last", "specialist", "finetune", "last", strict=False),
               compare("(f) moe_adapters keeps more Transfer than finetune", "moe_adapters", "finetune", "transfer"),
               compare("(f) moe_adapters raises Last over finetune", "moe_adapters", "finetune", "last"),
               compare("(f) icarl raises Last over finetune", "icarl", "finetune", "last")]
    return checks


def table(sequence: str, summary: dict, checks: list[dict]) -> str:
    def cell(row, key):
        value = row.get(key)
        return f"{value['mean']:.1f} ± {value['std']:.1f}" if value else "–"

    lines = [f"### {sequence}", "", "| strategy | Transfer | Avg | Last | BWT | trainable parameters | wall vs finetune |",
             "|---|---|---|---|---|---|---|"]
    for strategy, row in summary.items():
        ratio = f"{row['wall_vs_finetune']:.2f}" if "wall_vs_finetune" in row else "–"
        params = f"{row['trainable_parameters']:,}" if row.get("trainable_parameters") else "–"
        lines.append(f"| {strategy} | " + " | ".join(cell(row, k) for k in METRICS) + f" | {params} | {ratio} |")
    lines += ["", "| finding | difference (noise) | holds |", "|---|---|---|"]
    for c in checks:
        verdict = "not run" if c["holds"] is None else ("yes" if c["holds"] else "no") + ("" if c["clear"] else ", within noise")
        numbers = f"{c['difference']:+.1f} ({c['noise']:.1f})" if c["holds"] is not None else "–"
        lines.append(f"| {c['claim']} | {numbers} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence", choices=["synthmed", "medical", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--steps", type=int, default=100, help="steps per task")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--model", default="medcl-tiny-vit-p4")
    parser.add_argument("--pretrained", type=Path, default=DEFAULT_PRETRAINED)
    parser.add_argument("--out", default=str(REPO / "runs" / "method_findings"))
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    if not args.pretrained.is_file():
        sys.exit(f"method_findings: {args.pretrained} not found: run `make demo` (or `medcl pretrain "
                 "experiments/pretrain_synthmed.yaml`) first, or pass --pretrained")
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    sequences = ["synthmed", "medical"] if args.sequence == "both" else [args.sequence]
    result = {"benchmark": "method_findings", "seeds": args.seeds, "steps_per_task": args.steps, "lr": args.lr, "lr_by_strategy": LR,
              "model": args.model, "sequences": {}}
    markdown = []
    for sequence in sequences:
        if sequence == "medical" and not SHARED_DATA.is_dir():
            result["sequences"][sequence] = {"skipped": f"{SHARED_DATA} is absent (real MedMNIST/MedNIST files)"}
            continue
        runs = {s: [run_one(experiment(sequence, s, seed, args), args.fresh) for seed in args.seeds]
                for s in args.strategies}
        summary = summarise(runs)
        checks = findings(summary)
        result["sequences"][sequence] = {"summary": summary, "findings": checks}
        markdown.append(table(sequence, summary, checks))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "findings.json").write_text(json.dumps(result, indent=2))
    (out / "findings.md").write_text("\n".join(markdown))
    print(json.dumps(result, indent=2))
    print("\n".join(markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
