"""Class-folder adapter (MedNIST from the shared data; small trees made here) and the sequence benchmark."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from medcl.data import BENCHMARKS
from medcl.data.images import decode
from medcl.data.spec import DataError
from medcl.data.task import SPLITS

MEDNIST_CLASSES = ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")


def _build(name="imagefolder", **options):
    return BENCHMARKS.get(name)().build(options, seed=0)


def _tree(root, classes=("benign", "malignant"), per_class=10, mode="L", size=(20, 20)):
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            value = (c * 100 + i * 7) % 256
            colour = value if mode in ("L", "I;16") else (value, 255 - value, 40)
            Image.new(mode, size, colour).save(folder / f"{i:03d}.png")
    return root


def test_mednist_is_six_classes_of_300_split_70_10_20(shared_data):
    (task,) = _build(tasks=[{"root": str(shared_data / "mednist" / "MedNIST"), "dataset": "mednist"}])
    assert task.name == "mednist" and task.classes == MEDNIST_CLASSES and task.modality == "radiology"
    counts = {s: np.bincount(task.split(s).labels, minlength=6).tolist() for s in SPLITS}
    assert counts == {"train": [210] * 6, "val": [30] * 6, "test": [60] * 6}
    assert task.split("train").images.shape == (1260, 64, 64, 1)
    assert task.metadata["skipped"]["count"] == 0
    first = decode(sorted((shared_data / "mednist/MedNIST/AbdomenCT").iterdir())[0], image_size=64)
    abdomen = np.concatenate([task.split(s).images[task.split(s).labels == 0] for s in SPLITS])
    assert (abdomen == first).all(axis=(1, 2, 3)).sum() >= 1, "the decoded file is one of the class's images"


def test_split_is_seeded_stratified_and_deterministic(tmp_path):
    root = _tree(tmp_path / "data", per_class=20)
    one = _build(tasks=[{"root": str(root), "modality": "ultrasound"}])[0]
    two = _build(tasks=[{"root": str(root), "modality": "ultrasound"}])[0]
    other = _build(tasks=[{"root": str(root), "modality": "ultrasound", "split": {"seed": 1}}])[0]
    np.testing.assert_array_equal(one.split("test").images, two.split("test").images)
    assert not np.array_equal(one.split("test").images, other.split("test").images)
    assert [len(one.split(s)) for s in SPLITS] == [28, 4, 8]
    assert np.bincount(one.split("test").labels).tolist() == [4, 4] and one.name == "data"
    with pytest.raises(ValidationError, match="must be 1"):
        _build(tasks=[{"root": str(root), "modality": "x", "split": {"train": 0.9, "val": 0.1, "test": 0.2}}])


def test_shipped_split_classes_subset_and_size(tmp_path):
    for split, n in (("train", 6), ("test", 3)):
        _tree(tmp_path / "ds" / split, classes=("a", "b", "c"), per_class=n, size=(30, 20))
    (task,) = _build(image_size=16, tasks=[{"root": str(tmp_path / "ds"), "name": "knee", "modality": "xray",
                                            "classes": ["c", "a"]}])
    assert task.classes == ("c", "a") and [len(task.split(s)) for s in SPLITS] == [12, 0, 6]
    assert task.split("train").images.shape[1:] == (16, 16, 1) and task.metadata["split"] == "shipped"
    assert task.class_prompts[0] == ("an X-ray image showing c", "a radiograph of c")
    with pytest.raises(DataError, match=r"benchmark.tasks.0.classes: unknown class 'bb' \(did you mean 'b'\?\)"):
        _build(tasks=[{"root": str(tmp_path / "ds"), "modality": "xray", "classes": ["a", "bb"]}])


def test_mixed_grayscale_rgb_and_16_bit_images(tmp_path):
    root = _tree(tmp_path / "mix", classes=("a",), per_class=3, mode="RGB")
    _tree(root, classes=("b",), per_class=3, mode="L", size=(40, 24))
    wide = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(wide).save(root / "b" / "deep.png")
    (task,) = _build(image_size=24, tasks=[{"root": str(root), "modality": "ct", "split": {"train": 0.5, "val": 0.0,
                                                                                           "test": 0.5}}])
    images = np.concatenate([task.split(s).images for s in SPLITS])
    assert images.shape[1:] == (24, 24, 3) and len(images) == 7
    Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / "grey-rgb.png")
    assert decode(tmp_path / "grey-rgb.png", image_size=8).shape == (8, 8, 1), "equal RGB channels are grayscale"
    assert decode(tmp_path / "grey-rgb.png", image_size=8, channels=3).shape == (8, 8, 3)
    deep = decode(root / "b" / "deep.png", image_size=64)
    assert deep.shape == (64, 64, 1) and deep.min() == 0 and deep.max() == 255, "12-bit data is stretched"


def test_undecodable_image_is_skipped_and_counted_or_strict(tmp_path):
    root = _tree(tmp_path / "c", per_class=6)
    (root / "benign" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match="skipped 1 undecodable"):
        (task,) = _build(tasks=[{"root": str(root), "modality": "ultrasound"}])
    assert task.metadata["skipped"]["count"] == 1 and "broken.png" in task.metadata["skipped"]["examples"][0]
    assert sum(len(task.split(s)) for s in SPLITS) == 12
    with pytest.raises(DataError, match=r"benchmark.tasks.0.strict: .*broken.png: not a readable image"):
        _build(strict=True, tasks=[{"root": str(root), "modality": "ultrasound"}])


def test_empty_class_folder_missing_root_and_missing_modality(tmp_path):
    root = _tree(tmp_path / "e")
    (root / "cyst").mkdir()
    with pytest.raises(DataError, match=r"benchmark.tasks.0.root: class folder .*cyst holds no images"):
        _build(tasks=[{"root": str(root), "modality": "ultrasound"}])
    with pytest.raises(DataError, match=r"benchmark.tasks.0.root: .*nowhere is not a folder"):
        _build(tasks=[{"root": str(tmp_path / "nowhere"), "modality": "ct"}])
    with pytest.raises(DataError, match=r"benchmark.tasks.0.modality: required"):
        _build(tasks=[{"root": str(root), "classes": ["benign", "malignant"]}])
    with pytest.raises(ValidationError, match="did you mean 'mednist'"):
        _build(tasks=[{"root": str(root), "dataset": "mednst"}])


def test_sequence_mixes_adapters_with_data_root(tmp_path):
    _tree(tmp_path / "folders" / "breast")
    arrays = {f"{s}_{k}": (np.zeros((4, 28, 28), np.uint8) if k == "images" else np.array([[0], [1], [0], [1]], np.uint8))
              for s in SPLITS for k in ("images", "labels")}
    (tmp_path / "mm").mkdir()
    np.savez(tmp_path / "mm" / "pneumoniamnist.npz", **arrays)
    tasks = _build("sequence", data_root=str(tmp_path), image_size=32, tasks=[
        {"adapter": "medmnist", "dataset": "pneumoniamnist", "root": "mm"},
        {"adapter": "imagefolder", "root": "folders/breast", "name": "breast-us", "modality": "ultrasound"}])
    assert [t.name for t in tasks] == ["pneumoniamnist", "breast-us"]
    assert all(t.split("train").images.shape[1:3] == (32, 32) for t in tasks)
    with pytest.raises(ValidationError, match=r"unknown adapter 'medmnst' \(did you mean 'medmnist'\?\)"):
        _build("sequence", tasks=[{"adapter": "medmnst", "dataset": "pneumoniamnist", "root": "mm"}])
    with pytest.raises(DataError, match=r"benchmark.tasks: task names \['pneumoniamnist'\]"):
        _build("sequence", data_root=str(tmp_path), tasks=[
            {"adapter": "medmnist", "dataset": "pneumoniamnist", "root": "mm"},
            {"adapter": "medmnist", "dataset": "pneumoniamnist", "root": "mm"}])
