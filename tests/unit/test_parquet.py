"""Parquet manifest adapter: image bytes or paths, string or integer labels, splits, tasks, bad rows."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medcl.data import BENCHMARKS
from medcl.data.spec import DataError
from medcl.data.task import SPLITS


def _png(value: int, mode: str = "L", size=(12, 12)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(out, format="PNG")
    return out.getvalue()


def _build(**options):
    return BENCHMARKS.get("parquet")().build(options, seed=0)


def _manifest(path, rows: dict) -> str:
    pq.write_table(pa.table(rows), path, row_group_size=4)
    return str(path)


def _bytes_manifest(tmp_path, n=12):
    labels = ["malignant" if i % 3 == 0 else "benign" for i in range(n)]
    return _manifest(tmp_path / "m.parquet", {
        "image": [_png(10 * i) for i in range(n)], "label": labels,
        "split": ["test" if i % 4 == 0 else "validation" if i % 4 == 1 else "train" for i in range(n)],
        "caption": [f"case {i}" if i != 5 else None for i in range(n)], "modality": ["ultrasound"] * n})


def test_image_bytes_with_split_caption_and_modality(tmp_path):
    path = _bytes_manifest(tmp_path)
    (task,) = _build(image_size=16, tasks=[{"path": path, "batch_rows": 5}])
    assert task.name == "m" and task.modality == "ultrasound" and task.classes == ("benign", "malignant")
    assert [len(task.split(s)) for s in SPLITS] == [6, 3, 3]
    train = task.split("train")
    assert train.images.shape == (6, 16, 16, 1) and train.captions[0] == "case 2"
    assert "" in task.split("val").captions, "a null caption becomes an empty string"
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], [20, 30, 60, 70, 100, 110])
    assert task.class_prompts[1] == ("an ultrasound image of malignant", "a sonogram showing malignant")


def test_batch_size_does_not_change_the_result(tmp_path):
    path = _bytes_manifest(tmp_path)
    small = _build(tasks=[{"path": path, "batch_rows": 1}])[0]
    large = _build(tasks=[{"path": path, "batch_rows": 1000}])[0]
    for s in SPLITS:
        np.testing.assert_array_equal(small.split(s).images, large.split(s).images)


def test_paths_integer_labels_stratified_split_and_task_column(tmp_path):
    for i in range(20):
        Image.new("RGB" if i == 7 else "L", (10, 14), 5 * i).save(tmp_path / f"{i}.png")
    path = _manifest(tmp_path / "parts.parquet", {
        "path": [f"{i}.png" for i in range(20)], "label": [i % 2 for i in range(20)],
        "task": ["knee" if i < 16 else "hip" for i in range(20)]})
    (task,) = _build(image_size=8, tasks=[{"path": path, "task": "knee", "modality": "xray",
                                           "classes": ["KL0", "KL4"]}])
    assert task.name == "knee" and task.classes == ("KL0", "KL4")
    assert [len(task.split(s)) for s in SPLITS] == [12, 2, 2], "8 rows per class: round(5.6), round(0.8), rest"
    assert task.split("train").images.shape[1:] == (8, 8, 3), "one RGB image makes the task RGB"
    with pytest.raises(DataError, match=r"benchmark.tasks.0.task: no rows of task 'kne' \(did you mean 'knee'\?\)"):
        _build(tasks=[{"path": path, "task": "kne", "modality": "xray", "classes": ["a", "b"]}])
    with pytest.raises(DataError, match=r"benchmark.tasks.0.classes: .*integer labels need `classes`"):
        _build(tasks=[{"path": path, "modality": "xray"}])


def test_labels_outside_the_classes_are_named(tmp_path):
    path = _manifest(tmp_path / "bad.parquet", {"image": [_png(1)] * 4, "label": [0, 1, 2, 1]})
    with pytest.raises(DataError, match=r"benchmark.tasks.0.path: .*bad.parquet: column `label` holds \[2\] outside 0..1"):
        _build(tasks=[{"path": path, "modality": "ct", "classes": ["a", "b"]}])
    named = _manifest(tmp_path / "named.parquet", {"image": [_png(1)] * 4, "label": ["a", "b", "c", "a"]})
    with pytest.raises(DataError, match=r"benchmark.tasks.0.classes: unknown class 'c'"):
        _build(tasks=[{"path": named, "modality": "ct", "classes": ["a", "b"]}])


def test_undecodable_rows_are_skipped_or_strict(tmp_path):
    images = [_png(i) for i in range(10)]
    images[3] = b"garbage"
    path = _manifest(tmp_path / "c.parquet", {"image": images, "label": ["x", "y"] * 5})
    with pytest.warns(UserWarning, match="skipped 1 undecodable row"):
        (task,) = _build(tasks=[{"path": path, "modality": "ct"}])
    assert task.metadata["skipped"]["count"] == 1 and sum(len(task.split(s)) for s in SPLITS) == 9
    with pytest.raises(DataError, match=r"benchmark.tasks.0.strict: .*c.parquet: <bytes>: not a readable image"):
        _build(strict=True, tasks=[{"path": path, "modality": "ct"}])


def test_missing_columns_and_files_are_named(tmp_path):
    path = _manifest(tmp_path / "cols.parquet", {"pixels": [b"x"], "label": ["a"]})
    with pytest.raises(DataError, match=r"cols.parquet needs columns `label` and `image` \(bytes\) or `path`"):
        _build(tasks=[{"path": path, "modality": "ct"}])
    with pytest.raises(DataError, match=r"benchmark.tasks.0.path: .*absent.parquet is neither"):
        _build(tasks=[{"path": str(tmp_path / "absent.parquet"), "modality": "ct"}])
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(DataError, match=r"junk.parquet is not a readable Parquet file"):
        _build(tasks=[{"path": str(tmp_path / "junk.parquet"), "modality": "ct"}])


def test_mixed_modalities_need_an_explicit_modality(tmp_path):
    path = _manifest(tmp_path / "mm.parquet", {"image": [_png(i) for i in range(6)], "label": ["a", "b"] * 3,
                                               "modality": ["ct", "mri"] * 3})
    with pytest.raises(DataError, match=r"benchmark.tasks.0.modality: .*mixes modalities \['ct', 'mri'\]"):
        _build(tasks=[{"path": path}])
    assert _build(tasks=[{"path": path, "modality": "radiology"}])[0].modality == "radiology"


def test_a_known_data_set_gives_modality_and_prompts(tmp_path):
    path = _manifest(tmp_path / "breast.parquet", {"image": [_png(i) for i in range(8)],
                                                   "label": ["malignant", "normal, benign"] * 4})
    (task,) = _build(tasks=[{"path": path, "dataset": "breastmnist"}])
    assert task.name == "breastmnist" and task.modality == "ultrasound"
    assert "a breast ultrasound of a malignant lesion" in task.class_prompts[0]
