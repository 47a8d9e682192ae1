"""Image-caption pairs: the one type for every set of them (ZSCL's reference set, PRIMED's planned
reference sets, pretraining's train and held-out pairs)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageCaptions:
    """``images`` uint8 (N, S, S, 3), one caption per image and, when known, one modality per image
    (``modalities`` empty otherwise)."""

    images: np.ndarray
    captions: tuple[str, ...]
    modalities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"pair images must be uint8 (N, S, S, 3), got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.captions):
            raise ValueError("image-caption pairs need one caption per image")
        if self.modalities and len(self.modalities) != len(self.images):
            raise ValueError("image-caption pairs need one modality per image, or none")

    def __len__(self) -> int:
        return len(self.captions)
