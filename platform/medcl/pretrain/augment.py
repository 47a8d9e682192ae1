"""Seeded image augmentation of a pretraining batch, in the worker, before the model's preprocessing.

    data:
      augment: {crop_scale: [0.5, 1.0], crop_ratio: [0.75, 1.3333], hflip: true,    # null: off (default)
                contrast: [0.4, 1.0], brightness: [0.8, 1.2]}                        # null: no jitter

Per image of a rank's batch (uint8 ``(n, S, S, C)``, the stream's or the sampler's), as torchvision's
``RandomResizedCrop`` and ``RandomHorizontalFlip`` (CLIP/open_clip training augmentation, whose
``RandomResizedCrop(scale=(0.9, 1.0))`` default is widened here for a small corpus):

* a box of area ``s * S^2`` and aspect ratio ``r`` (``s ~ U(crop_scale)``, ``log r ~ U(log crop_ratio)``)
  at a uniform position; up to 10 draws until the box fits, else the whole image (torchvision's
  fallback, simplified to the centre crop of the clamped ratio: here the whole square image);
* the box resized back to ``S x S`` (bilinear, antialiased: ``torchvision.transforms.v2.functional.resized_crop``);
* with ``hflip``, a left-right flip with probability 1/2;
* with ``contrast``, ``c ~ U(contrast)`` and ``x' = c x + (1 - c) mean(gray(x))``, then with
  ``brightness``, ``b ~ U(brightness)`` and ``x' = b x`` (clipped to [0, 255]): torchvision's
  ``ColorJitter`` factors (``adjust_contrast``, ``adjust_brightness``), drawn per image. A contrast
  below 1 lifts a black background to grey and flattens the window, as differently windowed CT
  exports look (MedNIST's abdomen and chest CT against MedPix's: docs/pretraining.md#a-real-data-clip-medpix).

Every draw comes from one ``torch.Generator`` seeded with ``SeedSequence([seed, step, rank])``
(:func:`batch_generator`), so a step's augmentation is the same whenever it is replayed (a resumed
synthmed run still ends with an uninterrupted run's weights) and differs between steps and ranks.
"""
from __future__ import annotations

import math

import numpy as np
import torch

MAX_TRIES = 10  # torchvision's RandomResizedCrop.get_params


def batch_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of step ``step`` (0-based) on rank ``rank``: seeded with ``SeedSequence([seed, step, rank])``."""
    word = int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(word)


def crop_box(size: int, scale: tuple[float, float], ratio: tuple[float, float],
             generator: torch.Generator) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random box in a ``size x size`` image (module docstring)."""
    area = size * size
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(MAX_TRIES):
        u = torch.rand(3, generator=generator).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        width, height = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < width <= size and 0 < height <= size:
            top = int(torch.randint(0, size - height + 1, (1,), generator=generator))
            left = int(torch.randint(0, size - width + 1, (1,), generator=generator))
            return top, left, height, width
    return 0, 0, size, size


def augment_batch(images: torch.Tensor, *, scale: tuple[float, float], ratio: tuple[float, float], hflip: bool,
                  generator: torch.Generator, contrast: tuple[float, float] | None = None,
                  brightness: tuple[float, float] | None = None) -> torch.Tensor:
    """uint8 ``(n, S, S, C)`` -> uint8 ``(n, S, S, C)``: each image randomly resized-cropped, maybe
    flipped, its contrast and brightness jittered when those ranges are given."""
    from torchvision.transforms.v2 import functional as TF

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected uint8 (n, S, S, C) square images, got {images.dtype} {tuple(images.shape)}")
    size = images.shape[1]
    out = []
    for image in images.permute(0, 3, 1, 2):
        top, left, height, width = crop_box(size, scale, ratio, generator)
        image = TF.resized_crop(image, top, left, height, width, [size, size], antialias=True)
        if hflip and bool(torch.rand(1, generator=generator) < 0.5):
            image = TF.horizontal_flip(image)
        if contrast is not None:
            image = TF.adjust_contrast(image, _uniform(contrast, generator))
        if brightness is not None:
            image = TF.adjust_brightness(image, _uniform(brightness, generator))
        out.append(image)
    return torch.stack(out).permute(0, 2, 3, 1).contiguous() if out else images


def _uniform(bounds: tuple[float, float], generator: torch.Generator) -> float:
    return bounds[0] + float(torch.rand(1, generator=generator)) * (bounds[1] - bounds[0])


class BatchAugment:
    """``data.augment`` bound to a run: ``__call__(images, step)`` augments the batch of ``step`` (1-based
    count of the step being taken) on this rank; ``None`` settings make it the identity."""

    def __init__(self, settings, *, seed: int, rank: int):
        self.settings, self.seed, self.rank = settings, seed, rank

    def __call__(self, images, step: int):
        if self.settings is None:
            return images
        tensor = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        return augment_batch(tensor, scale=tuple(self.settings.crop_scale), ratio=tuple(self.settings.crop_ratio),
                             hflip=self.settings.hflip, generator=batch_generator(self.seed, step, self.rank),
                             contrast=_bounds(self.settings.contrast), brightness=_bounds(self.settings.brightness))


def _bounds(value) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))
