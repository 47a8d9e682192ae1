"""``imagefolder``: one folder per class (MedNIST's layout) as continual tasks, one task per entry.

    benchmark:
      name: imagefolder
      image_size: 64                       # every image is resized to 64 x 64 on load
      tasks:
        - {root: ../shared/data/mednist/MedNIST, dataset: mednist}
        - {root: /data/knee, name: knee-oa, modality: xray, classes: [KL0, KL2, KL4]}

A task's ``root`` holds one sub-folder per class (image files of any PIL format, found
recursively; grayscale or RGB). When ``root`` has ``train/`` and ``test/`` (and optionally
``val/``) sub-folders, each with the class folders, that shipped split is used; otherwise a seeded
class-stratified split (``split: {train: 0.7, val: 0.1, test: 0.2, seed: 0}``). ``classes``
selects and orders class folders (default: all, sorted by name). ``dataset`` names a data set
medcl knows (``mednist``) for its modality and prompts; for your own data set ``modality``.

Undecodable files, images over the pixel or bytes budget (:func:`medcl.data.images.open_image`)
and files that resolve outside ``root`` (a link leading out) are skipped, counted per reason in
``Task.metadata["skipped"]`` and warned about, or with ``strict: true`` are an error naming the file. Decoded images are cached per process (file path,
mtime, size, options), so building the tasks again does not decode again.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from medcl.data.images import IMAGE_EXTENSIONS, decode_files, stack_images
from medcl.data.catalog import dataset_facts
from medcl.data.registry import Benchmark, BenchmarkOptions, register_benchmark
from medcl.data.spec import (DataError, SplitFractions, TaskSpec, check_class_names, make_task, resolve_path,
                             stratified_split, with_defaults)
from medcl.data.task import SPLITS, Split, Task
from medcl.paths import DataPathStr, OutsideRoot, PathStr, inside_root
from medcl.data.skips import skip_record

DEFAULT_IMAGE_SIZE = 64
_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


class ImageFolderTask(TaskSpec):
    """One class-folder tree as a task (an entry of ``imagefolder``'s or ``sequence``'s ``tasks``)."""

    adapter: Literal["imagefolder"] = "imagefolder"
    root: DataPathStr = Field(description="folder with one sub-folder per class (or train/val/test/<class>/)")
    dataset: str | None = Field(None, description="a data set medcl knows (mednist) for modality and prompts")
    classes: list[str] | None = Field(None, min_length=2, description="class folders to use, in label order")
    split: SplitFractions = Field(default_factory=SplitFractions, description="used when no split is shipped")
    fit: Literal["crop", "stretch"] = Field("crop", description="non-square images: centre-crop or stretch")
    channels: Literal[1, 3] | None = Field(None, description="force grayscale or RGB (default: 3 if any is RGB)")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value):
        return value if value is None else dataset_facts(value).name


def load_task(spec: ImageFolderTask, *, where: str, data_root: str | None = None) -> Task:
    """The task of one class-folder tree (see the module docstring)."""
    root = resolve_path(spec.root, data_root)
    if not root.is_dir():
        raise DataError(f"{where}.root", f"{root} is not a folder")
    layout = shipped_split(root)
    class_dirs = class_folders(layout["train"] if layout else root, where)
    classes = tuple(spec.classes or class_dirs)
    check_class_names(list(classes), class_dirs, f"{where}.classes", str(layout["train"] if layout else root))
    if len(classes) < 2:
        raise DataError(f"{where}.classes", f"{root} has one class folder {list(classes)}; a task needs at least 2")
    image_size = spec.image_size or DEFAULT_IMAGE_SIZE
    files, labels, split_of = _list_files(root, layout, classes, where)
    allowed, refused = _inside(root, files)  # a link leading out of root is never opened
    decoded, errors = decode_files([f for f, ok in zip(files, allowed) if ok], image_size=image_size,
                                   channels=spec.channels, fit=spec.fit)
    ordered = iter(decoded)
    images, errors = [next(ordered) if ok else None for ok in allowed], refused + errors
    kept = np.asarray([img is not None for img in images], dtype=bool)
    skipped = _handle_undecodable(errors, spec, where, root)
    _check_classes_kept(labels[kept], classes, root, where)
    stacked = stack_images([img for img in images if img is not None], spec.channels)
    labels = labels[kept]
    split_rows = ({s: np.flatnonzero(split_of[kept] == i) for i, s in enumerate(SPLITS)} if layout
                  else stratified_split(labels, spec.split, [f"{root.name}/{c}" for c in classes]))
    splits = {s: Split(stacked[rows], labels[rows]) for s, rows in split_rows.items()}
    known = dataset_facts(spec.dataset) if spec.dataset else None
    return make_task(spec, where=where, name=spec.name or spec.dataset or root.name, classes=classes, splits=splits,
                     dataset=spec.dataset, modality=known.modality if known else None,
                     domain=known.title if known else root.name,
                     metadata={"adapter": "imagefolder", "dataset": spec.dataset, "root": str(root),
                               "image_size": image_size, "split": "shipped" if layout else spec.split.model_dump(),
                               "skipped": skipped, "counts": {s: len(v) for s, v in splits.items()}})


def shipped_split(root: Path) -> dict[str, Path] | None:
    """``{split: folder}`` when ``root`` ships ``train/`` and ``test/`` (``val/`` optional), else ``None``."""
    found = {}
    for split, names in _SPLIT_FOLDERS.items():
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        if folder is not None:
            found[split] = folder
    return found if "train" in found and "test" in found else None


def class_folders(folder: Path, where: str) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``folder`` (at least one, else :class:`DataError`)."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{where}.root", f"{folder} has no class sub-folders; expected one folder per class")
    return names


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files and folders skipped), by extension."""
    found = []
    for directory, subdirs, names in os.walk(folder, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found += [os.path.join(directory, n) for n in names
                  if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    return [Path(p) for p in sorted(found)]


def _list_files(root: Path, layout: dict[str, Path] | None, classes: tuple[str, ...],
                where: str) -> tuple[list[Path], np.ndarray, np.ndarray]:
    files, labels, split_of = [], [], []
    for s, folder in ((layout or {"train": root}).items()):
        for label, name in enumerate(classes):
            class_dir = folder / name
            found = image_files(class_dir) if class_dir.is_dir() else []
            if not found and (s == "train" or class_dir.is_dir()):
                raise DataError(f"{where}.root", f"class folder {class_dir} holds no images "
                                                 f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
            files += found
            labels += [label] * len(found)
            split_of += [SPLITS.index(s)] * len(found)
    return files, np.asarray(labels, dtype=np.int64), np.asarray(split_of, dtype=np.int64)


def _inside(root: Path, files: list[Path]) -> tuple[list[bool], list[str]]:
    """Per file, whether it resolves inside ``root`` (:func:`medcl.paths.inside_root`); the errors of those that do not."""
    allowed, refused = [], []
    for path in files:
        try:
            inside_root(root, path)
            allowed.append(True)
        except OutsideRoot as exc:
            allowed.append(False)
            refused.append(str(exc))
    return allowed, refused


def _handle_undecodable(errors: list[str], spec: ImageFolderTask, where: str, root: Path) -> dict:
    if errors and spec.strict:
        raise DataError(f"{where}.strict", f"{errors[0]} (strict: true; {len(errors)} undecodable file(s) in {root})")
    if errors:
        warnings.warn(f"medcl: skipped {len(errors)} undecodable image(s) under {root}, e.g. {errors[0]}; "
                      "set strict: true to make this an error", stacklevel=3)
    return skip_record(errors)  # per file and reason: the run lists them (medcl.data.skips)


def _check_classes_kept(labels: np.ndarray, classes: tuple[str, ...], root: Path, where: str) -> None:
    empty = [c for i, c in enumerate(classes) if not (labels == i).any()]
    if empty:
        raise DataError(f"{where}.root", f"class(es) {empty} under {root} have no decodable images")


class FolderOptions(BenchmarkOptions):
    """Options shared by the file-based benchmarks: defaults applied to every task entry."""

    data_root: PathStr | None = Field(None, description="relative task roots/paths are taken under this folder")
    image_size: int | None = Field(None, ge=8, le=1024, description="default image size of every task")
    strict: bool = Field(False, description="default of every task's strict")


@register_benchmark("imagefolder")
class ImageFolder(Benchmark):
    """Class-folder trees, one task per entry of ``tasks``, in the listed order."""

    description = ("one folder per class (MedNIST, your own PNG/JPEG/TIFF data); shipped train/val/test folders "
                   "or a seeded stratified split; resized to image_size")

    class Options(FolderOptions):
        tasks: list[ImageFolderTask] = Field(min_length=1)

    def build(self, options: Options | dict | None, seed: int) -> list[Task]:
        """Deterministic: splits are seeded by each task's ``split.seed``; ``seed`` is unused."""
        options = self.coerce_options(options)
        return build_entries(options, {"imagefolder": load_task})


def build_entries(options: FolderOptions, loaders: dict) -> list[Task]:
    """Load every entry of ``options.tasks`` with ``loaders[entry.adapter]``, applying the
    benchmark-wide defaults; task names must be unique (``benchmark.tasks`` error otherwise)."""
    tasks = []
    for i, entry in enumerate(options.tasks):
        spec = with_defaults(entry, image_size=options.image_size, strict=options.strict)
        tasks.append(loaders[entry.adapter](spec, where=f"benchmark.tasks.{i}", data_root=options.data_root))
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError("benchmark.tasks", f"task names {dupes} appear more than once; give each entry a `name`")
    return tasks
