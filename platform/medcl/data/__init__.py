"""Tasks, task sequences and benchmark adapters."""
from medcl.data.registry import BENCHMARKS, Benchmark, BenchmarkOptions, register_benchmark
from medcl.data.task import Split, Task, order_tasks

from medcl.data import synthmed as _synthmed  # noqa: F401  (registers "synthmed")
from medcl.data import medmnist as _medmnist  # noqa: F401  (registers "medmnist")
from medcl.data import imagefolder as _imagefolder  # noqa: F401  (registers "imagefolder")
from medcl.data import parquet as _parquet  # noqa: F401  (registers "parquet")
from medcl.data import sequence as _sequence  # noqa: F401  (registers "sequence")

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkOptions", "register_benchmark", "Split", "Task", "order_tasks"]
