"""The benchmark registry and the contract every benchmark adapter follows.

A benchmark is a class registered with ``@register_benchmark("name")`` that has an ``Options``
pydantic model (its config fields, validated with ``extra="forbid"``) and a ``build`` method::

    @register_benchmark("synthmed")
    class SynthMed(Benchmark):
        class Options(BenchmarkOptions):
            num_tasks: int = 4
        def build(self, options: Options, seed: int) -> list[Task]: ...

``build`` must be deterministic in ``(options, seed)``.
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from medcl.data.task import Task
from medcl.registry import Registry

BENCHMARKS: Registry[type["Benchmark"]] = Registry("benchmark", params="Options")
register_benchmark = BENCHMARKS.register


class BenchmarkOptions(BaseModel):
    """Base of every benchmark's options: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class Benchmark:
    Options: ClassVar[type[BenchmarkOptions]] = BenchmarkOptions
    description: ClassVar[str] = ""

    def build(self, options: BenchmarkOptions, seed: int) -> list[Task]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def coerce_options(cls, options: BenchmarkOptions | dict | None) -> BenchmarkOptions:
        """``options`` as this benchmark's ``Options`` (a dict or None is validated)."""
        return options if isinstance(options, cls.Options) else cls.Options.model_validate(options or {})
