"""The seed papers' qualitative findings, reproduced from the demo's pretrained CLIP (issue "Results a
researcher can trust").

    .venv/bin/python experiments/benchmarks/method_findings.py                     # synthmed + medical, seeds 0-4
    .venv/bin/python experiments/benchmarks/method_findings.py --sequence synthmed --seeds 0 --steps 60

Every strategy runs the same sequence from the same pretrained weights (``make demo`` writes them:
``runs/pretrain-synthmed/model.safetensors``; ``--pretrained`` for others), in Ray Train's local
mode (one worker in this process, :mod:`medcl.engine.local`), once per seed. Sequences:

* ``synthmed``: xray -> ultrasound -> fundus (32 px, 120 train / 50 test images per class);
* ``medical``: PneumoniaMNIST -> BreastMNIST -> MedNIST from ``../shared/data`` (skipped, with the
  reason, when that folder is absent).

Prints JSON (per sequence: per-seed values, mean and 95 % t-interval of Transfer / Avg / Last / BWT and
wall time per strategy, wall time relative to ``finetune``, and each finding as a paired difference over
the shared seeds with its interval and verdict: holds / fails / inconclusive, :mod:`medcl.stats`) and
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
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PRETRAINED = REPO / "runs" / "pretrain-synthmed" / "model.safetensors"
SHARED_DATA = REPO.parent / "shared" / "data"
METRICS = ("transfer", "avg", "last", "bwt")
ZSCL_REFERENCE = {"name": "synthmed", "seed": 1, "domains": ["histology", "ct", "dermoscopy"], "per_class": 20}
HELD_OUT_DOMAINS = ZSCL_REFERENCE["domains"]  # PRIMED's built-in corpus = ZSCL's reference set (same pairs)
ZSCL_REFERENCE_SIZE = 300  # pairs in ZSCL_REFERENCE: PRIMED_uni (primed_uniform) is sized like ZSCL's set
STRATEGIES = {  # label -> the strategy section (``name`` defaults to the label)
    "finetune": {}, "joint": {}, "specialist": {},
    "rehearsal": {"buffer_size": 300, "policy": "class_balanced", "replay_fraction": 0.5},
    "l2": {}, "ewc": {}, "lwf": {}, "wiseft": {},
    "zscl": {"reference": ZSCL_REFERENCE},
    "primed": {"builtin_domains": HELD_OUT_DOMAINS},
    "primed_uniform": {"size": ZSCL_REFERENCE_SIZE, "builtin_domains": HELD_OUT_DOMAINS},
    "primed_bm25": {"builtin_domains": HELD_OUT_DOMAINS},
    "lora_incremental": {"rank": 8, "lora_alpha": 8}, "mslora_cr": {"rank": 8, "lora_alpha": 8},
    "icarl": {"buffer_size": 300, "replay_fraction": 0.5},
    "moe_adapters": {},  # the authors' defaults: 22 experts, top-2, bottleneck 64
}
# Ablations: one choice switched at a time against the method's default (docs/findings.md, "Ablations").
ABLATIONS = {
    "primed_ckt_mean": {"name": "primed", "builtin_domains": HELD_OUT_DOMAINS, "ckt_reduction": "mean"},
    "primed_tau_zscl": {"name": "primed", "builtin_domains": HELD_OUT_DOMAINS, "tau": 0.135},  # ZSCL's T / s = 2 / 14.8
    "primed_dfg1": {"name": "primed", "builtin_domains": HELD_OUT_DOMAINS, "dfg": 1.0},
    "primed_task_domains": {"name": "primed", "builtin_domains": ["xray", "ultrasound", "fundus", "histology", "ct",
                                                                  "dermoscopy"]},
    "zscl_no_ensemble": {"name": "zscl", "reference": ZSCL_REFERENCE, "ensemble_period": 0},
    "zscl_no_l2": {"name": "zscl", "reference": ZSCL_REFERENCE, "l2": 0.0},
    "zscl_student_pairs": {"name": "zscl", "reference": ZSCL_REFERENCE, "text_features": "student_pairs"},
    "wiseft_05": {"name": "wiseft", "weight": 0.5},
}
VARIANTS = {**STRATEGIES, **ABLATIONS}


SEQUENCES = ("synthmed", "repeated", "medical")
ISSUE_ABLATIONS = ["primed_ckt_mean", "primed_tau_zscl", "primed_dfg1", "primed_task_domains", "zscl_no_ensemble",
                   "zscl_no_l2"]  # the others (zscl_student_pairs, wiseft_05) on request: --strategies
SEQUENCE_VARIANTS = {  # what each sequence runs by default: the repeated one tests MSLoRA-CR's claim (d)
    "synthmed": list(STRATEGIES) + ISSUE_ABLATIONS, "repeated": ["finetune", "lora_incremental", "mslora_cr"], "medical": list(STRATEGIES)}


def strategy_section(label: str) -> dict:
    """The experiment's ``strategy`` section of a variant label."""
    section = dict(VARIANTS[label])
    return {"name": section.pop("name", label), **section}


# Learning rates of methods that train only small added modules, as their authors train them (every
# other method fine-tunes the whole model at --lr): MoE-Adapters trains its adapters at 1e-3 to 5e-3.
LR = {"moe_adapters": 3e-3}


def benchmark_section(sequence: str) -> dict:
    if sequence == "synthmed":
        return {"name": "synthmed", "order": ["xray", "ultrasound", "fundus"], "image_size": 32,
                "train_per_class": 120, "test_per_class": 50}
    if sequence == "repeated":  # modalities repeat: xray-1, ultrasound-1, xray-2, ultrasound-2 (MSLoRA-CR's pull acts)
        return {"name": "synthmed", "domains": ["xray", "ultrasound"], "tasks_per_domain": 2, "image_size": 32,
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
            "strategy": strategy_section(strategy),
            "train": {"workers": 1, "batch_size": 64, "lr": LR.get(strategy_section(strategy)["name"], args.lr),
                      "steps_per_task": args.steps},
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


def summarise(runs: dict[str, dict[int, dict]]) -> dict:
    """Per strategy: each metric's per-seed values, mean and 95 % t-interval (:mod:`medcl.stats`),
    and the wall time relative to fine-tuning."""
    from medcl.stats import t_interval

    out = {}
    for strategy, by_seed in runs.items():
        row = {}
        for key in METRICS + ("bench_wall_s",):
            values = {seed: m[key] for seed, m in by_seed.items() if m.get(key) is not None}
            if values:
                row[key] = {"per_seed": values, **t_interval(list(values.values())).as_dict()}
        row["seeds"] = len(by_seed)
        params = [m["trainable_parameters"] for m in by_seed.values() if m.get("trainable_parameters") is not None]
        if params:
            row["trainable_parameters"] = max(params)  # the same for every seed
        out[strategy] = row
    base = out.get("finetune", {}).get("bench_wall_s", {}).get("mean")
    for row in out.values():
        if base and "bench_wall_s" in row:
            row["wall_vs_finetune"] = row["bench_wall_s"]["mean"] / base
    return out


CLAIMS = (  # (claim, left, right, metric): each claims left > right on metric
    *((f"(a) {s} keeps more Transfer than finetune", s, "finetune", "transfer") for s in ("zscl", "primed", "wiseft", "lwf")),
    ("(b) primed > zscl on Avg", "primed", "zscl", "avg"),
    ("(b) primed > zscl on Last", "primed", "zscl", "last"),
    ("(b) primed_uniform > zscl on Avg (loss only, identical reference pairs)", "primed_uniform", "zscl", "avg"),
    ("(b) primed_uniform > zscl on Last (loss only, identical reference pairs)", "primed_uniform", "zscl", "last"),
    ("(b) primed > primed_uniform on Avg", "primed", "primed_uniform", "avg"),
    ("(b) primed > primed_bm25 on Avg", "primed", "primed_bm25", "avg"),
    ("(c) rehearsal raises Last over finetune", "rehearsal", "finetune", "last"),
    ("(c) rehearsal raises BWT over finetune", "rehearsal", "finetune", "bwt"),
    ("(d) mslora_cr > lora_incremental on Last", "mslora_cr", "lora_incremental", "last"),
    ("(e) joint bounds finetune's Last", "joint", "finetune", "last"),
    ("(e) specialist bounds finetune's Last", "specialist", "finetune", "last"),
    ("(f) moe_adapters keeps more Transfer than finetune", "moe_adapters", "finetune", "transfer"),
    ("(f) moe_adapters raises Last over finetune", "moe_adapters", "finetune", "last"),
    ("(f) icarl raises Last over finetune", "icarl", "finetune", "last"),
)


def findings(summary: dict) -> list[dict]:
    """Each claim as a *paired* difference over the shared seeds (left - right per seed), with its
    95 % t-interval and verdict: holds / fails only when the interval excludes 0, else inconclusive
    (:func:`medcl.stats.paired_difference`); ``verdict`` None when a strategy was not run."""
    from medcl.stats import paired_difference

    checks = []
    for claim, left, right, metric in CLAIMS:
        a = summary.get(left, {}).get(metric, {}).get("per_seed")
        b = summary.get(right, {}).get(metric, {}).get("per_seed")
        if not a or not b:
            checks.append({"claim": claim, "metric": metric, "left": left, "right": right, "verdict": None})
            continue
        diff = paired_difference(a, b, direction=+1)
        checks.append({"claim": claim, "metric": metric, "left": left, "right": right, **diff.as_dict()})
    return checks


def ablations(summary: dict) -> list[dict]:
    """Each ablation that ran against its method's default: paired differences (ablation - default)
    on Transfer, Avg and Last with 95 % intervals; no direction is claimed (verdicts on +1)."""
    from medcl.stats import paired_difference

    rows = []
    for label, section in ABLATIONS.items():
        base = section["name"]
        if label not in summary or base not in summary:
            continue
        row = {"ablation": label, "base": base, "changed": {k: v for k, v in section.items() if k != "name"
                                                               and STRATEGIES.get(base, {}).get(k) != v}}
        for metric in ("transfer", "avg", "last"):
            diff = paired_difference(summary[label][metric]["per_seed"], summary[base][metric]["per_seed"])
            row[metric] = diff.as_dict()
        rows.append(row)
    return rows


def ablation_table(rows: list[dict]) -> str:
    from medcl.stats import Interval, format_interval

    if not rows:
        return ""
    lines = ["", "Ablations: paired difference (ablation - default) [95 % CI].", "",
             "| ablation | changed | Transfer | Avg | Last |", "|---|---|---|---|---|"]
    for row in rows:
        changed = ", ".join(f"{k}={v}" for k, v in row["changed"].items())
        cells = [format_interval(Interval(**row[m]["interval"]), signed=True) for m in ("transfer", "avg", "last")]
        lines.append(f"| {row['ablation']} vs {row['base']} | {changed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table(sequence: str, summary: dict, checks: list[dict]) -> str:
    from medcl.stats import Interval, format_interval

    def cell(row, key):
        value = row.get(key)
        return format_interval(Interval(**{k: v for k, v in value.items() if k != "per_seed"})) if value else "–"

    lines = [f"### {sequence}", "", "Mean [95 % t-interval] over seeds.", "",
             "| strategy | Transfer | Avg | Last | BWT | trainable parameters | wall vs finetune |",
             "|---|---|---|---|---|---|---|"]
    for strategy, row in summary.items():
        ratio = f"{row['wall_vs_finetune']:.2f}" if "wall_vs_finetune" in row else "–"
        params = f"{row['trainable_parameters']:,}" if row.get("trainable_parameters") else "–"
        lines.append(f"| {strategy} | " + " | ".join(cell(row, k) for k in METRICS) + f" | {params} | {ratio} |")
    lines += ["", "| finding | paired difference [95 % CI] | seeds | verdict |", "|---|---|---|---|"]
    for c in checks:
        if c["verdict"] is None:
            continue  # a strategy of the claim did not run on this sequence
        numbers = format_interval(Interval(**c["interval"]), signed=True)
        lines.append(f"| {c['claim']} | {numbers} | {len(c['seeds'])} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence", nargs="+", choices=[*SEQUENCES, "all"], default=["all"],
                        help="sequences to run; their results replace those in an existing findings.json under --out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--strategies", nargs="+", default=None, choices=list(VARIANTS),
                        help="labels to run (default: each sequence's SEQUENCE_VARIANTS; ablations: "
                        + ", ".join(ABLATIONS) + ")")
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
    from medcl.engine.localray import init_local_ray

    init_local_ray(1)  # on loopback only (medcl.engine.loopback)
    sequences = list(SEQUENCES) if "all" in args.sequence else args.sequence
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "findings.json").read_text()) if (out / "findings.json").is_file() else {}
    result = {"kind": "findings", "benchmark": "method_findings", "seeds": args.seeds, "steps_per_task": args.steps,
              "lr": args.lr, "lr_by_strategy": LR, "model": args.model,
              "sequences": previous.get("sequences", {}) if previous.get("seeds") == args.seeds else {}}
    for sequence in sequences:
        result["sequences"][sequence] = run_sequence(sequence, args)
    (out / "findings.json").write_text(json.dumps(result, indent=2))
    markdown = [table(name, seq["summary"], seq["findings"]) + ablation_table(seq.get("ablations", []))
                for name, seq in result["sequences"].items() if "summary" in seq]
    (out / "findings.md").write_text("\n".join(markdown))
    print("\n".join(markdown))
    return 0


def run_sequence(sequence: str, args) -> dict:
    """Every variant x seed of ``sequence`` (finished runs reused), summarised, with its findings,
    ablations, wall time and the machine's load while it ran."""
    if sequence == "medical" and not SHARED_DATA.is_dir():
        return {"skipped": f"{SHARED_DATA} is absent (real MedMNIST/MedNIST files)"}
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    labels = args.strategies or SEQUENCE_VARIANTS[sequence]
    runs = {s: {seed: run_one(experiment(sequence, s, seed, args), args.fresh) for seed in args.seeds} for s in labels}
    summary = summarise(runs)
    return {"summary": summary, "findings": findings(summary), "ablations": ablations(summary),
            "wall_s": round(time.perf_counter() - started, 1),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


if __name__ == "__main__":
    sys.exit(main())
