"""What a strategy sees while it trains: the model, the tasks, the current stage, loss helpers.

The engine owns :class:`Stage` (what one training stage mixes) and :class:`TrainContext`; a
strategy receives the context in every hook (:mod:`medcl.strategies.base`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import torch
import torch.nn.functional as F

from medcl import seeds
from medcl.config import TrainSection
from medcl.data.task import Task
from medcl.models import clip_logits, encode_class_prompts
from medcl.models.norm import apply_train_mode


@dataclass(frozen=True)
class Stage:
    """One training stage of a sequence: the tasks whose train splits it mixes, and its name
    (the row label of the accuracy matrix). Continual methods have one stage per task."""

    name: str
    train_tasks: tuple[int, ...]


@dataclass
class Batch:
    """A training batch: model-ready ``images`` (N, 3, S, S), ``labels`` (class index within the
    sample's own task) and ``task_ids`` (index of that task in the sequence order)."""

    images: torch.Tensor
    labels: torch.Tensor
    task_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TrainContext:
    """``train``: the experiment's training section (batch size, lr, steps, threads...);
    ``prepared``: what the strategy's driver-side :meth:`~medcl.strategies.base.Strategy.prepare`
    returned (None when it has none, or when a harness runs the worker loop without the driver)."""

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    tasks: list[Task]
    stages: list[Stage]
    device: torch.device
    rank: int = 0
    world_size: int = 1
    label_smoothing: float = 0.2
    seed: int = 0
    preprocess: Callable[[np.ndarray], torch.Tensor] | None = None  # uint8 NHWC -> model input on device
    train: TrainSection = field(default_factory=lambda: TrainSection(steps_per_task=1))
    freeze_norm: bool = False  # BatchNorm statistics frozen while training (medcl.models.norm)
    prepared: Any = None
    stage_index: int = 0
    step: int = 0
    total_steps: int = 0

    def make_batch(self, images: np.ndarray, labels: np.ndarray, task_ids: np.ndarray) -> Batch:
        """A :class:`Batch` on this worker's device from uint8 images and numpy labels/task ids."""
        return Batch(images=self.preprocess(images), labels=torch.as_tensor(labels, device=self.device),
                     task_ids=torch.as_tensor(task_ids, device=self.device))

    def train_mode(self) -> None:
        """The model in training mode under the normalisation policy (:mod:`medcl.models.norm`)."""
        apply_train_mode(self.model, freeze_norm=self.freeze_norm)

    @property
    def stage(self) -> Stage:
        return self.stages[self.stage_index]

    @property
    def task_index(self) -> int:
        """The one task the current stage trains; a stage that mixes several (``joint``) has none
        (ValueError): use ``ctx.stage.train_tasks``."""
        if len(self.stage.train_tasks) != 1:
            raise ValueError(f"stage {self.stage.name!r} mixes tasks {self.stage.train_tasks}: use ctx.stage.train_tasks")
        return self.stage.train_tasks[0]

    def rng(self, purpose: str, *keys: int, shared: bool = False) -> np.random.Generator:
        """A generator for one use of randomness in this stage, seeded by (experiment seed,
        ``purpose``, stage, rank, ``*keys``) (:mod:`medcl.seeds`): the same seed gives the same
        numbers, each purpose its own stream. ``shared``: the same on every rank (no rank in the seed)."""
        rank = () if shared else (self.rank,)
        return seeds.rng(self.seed, purpose, self.stage_index, *rank, *keys)

    def class_embeddings(self, task_id: int, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Normalised text embeddings (C, D) of task ``task_id``'s class prompts (differentiable)."""
        return encode_class_prompts(model or self.model, self.tokenizer, self.tasks[task_id].class_prompts, self.device)

    def task_logits(self, batch: Batch, model: torch.nn.Module | None = None,
                    image_features: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        """Per task present in ``batch``: logits (n_k, C_k) of its samples over its own classes,
        logit = logit_scale * cos(image, class prompt) (MTIL protocol). ``image_features``: the
        batch's normalised image features when the caller already has them (saves a forward)."""
        model = model or self.model
        if image_features is None:
            image_features = model.encode_image(batch.images, normalize=True)
        scale = model.logit_scale.exp()
        out = {}
        for task_id in batch.task_ids.unique().tolist():
            rows = batch.task_ids == task_id
            out[task_id] = clip_logits(image_features[rows], self.class_embeddings(task_id, model), scale)
        return out

    def task_loss(self, batch: Batch, model: torch.nn.Module | None = None,
                  image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy with label smoothing, each sample over its own task's classes."""
        total = batch.images.new_zeros(())
        for task_id, logits in self.task_logits(batch, model, image_features).items():
            labels = batch.labels[batch.task_ids == task_id]
            total = total + F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing, reduction="sum")
        return total / len(batch)
