"""``medmnist``: the official MedMNIST ``.npz`` files as continual tasks, one task per data set.

    benchmark: {name: medmnist, root: DIR, datasets: [pneumoniamnist, breastmnist], size: 28}

Each file ``{flag}.npz`` (28 px) or ``{flag}_{size}.npz`` (64/128/224 px) holds
``{train,val,test}_{images,labels}`` (uint8; labels ``(N, 1)``) and its own split, which is used
as is. Class names, modality and task type come from :mod:`medcl.data.medmnist_info`; prompts
from ``prompts/medmnist.yaml``. ChestMNIST (multi-label) is refused with the reason; RetinaMNIST's
5 ordinal grades are scored as 5 nominal classes (top-1 accuracy).

``download: true`` fetches a missing file from Zenodo (checked against the official MD5 where
medcl knows it); without it, or offline (``MEDCL_OFFLINE=1``, or no route), a missing file is an
error that says which URL to fetch and where to put it. Decoded arrays are cached per process
(:data:`medcl.data.images.DECODE_CACHE`, keyed by file path, mtime, size and ``image_size``).
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from medcl.data.images import DECODE_CACHE, file_key, resize_batch
from medcl.data.medmnist_info import INFO, SIZES, THREE_D, MedMNISTInfo
from medcl.data.registry import Benchmark, BenchmarkOptions, register_benchmark
from medcl.data.spec import DataError, TaskSpec, make_task, resolve_path, with_defaults
from medcl.data.task import SPLITS, Split, Task
from medcl.paths import DataPathStr, PathStr
from medcl.registry import close_match_hint

DOWNLOAD_TIMEOUT_S = 60


def check_dataset(flag: str) -> str:
    """``flag`` if it names a supported 2D MedMNIST data set, else ``ValueError`` saying why not."""
    if flag in INFO and not INFO[flag].unsupported:
        return flag
    if flag in INFO:
        raise ValueError(f"{flag} is not supported: {INFO[flag].unsupported}")
    if flag in THREE_D:
        raise ValueError(f"{flag} is a 3D MedMNIST set (volumes); medcl tasks are 2D images")
    known = sorted(INFO)
    raise ValueError(f"unknown MedMNIST data set {flag!r}{close_match_hint(flag, known)}; known: {', '.join(known)}")


class MedMNISTTask(TaskSpec):
    """One MedMNIST data set as a task (an entry of ``sequence``'s ``tasks``)."""

    adapter: Literal["medmnist"] = "medmnist"
    dataset: str = Field(description="MedMNIST flag, e.g. pneumoniamnist")
    root: DataPathStr = Field(description="folder holding the .npz files")
    size: Literal[28, 64, 128, 224] = Field(28, description="which official file: 28 px, or 64/128/224 (MedMNIST+)")
    download: bool = Field(False, description="fetch a missing file from Zenodo")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        return check_dataset(value)


def load_task(spec: MedMNISTTask, *, where: str, data_root: str | None = None) -> Task:
    """The task of ``spec``: the file's own splits, resized to ``spec.image_size`` when set."""
    info = INFO[spec.dataset]
    path = ensure_file(info, spec.size, resolve_path(spec.root, data_root), download=spec.download, where=where)
    arrays = read_npz(path, info, spec.size, spec.image_size, where=where)
    splits = {s: Split(images, labels) for s, (images, labels) in arrays.items()}
    size = spec.image_size or spec.size
    return make_task(spec, where=where, name=spec.name or info.flag, classes=info.classes, splits=splits,
                     dataset=info.flag, modality=info.modality, domain=info.title,
                     metadata={"adapter": "medmnist", "dataset": info.flag, "file": str(path), "size": spec.size,
                               "image_size": size, "task_type": info.task, "license": "CC BY 4.0",
                               "counts": {s: len(v) for s, v in splits.items()}})


def ensure_file(info: MedMNISTInfo, size: int, root: Path, *, download: bool, where: str) -> Path:
    """The path of ``info``'s file at ``size`` under ``root``, downloaded first when asked."""
    path = root / info.file_name(size)
    if path.is_file():
        return path
    if not download and not root.is_dir():
        raise DataError(f"{where}.root", f"the folder {root} does not exist (a typo in root or data_root?); it "
                                         f"should hold {info.file_name(size)}")
    if not download:
        raise DataError(f"{where}.root", f"{path} not found: download {info.url(size)} and save it as {path}, or "
                                         f"set download: true to fetch it")
    fetch(info.url(size), path, md5=info.md5_28 if size == 28 else None, where=where)
    return path


def _urlopen(url: str, timeout: float):
    """The one network call of this module (tests replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - https URL from the table above


def fetch(url: str, path: Path, *, md5: str | None, where: str) -> None:
    """Download ``url`` to ``path`` through ``path.part``, verifying ``md5`` when given."""
    manual = f"download {url} by hand and save it as {path}"
    if os.environ.get("MEDCL_OFFLINE"):
        raise DataError(f"{where}.download", f"MEDCL_OFFLINE is set, so {path.name} is not fetched; {manual}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial, digest = path.with_name(path.name + ".part"), hashlib.md5()
    print(f"medcl: downloading {url} -> {path}", flush=True)
    try:
        with _urlopen(url, DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"{where}.download", f"could not fetch {url} ({exc}); {manual}") from None
    if md5 and digest.hexdigest() != md5:
        partial.unlink(missing_ok=True)
        raise DataError(f"{where}.download", f"{url} gave a file with MD5 {digest.hexdigest()}, not the official "
                                             f"{md5}; {manual}")
    partial.replace(path)


def read_npz(path: Path, info: MedMNISTInfo, size: int, image_size: int | None, *,
             where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images uint8 (N, S, S, C), labels int64 (N,))}`` from one official file, checked
    (keys, shapes, label range) and cached per process."""
    key = ("medmnist", *file_key(path), size, image_size)
    return DECODE_CACHE.get_or_compute(key, lambda: _read_npz(path, info, size, image_size, where))


def _read_npz(path: Path, info: MedMNISTInfo, size: int, image_size: int | None, where: str) -> dict:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}.root", f"{path} is not a readable .npz file ({exc})") from None
    with archive:
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in archive.files]
        if missing:
            raise DataError(f"{where}.root", f"{path} lacks key(s) {missing}; it has {sorted(archive.files)} "
                                             "(expected the official MedMNIST layout)")
        result = {}
        for split in SPLITS:
            images = _check_images(archive[f"{split}_images"], path, f"{split}_images", size, where)
            labels = _check_labels(archive[f"{split}_labels"], len(images), path, f"{split}_labels", info, where)
            result[split] = (resize_batch(images, image_size) if image_size else images, labels)
    return result


def _check_images(images: np.ndarray, path: Path, key: str, size: int, where: str) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise DataError(f"{where}.root", f"{path}: {key} must be uint8 (N, H, W) or (N, H, W, 3), "
                                         f"got {images.dtype} {images.shape}")
    if images.shape[1:3] != (size, size):
        raise DataError(f"{where}.size", f"{path}: {key} holds {images.shape[1]}x{images.shape[2]} images, not "
                                         f"{size}x{size}; set size: {images.shape[1]} or use the {size}-px file")
    return images[..., None] if images.ndim == 3 else images


def _check_labels(labels: np.ndarray, n: int, path: Path, key: str, info: MedMNISTInfo, where: str) -> np.ndarray:
    if labels.shape not in ((n,), (n, 1)):
        raise DataError(f"{where}.root", f"{path}: {key} has shape {labels.shape}; expected ({n}, 1) single "
                                            f"labels for {info.flag}")
    labels = labels.reshape(-1).astype(np.int64)
    bad = np.unique(labels[(labels < 0) | (labels >= len(info.classes))])
    if len(bad):
        raise DataError(f"{where}.root", f"{path}: {key} holds label(s) {bad.tolist()[:10]} outside "
                                            f"0..{len(info.classes) - 1} ({info.flag} has {len(info.classes)} classes)")
    return labels


@register_benchmark("medmnist")
class MedMNIST(Benchmark):
    """Official MedMNIST files, one task per listed data set, in the listed order."""

    description = ("MedMNIST v2/v3 .npz files (12 2D sets: X-ray, CT, ultrasound, pathology, dermatology, OCT, "
                   "fundus, microscopy), official splits; 28/64/128/224 px")

    class Options(BenchmarkOptions):
        root: PathStr = Field(description="folder holding {flag}.npz / {flag}_{size}.npz")
        datasets: list[str] = Field(min_length=1, description="MedMNIST flags in task order")
        size: Literal[28, 64, 128, 224] = 28
        image_size: int | None = Field(None, ge=8, le=1024, description="resize on load (default: the file's size)")
        download: bool = False
        templates: dict[str, list[str]] | None = Field(None, description="data set -> prompt templates")
        prompts: dict[str, dict[str, list[str]]] | None = Field(None, description="data set -> class -> prompts")

        @field_validator("datasets")
        @classmethod
        def _datasets(cls, value):
            if len(set(value)) != len(value):
                raise ValueError(f"datasets {value} contain duplicates")
            return [check_dataset(v) for v in value]

    def build(self, options: Options | dict | None, seed: int) -> list[Task]:
        """Deterministic: the files' own splits; ``seed`` is unused."""
        options = self.coerce_options(options)
        for field in ("templates", "prompts"):
            for flag in getattr(options, field) or {}:
                if flag not in options.datasets:
                    raise DataError(f"benchmark.{field}.{flag}", f"not one of datasets {options.datasets}"
                                                                 f"{close_match_hint(flag, options.datasets)}")
        tasks = []
        for i, flag in enumerate(options.datasets):
            spec = MedMNISTTask(dataset=flag, root=options.root, size=options.size, download=options.download,
                                templates=(options.templates or {}).get(flag),
                                prompts=(options.prompts or {}).get(flag))
            tasks.append(load_task(with_defaults(spec, image_size=options.image_size), where="benchmark"))
        return tasks


__all__ = ["MedMNIST", "MedMNISTTask", "load_task", "check_dataset", "SIZES"]
