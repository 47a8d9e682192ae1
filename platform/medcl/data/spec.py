"""What every file-based task specification shares, and the helpers that turn one into a Task.

A *task spec* is one entry of a benchmark's ``tasks:`` list (or what a benchmark makes from its
own fields): the adapter's fields plus the common ones of :class:`TaskSpec` (``name``,
``modality``, ``image_size``, ``strict``, ``templates``, ``prompts``). Errors found while reading
data are :class:`DataError`, a :class:`medcl.config.ConfigError` whose message starts with the
dotted config field (``benchmark.tasks.1.root: ...``) and names the file, so ``medcl run``
prints it as one line without a traceback.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medcl.data.prompts import check_templates, class_prompts, prompt_sets
from medcl.data.task import SPLITS, Split, Task
from medcl.errors import ConfigError, close_match_hint

TASK_NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"


class DataError(ConfigError):
    """Data that cannot be read as configured; ``str()`` is ``"<field>: <message naming the file>"``."""

    def __init__(self, field: str, message: str):
        self.source, self.problems = "benchmark", [(field, message)]
        ValueError.__init__(self, f"{field}: {message}")

    def __reduce__(self):
        return DataError, self.problems[0]


class SplitFractions(BaseModel):
    """Fractions of a seeded, class-stratified train/val/test split, for data that ships none.

    ``seed`` is the split's own (not the experiment's), so every training seed sees the same test set.
    """

    model_config = ConfigDict(extra="forbid")
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class TaskSpec(BaseModel):
    """Fields common to every adapter's task entry; ``None`` means the benchmark's default."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, pattern=TASK_NAME_PATTERN, description="task name (default: the data set's)")
    modality: str | None = Field(None, description="imaging modality, e.g. xray, ct, mri, ultrasound, pathology")
    image_size: int | None = Field(None, ge=8, le=1024, description="resize images to this square size on load")
    strict: bool | None = Field(None, description="an undecodable image is an error (default: skipped and counted)")
    templates: list[str] | None = Field(None, description="prompt templates, each with one '{}'")
    prompts: dict[str, list[str]] | None = Field(None, description="class -> full prompt list (replaces templates)")

    @field_validator("templates")
    @classmethod
    def _templates(cls, value):
        if value is not None:
            check_templates(value, "templates")
        return value

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value):
        empty = [c for c, p in (value or {}).items() if not p]
        if empty:
            raise ValueError(f"classes {empty} have an empty prompt list")
        return value


def with_defaults(spec: TaskSpec, **defaults) -> TaskSpec:
    """``spec`` with each field that is ``None`` set from ``defaults`` (where that default is not None)."""
    update = {k: v for k, v in defaults.items() if v is not None and getattr(spec, k) is None}
    return spec.model_copy(update=update) if update else spec


def resolve_path(path: str, data_root: str | None = None) -> Path:
    """``path`` with ``~`` and ``$VARS`` expanded; a relative path is taken under ``data_root`` when
    one is given, else under the working directory."""
    expanded = Path(os.path.expandvars(os.path.expanduser(path)))
    if not expanded.is_absolute() and data_root:
        expanded = Path(os.path.expandvars(os.path.expanduser(data_root))) / expanded
    return expanded


def stratified_split(labels: np.ndarray, fractions: SplitFractions, class_keys: list[str]) -> dict[str, np.ndarray]:
    """Sorted row indices per split: the rows of class ``c`` are permuted by a generator seeded with
    ``(fractions.seed, crc32(class_keys[c]))`` and cut into ``round(train * n)`` train,
    ``round(val * n)`` val and the rest test. Keying by a class's identity (e.g. its folder), not
    its label index, keeps a class's split the same whichever task or class subset uses it."""
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rng = np.random.default_rng([fractions.seed, zlib.crc32(class_keys[int(c)].encode())])
        rows = rows[rng.permutation(len(rows))]
        n_train = int(round(fractions.train * len(rows)))
        n_val = min(int(round(fractions.val * len(rows))), len(rows) - n_train)
        parts["train"].append(rows[:n_train])
        parts["val"].append(rows[n_train:n_train + n_val])
        parts["test"].append(rows[n_train + n_val:])
    return {s: np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for s, p in parts.items()}


def check_class_names(requested: list[str], available: list[str], field: str, where: str) -> None:
    """Raise :class:`DataError` at ``field`` for a requested class not in ``available``."""
    for name in requested:
        if name not in available:
            raise DataError(field, f"unknown class {name!r}{close_match_hint(name, available)} in {where}; "
                                   f"it has {available}")


def make_task(spec: TaskSpec, *, where: str, name: str, classes: tuple[str, ...], splits: dict[str, Split],
              dataset: str | None, modality: str | None, domain: str = "", metadata: dict | None = None) -> Task:
    """A :class:`Task` with prompts from :mod:`medcl.data.prompts` and the spec's overrides.

    ``spec.modality`` beats ``modality`` (the data set's); with neither, a :class:`DataError` at
    ``{where}.modality``. Prompt overrides for a class the task lacks are errors too.
    """
    modality = spec.modality or modality
    if not modality:
        raise DataError(f"{where}.modality", "required for a data set medcl has no facts about (e.g. xray, ct, "
                                             "mri, ultrasound, pathology, dermatology, fundus, oct, microscopy)")
    check_class_names(list(spec.prompts or {}), list(classes), f"{where}.prompts", f"task {name!r}")
    for split_name in ("train", "test"):
        if not len(splits.get(split_name, ())):
            raise DataError(where, f"task {name!r} has no {split_name} images")
    prompts = class_prompts(classes, dataset=dataset if dataset in prompt_sets() else None, modality=modality,
                            templates=spec.templates, overrides=spec.prompts)
    try:
        return Task(name=name, classes=classes, class_prompts=prompts, modality=modality, splits=splits,
                    domain=domain, metadata=dict(metadata or {}))
    except ValueError as exc:
        raise DataError(where, str(exc)) from None
