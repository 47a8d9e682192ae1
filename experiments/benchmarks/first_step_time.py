"""Time to the first training step of a 1-task synthmed run, from a fresh `medcl run` process, and
what each process pays to import what it needs.

    .venv/bin/python experiments/benchmarks/first_step_time.py [--workers 1] [--repeats 3] [--dashboard]

``first_step_s``: from launching ``medcl run`` (a new interpreter, as a user does) to the stage's
``stage_start`` event, i.e. driver imports, Ray start, the Train controller, worker start with
their imports, model build and the zero-shot evaluation of row 0 (medcl-tiny, finetune, 20 steps).
``imports_s``: wall time of a fresh interpreter importing what the driver (``medcl.engine.runner``
and the CLI) and a Train worker (``medcl.engine.loop``, then building medcl-tiny, which imports
open_clip) import, minus a bare interpreter's start; and which heavy libraries each has loaded.
Prints JSON (the median of ``--repeats`` for each figure). Figures depend on the machine's load:
the JSON records ``uptime`` before and after.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEDCL = str(Path(sys.executable).parent / "medcl")
HEAVY = ("open_clip", "transformers", "torchvision", "peft", "accelerate", "timm", "scipy", "pandas",
         "pyarrow", "ray.data", "faiss", "matplotlib", "sklearn")
PROBES = {
    "bare_python": "pass",
    "driver": "import medcl.cli, medcl.engine.runner",
    "worker_modules": "import medcl.engine.loop",
    "worker_with_model": "import medcl.engine.loop; from medcl.models import create_model; create_model('medcl-tiny')",
}
EXPERIMENT = """name: first-step
seed: 0
benchmark: {{name: synthmed, num_tasks: 1}}
model: {{name: medcl-tiny}}
strategy: {{name: finetune}}
train: {{workers: {workers}, batch_size: 32, lr: 0.001, steps_per_task: 20, log_every: 1}}
output_dir: {out}
"""


def probe(body: str) -> tuple[float, list[str]]:
    script = f"{body}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(done.stdout.strip().splitlines()[-1])


def import_times(repeats: int) -> dict:
    wall = {name: [] for name in PROBES}
    loaded = {}
    for _ in range(repeats):
        for name, body in PROBES.items():
            seconds, loaded[name] = probe(body)
            wall[name].append(seconds)
    bare = statistics.median(wall.pop("bare_python"))
    loaded.pop("bare_python")
    return {name: {"s": round(statistics.median(times) - bare, 2), "heavy_loaded": loaded[name]}
            for name, times in wall.items()}


def first_step(workers: int, dashboard: bool) -> float:
    with tempfile.TemporaryDirectory() as out:
        config = Path(out, "first_step.yaml")
        config.write_text(EXPERIMENT.format(workers=workers, out=out))
        command = [MEDCL, "run", str(config), "--fresh"] + ([] if dashboard else ["--no-dashboard"])
        started = time.time()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"medcl run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        events = [json.loads(line) for line in Path(out, "first-step", "events.jsonl").read_text().splitlines()]
        return next(e["time"] for e in events if e["kind"] == "stage_start") - started


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dashboard", action="store_true", help="serve the Ray dashboard as `medcl run` does by default")
    args = parser.parse_args()
    load_before = uptime()
    imports = import_times(args.repeats)
    runs = [first_step(args.workers, args.dashboard) for _ in range(args.repeats)]
    print(json.dumps({
        "benchmark": "first_step_time", "workers": args.workers, "dashboard": args.dashboard,
        "first_step_s": round(statistics.median(runs), 1), "first_step_runs_s": [round(r, 1) for r in runs],
        "imports_s": imports, "uptime_before": load_before, "uptime_after": uptime(),
    }, indent=2))


if __name__ == "__main__":
    main()
