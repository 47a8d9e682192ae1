"""``sequence``: one continual sequence built from tasks of different adapters.

    benchmark:
      name: sequence
      data_root: ../shared/data          # relative roots below are taken under it
      image_size: 32                     # default of every task (MedMNIST: else the file's size)
      tasks:
        - {adapter: medmnist, dataset: pneumoniamnist, root: medmnist}
        - {adapter: medmnist, dataset: breastmnist, root: medmnist}
        - {adapter: imagefolder, dataset: mednist, root: mednist/MedNIST}
        - {adapter: parquet, path: /data/derm.parquet, name: derm, modality: dermatology}

Each entry is exactly one adapter's task spec (:class:`~medcl.data.medmnist.MedMNISTTask`,
:class:`~medcl.data.imagefolder.ImageFolderTask`, :class:`~medcl.data.parquet.ParquetTask`), chosen
by ``adapter`` and validated with that adapter's fields, so a typo is reported as
``benchmark.tasks.<i>.<adapter>.<field>``. Task names (``name``, default: the data set's) must be
unique; ``benchmark.order`` reorders them as for any benchmark.
"""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, model_validator

from medcl.data import imagefolder, medmnist, parquet
from medcl.data.imagefolder import FolderOptions, build_entries
from medcl.data.registry import Benchmark, register_benchmark
from medcl.data.spec import DataError, resolve_path
from medcl.data.task import Task
from medcl.registry import close_match_hint

LOADERS = {"medmnist": medmnist.load_task, "imagefolder": imagefolder.load_task, "parquet": parquet.load_task}

TaskEntry = Annotated[Union[medmnist.MedMNISTTask, imagefolder.ImageFolderTask, parquet.ParquetTask],
                      Field(discriminator="adapter")]


@register_benchmark("sequence")
class Sequence(Benchmark):
    """Tasks from any file-based adapters, in the listed order."""

    description = ("a sequence mixing adapters: tasks: [{adapter: medmnist|imagefolder|parquet, ...}, ...]; "
                   "data_root, image_size and strict apply to every task")

    class Options(FolderOptions):
        tasks: list[TaskEntry] = Field(min_length=1)

        @model_validator(mode="before")
        @classmethod
        def _adapters(cls, data):
            for i, entry in enumerate((data or {}).get("tasks") or []) if isinstance(data, dict) else ():
                adapter = entry.get("adapter") if isinstance(entry, dict) else None
                if isinstance(entry, dict) and adapter not in LOADERS:
                    what = "needs `adapter`" if adapter is None else f"unknown adapter {adapter!r}"
                    raise ValueError(f"tasks.{i} {what}{close_match_hint(str(adapter), list(LOADERS))}; "
                                     f"one of: {', '.join(LOADERS)}")
            return data

    def build(self, options: Options | dict | None, seed: int) -> list[Task]:
        """Deterministic: each adapter's own splits or seeded splits; ``seed`` is unused."""
        options = self.coerce_options(options)
        if options.data_root and not resolve_path(options.data_root).is_dir():
            raise DataError("benchmark.data_root", f"the folder {resolve_path(options.data_root)} does not exist "
                                                   "(a typo?); relative task roots are taken under it")
        return build_entries(options, LOADERS)
