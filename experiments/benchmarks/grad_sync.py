"""Per-step time of medcl's gradient averaging against DistributedDataParallel on the same model.

    .venv/bin/python experiments/benchmarks/grad_sync.py [--image-size 224] [--warm 3] [--steps 10]
        [--rounds 3] [--batch-size 16] [--workers 2] [--device cpu|cuda] [--backend gloo|nccl]

Two worker processes (torch.multiprocessing, a TCP store on loopback; gloo on CPU, nccl on CUDA
when there is one GPU per worker, else gloo) train a ViT-S/16 image tower (timm
``vit_small_patch16_224``, random init, no network) with a 512-way head, ``--batch-size`` images of
``--image-size`` px per worker, AdamW and clipping as medcl's engine does
(``medcl.engine.optim``), one torch thread per worker. Each step is one of:

- ``after_backward``: ``backward`` then the bucketed fp32 all-reduce (``optim.sync_gradients``; the
  engine before :mod:`medcl.engine.gradsync`);
- ``overlap``: :class:`medcl.engine.gradsync.GradSync` (hooks, asynchronous buckets), fp32;
- ``overlap_bf16``: the same with bf16 compression;
- ``ddp``: ``torch.nn.parallel.DistributedDataParallel`` around the same model.

Every mode has its own copy of the model (same initial weights). After ``--warm`` steps of each,
``--rounds`` rounds time ``--steps`` steps of each mode in turn (interleaved, so that load from
other processes falls on all modes alike). Prints JSON: per-step mean and median (ms) per mode,
the ratios to DDP (goal: overlap / ddp <= 1.05), peak RSS per worker (all modes together: the
process holds them all), ``uptime`` load before and after.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

MODES = ("after_backward", "overlap", "overlap_bf16", "ddp")


def build_model(image_size: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_small_patch16_224", pretrained=False, img_size=image_size, num_classes=512)


class Runner:
    """One mode's model, optimiser and step function on one worker."""

    def __init__(self, mode: str, model: torch.nn.Module, device: torch.device, world: int):
        from medcl.config import TrainSection
        from medcl.engine.gradsync import GradSync
        from medcl.engine.optim import build_optimizer

        self.mode, self.world = mode, world
        self.model = copy.deepcopy(model).to(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        train = TrainSection(steps_per_task=1, lr=1e-4, weight_decay=0.05)
        self.optimizer, self.scheduler = build_optimizer(self.params, train, total_steps=1_000_000)
        self.forward = self.model
        self.grad_sync = None
        if mode == "ddp":
            ids = [device.index] if device.type == "cuda" else None
            self.forward = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        elif mode.startswith("overlap"):
            dtype = torch.bfloat16 if mode.endswith("bf16") else None
            self.grad_sync = GradSync(self.params, world, dtype=dtype)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        from medcl.engine.optim import optimizer_step, sync_gradients

        loss = torch.nn.functional.cross_entropy(self.forward(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_sync is not None:
            self.grad_sync.arm()
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync.finish()
        elif self.mode == "after_backward":
            sync_gradients(self.params, self.world)
        optimizer_step(self.optimizer, self.scheduler, self.params, grad_clip=1.0)


def timed_steps(runner: Runner, batch, steps: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        runner.step(*batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def worker(rank: int, args: argparse.Namespace, backend: str, port: int, out: str) -> None:
    torch.set_num_threads(1)
    device = torch.device(f"cuda:{rank % max(1, torch.cuda.device_count())}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.workers)
    model = build_model(args.image_size)
    runners = {mode: Runner(mode, model, device, args.workers) for mode in MODES}
    generator = torch.Generator().manual_seed(rank)
    batch = (torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator).to(device),
             torch.randint(0, 512, (args.batch_size,), generator=generator).to(device))
    for runner in runners.values():
        timed_steps(runner, batch, args.warm, device)
    times = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode, runner in runners.items():
            dist.barrier()
            times[mode] += timed_steps(runner, batch, args.steps, device)
    same = all(torch.equal(a, b) for a, b in zip(runners["overlap"].params, runners["after_backward"].params))
    result = {"times": times, "overlap_equals_after_backward": same,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "parameters": sum(p.numel() for p in runners["ddp"].params)}
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def summary(results: list[dict], args, backend: str, load_before: str) -> dict:
    per_mode = {}
    for mode in MODES:
        # a step ends when the slowest worker's does: the per-step time is the max over ranks
        steps = [max(r["times"][mode][i] for r in results) for i in range(len(results[0]["times"][mode]))]
        per_mode[mode] = {"mean_ms": round(1000 * statistics.mean(steps), 1),
                          "median_ms": round(1000 * statistics.median(steps), 1)}
    ddp = per_mode["ddp"]["median_ms"]
    return {
        "benchmark": "grad_sync", "model": "vit_small_patch16_224 (random init, 512-way head)",
        "parameters": results[0]["parameters"], "image_size": args.image_size, "batch_per_worker": args.batch_size,
        "workers": args.workers, "device": args.device, "backend": backend, "torch_threads_per_worker": 1,
        "warm_steps": args.warm, "timed_steps": args.steps * args.rounds, "per_step": per_mode,
        "ratio_overlap_to_ddp": round(per_mode["overlap"]["median_ms"] / ddp, 3),
        "ratio_overlap_bf16_to_ddp": round(per_mode["overlap_bf16"]["median_ms"] / ddp, 3),
        "ratio_after_backward_to_ddp": round(per_mode["after_backward"]["median_ms"] / ddp, 3),
        "goal_ratio": 1.05,
        "overlap_weights_equal_after_backward": all(r["overlap_equals_after_backward"] for r in results),
        "peak_rss_mib_per_worker": [round(r["peak_rss_mib"]) for r in results],
        **({"peak_cuda_mib_per_worker": [round(r["peak_cuda_mib"]) for r in results]}
           if "peak_cuda_mib" in results[0] else {}),
        "uptime_before": load_before, "uptime_after": uptime(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backend", choices=("gloo", "nccl"), default=None)
    args = parser.parse_args()
    one_gpu_each = args.device == "cuda" and torch.cuda.device_count() >= args.workers
    backend = args.backend or ("nccl" if one_gpu_each else "gloo")
    load_before = uptime()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(worker, args=(args, backend, free_port(), out), nprocs=args.workers)
        results = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(args.workers)]
    print(json.dumps(summary(results, args, backend, load_before), indent=2))


if __name__ == "__main__":
    main()
