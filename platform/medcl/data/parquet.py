"""``parquet``: a Parquet manifest (one file, or a folder of ``*.parquet`` parts) as continual tasks.

    benchmark:
      name: parquet
      image_size: 64
      tasks:
        - {path: /data/derm.parquet, name: derm, modality: dermatology}
        - {path: /data/all.parquet, task: knee, modality: xray, classes: [KL0, KL1, KL2]}

Columns (fixed names): ``image`` (encoded bytes: PNG, JPEG, ...) **or** ``path`` (an image file,
relative to the task's ``images`` folder); ``label`` (class name string, or integer index into
``classes``); optional ``split`` (``train``/``val``/``test``; ``validation``/``valid`` read as
``val``; without it a seeded stratified split), ``modality``, ``caption`` (kept as
``Split.captions``) and ``task`` (one manifest holding several tasks; an entry's ``task:`` picks
its rows). Classes: ``classes`` (their order is the label order), else the sorted label strings.

Reading at scale: pass 1 reads only the small columns (label, split, task, ...), so the rows and
the output size are known; pass 2 streams the ``image`` (or ``path``) column in record batches of
``batch_rows`` (``ParquetFile.iter_batches``) and decodes each batch straight into the
preallocated output array, so encoded bytes are held one batch at a time and never twice.
:func:`decode_batch` is a pure function of one column batch, shaped for Ray Data when one
machine's decoding is the bottleneck::

    ds = ray.data.read_parquet(path, columns=["image"]).map_batches(
        decode_batch, fn_kwargs={"image_size": 64}, batch_size=512, num_cpus=0.5)

(the decoded arrays must still fit in memory: a Task holds them). Results are cached per process,
keyed by every part's path, mtime and size plus the decode options.

Paths are data, so they are checked: a ``path`` value must resolve (``..`` and links followed)
inside the task's ``images`` folder (default: the download folder ``medcl data prepare`` recorded
in the manifest's metadata ``medcl.images_root``, unless that is ``/`` or the home folder or above
it; else the manifest's folder); an absolute path elsewhere, ``../`` leading out or a link leading
out is skipped and counted (``outside_root``) like an undecodable image, or with ``strict: true`` is
an error naming the row's file. Images over the pixel or bytes budget are refused before decoding
(:func:`medcl.data.images.open_image`). ``Task.metadata["skipped"]["reasons"]`` counts each reason.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from medcl.data.images import (DECODE_CACHE, UndecodableImage, decode, decode_file_cached, file_key,
                               to_channels)
from medcl.data.imagefolder import FolderOptions, build_entries
from medcl.data.catalog import dataset_facts
from medcl.data.registry import Benchmark, register_benchmark
from medcl.data.spec import (DataError, SplitFractions, TaskSpec, check_class_names, make_task, resolve_path,
                             stratified_split)
from medcl.data.task import SPLITS, Split, Task
from medcl.paths import DataPathStr, OutsideRoot, inside_root
from medcl.data.skips import skip_record
from medcl.registry import close_match_hint

DEFAULT_IMAGE_SIZE = 64
_SPLIT_NAMES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
_OPTIONAL = ("split", "task", "modality", "caption")


class ParquetTask(TaskSpec):
    """One task's rows of a Parquet manifest (an entry of ``parquet``'s or ``sequence``'s ``tasks``)."""

    adapter: Literal["parquet"] = "parquet"
    path: DataPathStr = Field(description="a .parquet file, or a folder of .parquet parts")
    images: DataPathStr | None = Field(None, description="folder `path` values must resolve inside; relative ones "
                                       "are taken from it (default: the folder medcl data prepare recorded, else "
                                       "the manifest's folder)")
    task: str | None = Field(None, description="rows whose `task` column equals this (default: all rows)")
    dataset: str | None = Field(None, description="a data set medcl has prompts for (e.g. breastmnist)")
    classes: list[str] | None = Field(None, min_length=2, description="class names in label order")
    split: SplitFractions = Field(default_factory=SplitFractions, description="used without a split column")
    fit: Literal["crop", "stretch"] = "crop"
    channels: Literal[1, 3] | None = None
    batch_rows: int = Field(512, ge=1, description="rows decoded per record batch")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value):
        return value if value is None else dataset_facts(value).name


def load_task(spec: ParquetTask, *, where: str, data_root: str | None = None) -> Task:
    """The task of ``spec``'s rows (see the module docstring)."""
    files = manifest_files(resolve_path(spec.path, data_root), where)
    if spec.images:
        spec = spec.model_copy(update={"images": str(resolve_path(spec.images, data_root))})
    options = spec.model_dump_json(include={"task", "classes", "split", "fit", "channels", "image_size", "images"})
    key = ("parquet", tuple(file_key(f) for f in files), options)
    data = DECODE_CACHE.get_or_compute(key, lambda: read_manifest(files, spec, where))
    _report_undecodable(data["errors"], spec, where, files[0])
    modality = spec.modality or _single_modality(data["modalities"], files[0], where)
    classes, split_rows = data["classes"], data["split_rows"]
    splits = {s: Split(data["images"][rows], data["labels"][rows],
                       tuple(data["captions"][i] for i in rows) if data["captions"] is not None else None)
              for s, rows in split_rows.items()}
    known = dataset_facts(spec.dataset) if spec.dataset else None
    name = spec.name or spec.task or spec.dataset or files[0].stem
    return make_task(spec, where=where, name=name, classes=classes, splits=splits, dataset=spec.dataset,
                     modality=modality or (known.modality if known else None), domain=known.title if known else name,
                     metadata={"adapter": "parquet", "path": str(resolve_path(spec.path, data_root)),
                               "image_size": spec.image_size or DEFAULT_IMAGE_SIZE,
                               "skipped": skip_record(data["errors"]),  # per file and reason (medcl.data.skips)
                               "counts": {s: len(v) for s, v in splits.items()}})


def manifest_files(path: Path, where: str) -> list[Path]:
    """``[path]`` for a file, the sorted ``*.parquet`` parts of a folder; :class:`DataError` if none."""
    if path.is_file():
        return [path]
    parts = sorted(path.glob("*.parquet")) if path.is_dir() else []
    if not parts:
        raise DataError(f"{where}.path", f"{path} is neither a .parquet file nor a folder of .parquet files")
    return parts


def read_manifest(files: list[Path], spec: ParquetTask, where: str) -> dict:
    """Both passes over the manifest: ``images``, ``labels``, ``classes``, ``split_rows``,
    ``captions``, ``modalities`` (distinct values of the selected rows) and ``errors``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = _check_columns(files, where)
    present = [c for c in _OPTIONAL if c in pq.read_schema(files[0]).names]
    try:
        meta = pa.concat_tables([pq.read_table(f, columns=["label", *present]) for f in files])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{where}.path", f"{files[0].parent}: the parts do not share the columns "
                                         f"label, {present} ({exc})") from None
    selected = _select_rows(meta, spec, files[0], where)
    classes, labels = _labels(meta.column("label").to_pylist(), selected, spec.classes, files[0], where)
    images, errors = _decode_selected(files, source, selected, spec)
    kept = np.asarray([e is None for e in errors], dtype=bool)
    labels, rows = labels[kept], np.flatnonzero(selected)[kept]
    split_rows = _split_rows(meta, rows, labels, classes, spec, files[0], where)
    captions = None
    if "caption" in present:
        captions = tuple("" if c is None else str(c) for c in np.asarray(meta.column("caption").to_pylist(),
                                                                         dtype=object)[rows])
    modalities = sorted({str(m) for m in np.asarray(meta.column("modality").to_pylist(), dtype=object)[rows]
                         if m is not None}) if "modality" in present else []
    return {"images": images if kept.all() else images[kept], "labels": labels, "classes": classes, "split_rows": split_rows,
            "captions": captions, "modalities": modalities, "errors": tuple(e for e in errors if e)}


def _check_columns(files: list[Path], where: str) -> str:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(files[0]).names
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{where}.path", f"{files[0]} is not a readable Parquet file ({exc})") from None
    source = "image" if "image" in names else "path" if "path" in names else None
    if source is None or "label" not in names:
        raise DataError(f"{where}.path", f"{files[0]} needs columns `label` and `image` (bytes) or `path`; "
                                         f"it has {names}")
    return source


def _select_rows(meta, spec: ParquetTask, first: Path, where: str) -> np.ndarray:
    if spec.task is None:
        return np.ones(meta.num_rows, dtype=bool)
    if "task" not in meta.column_names:
        raise DataError(f"{where}.task", f"{first} has no `task` column to select task {spec.task!r} from")
    values = np.asarray(meta.column("task").to_pylist(), dtype=object)
    selected = values == spec.task
    if not selected.any():
        names = sorted({str(v) for v in values if v is not None})
        raise DataError(f"{where}.task", f"no rows of task {spec.task!r}{close_match_hint(spec.task, names)} in "
                                         f"{first}; its tasks: {names}")
    return selected


def _labels(values: list, selected: np.ndarray, classes: list[str] | None, first: Path,
            where: str) -> tuple[tuple[str, ...], np.ndarray]:
    chosen = [v for v, s in zip(values, selected) if s]
    if any(v is None for v in chosen):
        raise DataError(f"{where}.path", f"{first}: column `label` has null values")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in chosen):
        if not classes:
            raise DataError(f"{where}.classes", f"{first}: integer labels need `classes` (the class names in "
                                                "label order)")
        labels = np.asarray(chosen, dtype=np.int64)
        bad = np.unique(labels[(labels < 0) | (labels >= len(classes))])
        if len(bad):
            raise DataError(f"{where}.path", f"{first}: column `label` holds {bad.tolist()[:10]} outside "
                                             f"0..{len(classes) - 1} ({len(classes)} classes)")
        return tuple(classes), labels
    names = sorted({str(v) for v in chosen})
    if classes:
        check_class_names(names, list(classes), f"{where}.classes", f"{first} column `label`")
    order = tuple(classes or names)
    index = {c: i for i, c in enumerate(order)}
    return order, np.asarray([index[str(v)] for v in chosen], dtype=np.int64)


def _split_rows(meta, rows: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], spec: ParquetTask,
                first: Path, where: str) -> dict[str, np.ndarray]:
    if "split" not in meta.column_names:
        return stratified_split(labels, spec.split, [f"{first.stem}/{spec.task}/{c}" for c in classes])
    values = [str(v).lower() if v is not None else "" for v in np.asarray(meta.column("split").to_pylist(),
                                                                        dtype=object)[rows]]
    unknown = sorted(set(values) - set(_SPLIT_NAMES))
    if unknown:
        raise DataError(f"{where}.path", f"{first}: column `split` holds {unknown}; allowed: train, val, test")
    ids = np.asarray([_SPLIT_NAMES[v] for v in values], dtype=np.int64)
    return {s: np.flatnonzero(ids == i) for i, s in enumerate(SPLITS)}


def decode_batch(batch: dict, *, image_size: int, channels: int | None = None, fit: str = "crop",
                 base_dir: str | None = None) -> dict:
    """Decode one column batch: ``{"image": encoded bytes}`` or ``{"path": file names}`` (relative
    to ``base_dir``, default the working directory, and refused unless they resolve inside it)
    -> ``{"pixels": uint8 (N, S, S, C), "error": str per row ("" if decoded)}``. Undecodable or
    refused rows get zero pixels and their error. Usable as a Ray Data ``map_batches`` function."""
    column = "image" if "image" in batch else "path"
    arrays, errors = [], []
    for value in batch[column]:
        try:
            if column == "image":
                arrays.append(decode(bytes(value), image_size=image_size, channels=channels, fit=fit))
            else:
                path = inside_root(base_dir or ".", str(value))
                arrays.append(decode_file_cached(path, image_size=image_size, channels=channels, fit=fit))
            errors.append("")
        except (UndecodableImage, OutsideRoot, FileNotFoundError, TypeError) as exc:
            arrays.append(None)
            errors.append(str(exc) if not isinstance(exc, FileNotFoundError) else f"{exc.filename}: no such file")
    target = channels or (3 if any(a is not None and a.shape[-1] == 3 for a in arrays) else 1)
    pixels = np.zeros((len(arrays), image_size, image_size, target), dtype=np.uint8)
    for i, a in enumerate(arrays):
        if a is not None:
            pixels[i] = to_channels(a[None], target)[0]
    return {"pixels": pixels, "error": np.asarray(errors, dtype=object)}


def _decode_selected(files: list[Path], source: str, selected: np.ndarray,
                     spec: ParquetTask) -> tuple[np.ndarray, list[str | None]]:
    import pyarrow.parquet as pq

    size = spec.image_size or DEFAULT_IMAGE_SIZE
    out = np.zeros((int(selected.sum()), size, size, spec.channels or 1), dtype=np.uint8)
    errors: list[str | None] = [None] * len(out)
    position = np.cumsum(selected) - 1  # output row of each selected manifest row
    offset = 0
    for f in files:
        for record_batch in pq.ParquetFile(f).iter_batches(batch_size=spec.batch_rows, columns=[source]):
            n = record_batch.num_rows
            mask = selected[offset:offset + n]
            if mask.any():
                column = np.asarray(record_batch.column(0).to_pylist(), dtype=object)[mask]
                decoded = decode_batch({source: column}, image_size=size, channels=spec.channels, fit=spec.fit,
                                       base_dir=str(images_root(spec, f)))
                if decoded["pixels"].shape[-1] > out.shape[-1]:
                    out = to_channels(out, 3)  # first RGB image in a grayscale-so-far manifest
                targets = position[offset:offset + n][mask]
                out[targets] = to_channels(decoded["pixels"], out.shape[-1])
                for t, e in zip(targets, decoded["error"]):
                    errors[t] = e or None
            offset += n
    return out, errors


IMAGES_ROOT_KEY = b"medcl.images_root"  # Parquet metadata: the download folder `medcl data prepare` read


def images_root(spec: ParquetTask, file: Path) -> Path:
    """The folder ``file``'s ``path`` values must lie in (see the module doc)."""
    import pyarrow.parquet as pq

    if spec.images:
        return Path(spec.images)
    recorded = (pq.read_schema(file).metadata or {}).get(IMAGES_ROOT_KEY)
    if recorded:
        root = Path(recorded.decode("utf-8", "replace")).resolve()
        home = Path.home().resolve()
        if root.is_absolute() and root != Path("/") and root != home and root not in home.parents:
            return root
    return file.parent


def _report_undecodable(errors: tuple[str, ...], spec: ParquetTask, where: str, first: Path) -> None:
    if errors and spec.strict:
        raise DataError(f"{where}.strict", f"{first}: {errors[0]} (strict: true; {len(errors)} undecodable row(s))")
    if errors:
        warnings.warn(f"medcl: skipped {len(errors)} undecodable row(s) of {first}, e.g. {errors[0]}; "
                      "set strict: true to make this an error", stacklevel=3)


def _single_modality(values: list[str], first: Path, where: str) -> str | None:
    if len(values) > 1:
        raise DataError(f"{where}.modality", f"{first} mixes modalities {values} in one task; set `modality`, or "
                                             "use a `task` column to make one task per modality")
    return values[0] if values else None


@register_benchmark("parquet")
class Parquet(Benchmark):
    """Parquet manifests, one task per entry of ``tasks``, in the listed order."""

    description = ("Parquet manifests (image bytes or path, label, optional split/modality/caption/task), "
                   "read in record batches")

    class Options(FolderOptions):
        tasks: list[ParquetTask] = Field(min_length=1)

    def build(self, options: Options | dict | None, seed: int) -> list[Task]:
        """Deterministic: shipped splits, or splits seeded by each task's ``split.seed``."""
        options = self.coerce_options(options)
        return build_entries(options, {"parquet": load_task})
