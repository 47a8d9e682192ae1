"""uint8 images to model input, per batch: 3 channels, the model's size, the model's normalisation.

x = (resize(img / 255) - mean) / std, grayscale repeated to 3 channels, bilinear resize with
antialiasing. Doing this on tensors per batch (not per image in Python) keeps the input pipeline
far cheaper than a training step, and lets one stored task feed models of any image size.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_model_input(images: np.ndarray | torch.Tensor, image_size: int, mean, std, device="cpu") -> torch.Tensor:
    """``images`` uint8 ``(N, H, W, C)``, C in {1, 3} -> float ``(N, 3, image_size, image_size)``."""
    tensor = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if tensor.dtype != torch.uint8 or tensor.ndim != 4:
        raise ValueError(f"expected uint8 (N, H, W, C) images, got {tensor.dtype} {tuple(tensor.shape)}")
    x = tensor.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t
