"""Peak memory per Ray Train worker with large tasks (issue #19 item 2), through ``run_experiment``.

    .venv/bin/python experiments/benchmarks/worker_memory.py [--tasks 2] [--images 50000] [--size 64]

Each task is ``--images`` random uint8 images of ``--size`` px, 3 channels (50k x 64 px: 614 MB of
pixels), 90 % train / 10 % test. The run is a real ``medcl run`` (``run_experiment``: Ray start,
one TorchTrainer, 2 CPU workers over gloo, medcl-tiny, finetune, a few steps per task, zero-shot
and per-task evaluation); only ``build_tasks`` is replaced by the synthetic tasks.

A thread of this process samples, every ``--interval`` s, every Train worker process (a descendant
of this process whose command line names ``RayTrainWorker``): RSS, USS and PSS
(``psutil.Process.memory_full_info``) and the kernel's peak RSS (``VmHWM``), plus the growth of
``/dev/shm``, where the node's object store keeps its shared memory (``medcl run`` starts Ray
without the dashboard, so the state API cannot list the objects; other jobs' use of ``/dev/shm``
would show here too). Ray deserialises numpy arrays zero-copy from the object store, so pixels a
worker only reads are shared memory: they appear in its RSS (the pages it touched) and PSS (shared
with the other mappers) but not its USS (memory only it holds). Prints JSON: per-worker peaks in
MiB, the growth of ``/dev/shm``, the driver's (this process's) peaks and its figures at the last
sample taken while Train workers were alive, and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time

import numpy as np
import psutil

MIB = 2 ** 20


def synthetic_tasks(n_tasks: int, images: int, size: int, seed: int = 0):
    """``n_tasks`` tasks of ``images`` random images each (90 % train, 10 % test), 4 classes."""
    from medcl.data.task import Split, Task

    rng = np.random.default_rng(seed)
    n_test = max(1, images // 10)
    tasks = []
    for k in range(n_tasks):
        classes = tuple(f"finding {c}" for c in range(4))
        splits = {}
        for name, n in (("train", images - n_test), ("test", n_test)):
            splits[name] = Split(images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                                 labels=rng.integers(0, len(classes), n).astype(np.int64))
        tasks.append(Task(name=f"big-{k}", classes=classes, class_prompts=tuple((f"a scan with {c}",) for c in classes),
                          modality="xray", splits=splits))
    return tasks


class Sampler(threading.Thread):
    """Samples the Train workers' memory and ``/dev/shm`` until :meth:`stop`."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.done = interval, threading.Event()
        self.workers: dict[int, dict] = {}
        self.driver: dict[str, int] = {}
        self.driver_training: dict[str, int] = {}
        self.shm_base, self.shm_peak = shutil.disk_usage("/dev/shm").used, 0
        self.samples = 0

    def run(self) -> None:
        while not self.done.is_set():
            self._sample_workers()
            self.shm_peak = max(self.shm_peak, shutil.disk_usage("/dev/shm").used - self.shm_base)
            self.samples += 1
            self.done.wait(self.interval)

    def _sample_workers(self) -> None:
        driver = psutil.Process()
        driver_info = driver.memory_full_info()
        for key in ("rss", "uss", "pss"):
            self.driver[key] = max(self.driver.get(key, 0), getattr(driver_info, key))
        workers = 0
        for proc in driver.children(recursive=True):
            try:
                if "RayTrainWorker" not in " ".join(proc.cmdline()):
                    continue
                info = proc.memory_full_info()
                hwm = _vm_hwm(proc.pid)
            except (psutil.Error, OSError):
                continue
            peak = self.workers.setdefault(proc.pid, {"rss": 0, "uss": 0, "pss": 0, "hwm": 0})
            peak["title"] = proc.cmdline()[0][:60]
            for key, value in (("rss", info.rss), ("uss", info.uss), ("pss", info.pss), ("hwm", hwm)):
                peak[key] = max(peak[key], value)
            workers += 1
        if workers:  # the driver while the workers train and evaluate (its peak is building the tasks)
            self.driver_training = {"rss": driver_info.rss, "uss": driver_info.uss, "pss": driver_info.pss}

    def stop(self) -> None:
        self.done.set()
        self.join()


def _vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()

    import ray

    from medcl.config import validate_experiment
    from medcl.engine import runner

    pixels = args.tasks * args.images * args.size * args.size * 3
    # the real engine path with these tasks; built there, so this script holds no reference to them
    runner.build_tasks = lambda config: synthetic_tasks(args.tasks, args.images, args.size)
    load_before = os.getloadavg()
    sampler = Sampler(args.interval)
    with tempfile.TemporaryDirectory(prefix="medcl-wmem-") as out:
        config = validate_experiment({
            "name": "worker-memory", "seed": 0, "output_dir": out,
            "benchmark": {"name": "synthmed", "num_tasks": args.tasks},
            "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
            "train": {"workers": args.workers, "batch_size": 32, "steps_per_task": args.steps,
                      "eval_batch_size": 500, "torch_threads": 1},
        })
        sampler.start()
        started = time.perf_counter()
        result = runner.run_experiment(config, fresh=True)
        wall = time.perf_counter() - started
        sampler.stop()
        ray.shutdown()
    workers = [{k: v if isinstance(v, str) else round(v / MIB, 1) for k, v in peak.items()}
               for peak in sampler.workers.values()]
    print(json.dumps({
        "tasks": args.tasks, "images_per_task": args.images, "size": args.size,
        "pixels_mib": round(pixels / MIB, 1), "workers": args.workers, "steps_per_task": args.steps,
        "per_worker_peak_mib": workers,
        "dev_shm_growth_peak_mib": round(sampler.shm_peak / MIB, 1),
        "driver_peak_mib": {k: round(v / MIB, 1) for k, v in sampler.driver.items()},
        "driver_last_sample_with_workers_mib": {k: round(v / MIB, 1) for k, v in sampler.driver_training.items()},
        "samples": sampler.samples, "wall_s": round(wall, 1),
        "final_row": result.state.rows[-1] if result.state.rows else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }, indent=2))


if __name__ == "__main__":
    main()
