"""Continual tasks: one classification data set each, with class prompts and an imaging modality.

A :class:`Task` holds its splits as uint8 image arrays ``(N, H, W, C)`` (C = 1 or 3) and int64
label vectors, which is compact, picklable and zero-copy through Ray's object store. Images are
converted to the model's input (3 channels, resized, normalised) per batch by
:mod:`medcl.engine.preprocess`, so one task can feed models of any image size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Images ``uint8 (N, H, W, C)`` and labels ``int64 (N,)``; ``captions`` optional, one per image."""

    images: np.ndarray
    labels: np.ndarray
    captions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if self.images.shape[-1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got {self.images.shape[-1]}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels shape {self.labels.shape} does not match {len(self.images)} images")
        if self.captions is not None and len(self.captions) != len(self.images):
            raise ValueError("captions must have one entry per image")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Task:
    """One classification task of a continual sequence.

    ``class_prompts[c]`` is a non-empty list of text prompts for class ``c``; the zero-shot head
    averages their normalised text embeddings (MTIL protocol, docs/methods.md#1-evaluation-protocol).
    ``modality`` names the imaging modality (``"xray"``, ``"ultrasound"``, ``"ct"``...), which
    modality-aware methods (MSLoRA-CR) and retrieval (PRIMED) read.
    """

    name: str
    classes: tuple[str, ...]
    class_prompts: tuple[tuple[str, ...], ...]
    modality: str
    splits: dict[str, Split] = field(default_factory=dict)
    domain: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError(f"task {self.name!r} has zero classes")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"task {self.name!r} has duplicate class names")
        if len(self.class_prompts) != len(self.classes) or any(not p for p in self.class_prompts):
            raise ValueError(f"task {self.name!r}: every class needs at least one prompt")
        missing = [s for s in ("train", "test") if s not in self.splits]
        if missing:
            raise ValueError(f"task {self.name!r} lacks split(s) {missing}")
        for split_name, split in self.splits.items():
            if len(split) and (split.labels.min() < 0 or split.labels.max() >= len(self.classes)):
                raise ValueError(f"task {self.name!r} split {split_name!r} has labels outside 0..{len(self.classes) - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise KeyError(f"task {self.name!r} has no {name!r} split; it has {sorted(self.splits)}")
        return self.splits[name]


def order_tasks(tasks: list[Task], order: list[str] | None) -> list[Task]:
    """Return ``tasks`` in ``order`` (task names); ``None`` keeps the benchmark's own order.

    Raises ``ValueError`` naming an unknown or duplicated task; an order may select a subset.
    """
    if order is None:
        return list(tasks)
    by_name = {t.name: t for t in tasks}
    seen: set[str] = set()
    for name in order:
        if name not in by_name:
            raise ValueError(f"unknown task {name!r}; this benchmark has {sorted(by_name)}")
        if name in seen:
            raise ValueError(f"task {name!r} appears twice in the order")
        seen.add(name)
    if not order:
        raise ValueError("the task order is empty")
    return [by_name[n] for n in order]
