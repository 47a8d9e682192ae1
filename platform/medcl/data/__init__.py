"""Tasks, task sequences and benchmark adapters."""
from medcl.data.registry import BENCHMARKS, Benchmark, BenchmarkOptions, register_benchmark
from medcl.data.task import Split, Task, order_tasks

from medcl.data import synthmed as _synthmed  # noqa: F401  (registers "synthmed")

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkOptions", "register_benchmark", "Split", "Task", "order_tasks"]
