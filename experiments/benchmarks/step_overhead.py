"""Ray fixed cost and per-step overhead of medcl's engine against a plain PyTorch loop.

    .venv/bin/python experiments/benchmarks/step_overhead.py [--steps 200] [--workers 1]

Both sides run the same steps of the same stage: the same synthmed task, model (medcl-tiny),
batches (StageSampler), preprocessing, loss (the finetune strategy) and AdamW step, one torch
thread. The plain loop runs in this process; the engine runs `run_experiment` (Ray start, one
TorchTrainer, 1 worker unless --workers). Per-step time is measured inside the steady state of
both (between the first and the last logged step), so start-up does not blur it.
Prints JSON; target: per-step ratio <= 1.2.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from medcl.config import validate_experiment
from medcl.engine.context import Batch, TrainContext
from medcl.engine.optim import build_optimizer, optimizer_step
from medcl.engine.preprocess import to_model_input
from medcl.engine.runner import build_tasks, run_experiment
from medcl.engine.sampling import StageSampler
from medcl.models import create_model
from medcl.rundir import read_events
from medcl.strategies import build_strategy

LOG_EVERY = 10


def experiment(out: str, steps: int, workers: int):
    return validate_experiment({
        "name": "overhead", "seed": 0, "output_dir": out,
        "benchmark": {"name": "synthmed", "num_tasks": 1},
        "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
        "train": {"workers": workers, "batch_size": 64, "lr": 2e-3, "steps_per_task": steps,
                  "log_every": LOG_EVERY},
    })


def plain_loop(config) -> float:
    """Seconds per step of a single-process loop doing exactly the engine's per-step work."""
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    tasks = build_tasks(config)
    bundle = create_model(config.model.name)
    strategy = build_strategy("finetune")
    ctx = TrainContext(model=bundle.model, tokenizer=bundle.tokenizer, tasks=tasks,
                       stages=strategy.stages(tasks), device=torch.device("cpu"))
    sampler = StageSampler(tasks, (0,), batch_size=config.train.batch_size, seed=config.seed, stage_index=0)
    params = list(strategy.trainable_parameters(ctx))
    optimizer, scheduler = build_optimizer(params, config.train, config.train.steps_per_task)
    bundle.model.train()
    stamps = []
    for step, (images, labels, task_ids) in enumerate(sampler.batches(config.train.steps_per_task), start=1):
        batch = Batch(to_model_input(images, bundle.image_size, bundle.mean, bundle.std),
                      torch.as_tensor(labels), torch.as_tensor(task_ids))
        loss = strategy.loss(ctx, batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(optimizer, scheduler, params, config.train.grad_clip)
        if step % LOG_EVERY == 0:
            float(loss.detach())
            stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[0]) / (LOG_EVERY * (len(stamps) - 1))


def engine_loop(config) -> dict:
    started = time.time()
    run_experiment(config, fresh=True)
    events = read_events(Path(config.output_dir) / config.name / "events.jsonl")
    steps = [e for e in events if e["kind"] == "step"]
    stage_start = next(e["time"] for e in events if e["kind"] == "stage_start")
    per_step = (steps[-1]["time"] - steps[0]["time"]) / (steps[-1]["step"] - steps[0]["step"])
    return {"start_to_first_step_s": stage_start - started, "per_step_s": per_step}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        config = experiment(out, args.steps, args.workers)
        plain = plain_loop(config)
        engine = engine_loop(config)
    print(json.dumps({
        "benchmark": "step_overhead", "steps": args.steps, "workers": args.workers, "batch_size": 64,
        "plain_per_step_ms": round(1000 * plain, 2),
        "engine_per_step_ms": round(1000 * engine["per_step_s"], 2),
        "per_step_ratio": round(engine["per_step_s"] / plain, 3),
        "ray_start_to_first_step_s": round(engine["start_to_first_step_s"], 1),
        "target_ratio": 1.2,
    }, indent=2))


if __name__ == "__main__":
    main()
