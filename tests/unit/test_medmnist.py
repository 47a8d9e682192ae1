"""MedMNIST adapter: the shared official files, the facts table, downloads (never the network), bad files."""
from __future__ import annotations

import io
import os
import urllib.error

import numpy as np
import pytest

from medcl.config import ConfigError, validate_experiment
from medcl.data import BENCHMARKS
from medcl.data import medmnist as mm
from medcl.data.images import DECODE_CACHE
from medcl.data.medmnist_info import INFO
from medcl.data.spec import DataError

EXPECTED = {"pneumoniamnist": (4708, 524, 624), "breastmnist": (546, 78, 156)}


def _build(**options):
    return BENCHMARKS.get("medmnist")().build(options, seed=0)


def _write_npz(path, n=(6, 2, 3), size=28, classes=2, drop=(), channels=None, label_offset=0):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size) + ((channels,) if channels else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes + label_offset).astype(np.uint8)[:, None]
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
    return path


@pytest.mark.parametrize("flag", sorted(EXPECTED))
def test_shared_files_match_their_own_splits(shared_data, flag):
    (task,) = _build(root=str(shared_data / "medmnist"), datasets=[flag])
    raw = np.load(shared_data / "medmnist" / f"{flag}.npz")
    assert tuple(len(task.split(s)) for s in ("train", "val", "test")) == EXPECTED[flag]
    for split in ("train", "val", "test"):
        part = task.split(split)
        assert part.images.shape == (EXPECTED[flag][("train", "val", "test").index(split)], 28, 28, 1)
        np.testing.assert_array_equal(part.images[..., 0], raw[f"{split}_images"])
        np.testing.assert_array_equal(np.bincount(part.labels, minlength=2),
                                      np.bincount(raw[f"{split}_labels"].ravel(), minlength=2))
    assert task.classes == INFO[flag].classes and task.modality == INFO[flag].modality
    assert task.metadata["counts"]["train"] == EXPECTED[flag][0]


def test_image_size_resizes_on_load(shared_data):
    (task,) = _build(root=str(shared_data / "medmnist"), datasets=["breastmnist"], image_size=32)
    assert task.split("test").images.shape == (156, 32, 32, 1) and task.metadata["image_size"] == 32


def test_facts_table_covers_the_twelve_2d_sets():
    assert len(INFO) == 12
    for info in INFO.values():
        assert len(info.classes) >= 2 and info.channels in (1, 3) and len(info.md5_28) == 32
    assert INFO["pneumoniamnist"].file_name(28) == "pneumoniamnist.npz"
    assert INFO["pneumoniamnist"].url(224).startswith("https://zenodo.org/") and "pneumoniamnist_224.npz" in \
        INFO["pneumoniamnist"].url(224)


def test_unknown_refused_and_bad_size_are_field_errors():
    with pytest.raises(ConfigError) as info:
        validate_experiment({"name": "x", "benchmark": {"name": "medmnist", "root": ".",
                                                        "datasets": ["pneumonimnist"], "size": 30}})
    text = str(info.value)
    assert "benchmark.datasets" in text and "did you mean 'pneumoniamnist'" in text
    assert "benchmark.size" in text and "28, 64, 128 or 224" in text
    with pytest.raises(ConfigError, match=r"benchmark.tasks.0.medmnist.sizee: unknown field \(did you mean 'size'\?\); "
                                          r"allowed: .*dataset, root, size, download"):
        validate_experiment({"name": "x", "benchmark": {"name": "sequence", "tasks": [
            {"adapter": "medmnist", "dataset": "breastmnist", "root": ".", "sizee": 64}]}})
    with pytest.raises(ValueError, match="multi-label"):
        mm.check_dataset("chestmnist")
    with pytest.raises(ValueError, match="3D"):
        mm.check_dataset("nodulemnist3d")


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as info:
        _build(root=str(tmp_path), datasets=["breastmnist"], size=64)
    text = str(info.value)
    assert text.startswith("benchmark.root:") and str(tmp_path / "breastmnist_64.npz") in text
    assert "zenodo.org" in text and "download: true" in text


def test_download_failure_and_offline_never_touch_the_network(tmp_path, monkeypatch):
    def unreachable(url, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(mm, "_urlopen", unreachable)
    with pytest.raises(DataError, match=r"could not fetch .*no route.*by hand"):
        _build(root=str(tmp_path), datasets=["breastmnist"], download=True)
    assert not list(tmp_path.iterdir()), "a failed download leaves no partial file"
    monkeypatch.setenv("MEDCL_OFFLINE", "1")
    with pytest.raises(DataError, match="MEDCL_OFFLINE"):
        _build(root=str(tmp_path), datasets=["breastmnist"], download=True)


def test_download_writes_the_file_and_checks_md5(tmp_path, monkeypatch):
    payload = io.BytesIO()
    _write_npz(payload, size=64)
    monkeypatch.setattr(mm, "_urlopen", lambda url, timeout: io.BytesIO(payload.getvalue()))
    (task,) = _build(root=str(tmp_path / "new"), datasets=["breastmnist"], size=64, download=True)
    assert (tmp_path / "new" / "breastmnist_64.npz").is_file() and task.split("train").images.shape[1] == 64
    with pytest.raises(DataError, match="MD5"):  # 28-px files are checked against the official sum
        _build(root=str(tmp_path / "other"), datasets=["breastmnist"], download=True)


@pytest.mark.parametrize("kwargs, field, words", [
    ({"drop": ("val_labels",)}, "benchmark.root", "lacks key(s) ['val_labels']"),
    ({"label_offset": 1}, "benchmark.root", "outside 0..1"),
    ({"size": 32}, "benchmark.size", "holds 32x32 images, not 28x28"),
])
def test_bad_files_name_the_file_and_field(tmp_path, kwargs, field, words):
    path = _write_npz(tmp_path / "breastmnist.npz", **kwargs)
    with pytest.raises(DataError) as info:
        _build(root=str(tmp_path), datasets=["breastmnist"])
    assert str(info.value).startswith(f"{field}:") and words in str(info.value) and str(path) in str(info.value)


def test_corrupt_npz_is_named(tmp_path):
    (tmp_path / "breastmnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"breastmnist.npz is not a readable .npz"):
        _build(root=str(tmp_path), datasets=["breastmnist"])


def test_decoded_arrays_are_cached_until_the_file_changes(tmp_path):
    path = _write_npz(tmp_path / "breastmnist.npz")
    first = _build(root=str(tmp_path), datasets=["breastmnist"])[0].split("train").images
    again = _build(root=str(tmp_path), datasets=["breastmnist"])[0].split("train").images
    assert again is first and not first.flags.writeable
    _write_npz(path, n=(8, 2, 3))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))
    assert len(_build(root=str(tmp_path), datasets=["breastmnist"])[0].split("train")) == 8
    assert DECODE_CACHE.hits >= 1


def test_prompt_overrides_must_name_listed_datasets(tmp_path):
    _write_npz(tmp_path / "breastmnist.npz")
    (task,) = _build(root=str(tmp_path), datasets=["breastmnist"],
                     prompts={"breastmnist": {"malignant": ["a breast ultrasound of a carcinoma"]}},
                     templates={"breastmnist": ["an ultrasound of {}"]})
    assert task.class_prompts[0] == ("a breast ultrasound of a carcinoma",)
    assert task.class_prompts[1][0] == "an ultrasound of normal breast tissue or a benign lesion"
    with pytest.raises(DataError, match=r"benchmark.prompts.pneumoniamnist"):
        _build(root=str(tmp_path), datasets=["breastmnist"], prompts={"pneumoniamnist": {"normal": ["x"]}})
