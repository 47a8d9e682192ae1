"""Pretraining augmentation (``data.augment``): seeded random resized crop and flip of a batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medcl.config import ConfigError
from medcl.pretrain.augment import BatchAugment, augment_batch, batch_generator, crop_box
from medcl.pretrain.config import AugmentSection, validate_pretrain


def _batch(n: int = 8, size: int = 16) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def _augment(images, step, **settings):
    return BatchAugment(AugmentSection(**settings), seed=3, rank=0)(images, step)


def test_shape_dtype_kept_and_the_same_step_gives_the_same_batch():
    images = _batch()
    first, again = _augment(images, 5), _augment(images.numpy(), 5)
    assert first.shape == images.shape and first.dtype == torch.uint8
    assert torch.equal(first, again)                     # replayed step: same crops and flips
    assert not torch.equal(first, _augment(images, 6))   # next step: other draws
    other_rank = BatchAugment(AugmentSection(), seed=3, rank=1)(images, 5)
    assert not torch.equal(first, other_rank)
    assert not torch.equal(first, images)


def test_full_box_without_flip_is_the_identity_and_none_is_off():
    images = _batch()
    assert torch.equal(_augment(images, 1, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False), images)
    assert BatchAugment(None, seed=0, rank=0)(images, 1) is images


def test_flip_only_flips_some_images_left_right():
    images = _batch(n=32)
    out = _augment(images, 2, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=True)
    flipped = [torch.equal(o, i.flip(1)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < len(images)


@pytest.mark.parametrize("scale, ratio", [((0.5, 1.0), (0.75, 4 / 3)), ((0.08, 0.2), (0.5, 2.0))])
def test_crop_boxes_lie_inside_the_image_with_the_asked_area(scale, ratio):
    generator, size = batch_generator(0, 1, 0), 64
    for _ in range(200):
        top, left, height, width = crop_box(size, scale, ratio, generator)
        assert 0 <= top and top + height <= size and 0 <= left and left + width <= size
        area = height * width / size ** 2
        assert scale[0] * 0.8 <= area <= scale[1] * 1.2 or (height, width) == (size, size)


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError) as info:
        validate_pretrain({"name": "x", "data": {"source": "corpus", "path": "c",
                                                 "augment": {"crop_scale": [0.9, 0.5]}}})
    assert "data.augment.crop_scale" in dict(info.value.problems)
    with pytest.raises(ConfigError) as info:
        validate_pretrain({"name": "x", "data": {"augment": {"flip": True}}})
    assert any("data.augment.flip" in field for field, _ in info.value.problems)
    with pytest.raises(ValueError, match="square"):
        augment_batch(torch.zeros((2, 8, 4, 3), dtype=torch.uint8), scale=(0.5, 1), ratio=(1, 1), hflip=False,
                      generator=batch_generator(0, 0, 0))


def test_contrast_pulls_towards_the_mean_grey_and_brightness_scales():
    image = torch.zeros((1, 8, 8, 3), dtype=torch.uint8)
    image[:, :, 4:] = 200                                    # half black, half 200: grey mean 100
    fixed = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False)
    flat = _augment(image, 1, contrast=(0.5, 0.5), **fixed)
    low, high = flat.unique().tolist()                       # 0.5 x + 0.5 * 100 (torchvision's grey weights
    assert abs(low - 50) <= 1 and abs(high - 150) <= 1       # sum to 0.9999: uint8 rounding may lose 1)
    brighter = _augment(image, 1, brightness=(1.2, 1.2), **fixed)
    assert set(brighter.unique().tolist()) == {0, 240}
    jittered = [_augment(image, step, contrast=(0.3, 1.0), **fixed)[0, 0, 0, 0].item() for step in range(1, 9)]
    assert len(set(jittered)) > 1 and all(0 <= v <= 100 for v in jittered)  # a factor per draw, background lifted
