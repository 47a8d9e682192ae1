"""Layout readers: a publisher's files -> :class:`~medcl.data.prepare.core.Record` per image.

Four shapes cover the fifteen MGTIL downloads: a CSV table with an image per row (``table``),
class folders (``folders``), JSON lists of ``{name, label}`` (``json_list``) and per-video
annotation CSVs over extracted frames (``video_frames``). Each takes the download folder, the
:class:`DatasetSpec` and its options; the options' callables are the per-data-set details.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable

from medcl.data.prepare.core import DatasetSpec, Record, find
from medcl.data.spec import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_csv(path: Path, columns: tuple[tuple[str, ...], ...] = (), spec: DatasetSpec | None = None) -> list[dict]:
    """Rows of a CSV file (UTF-8, BOM tolerated), keys and values stripped.

    ``columns``: the columns the reader needs, each a tuple of accepted alternatives; a missing one is
    a :class:`DataError` naming every missing column and the columns the file has."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [(k or "").strip() for k in reader.fieldnames or ()]
        missing = [" or ".join(alternatives) for alternatives in columns if not set(alternatives) & set(header)]
        if missing:
            where = f"data prepare {spec.name} --from" if spec else "data prepare --from"
            raise DataError(where, f"{path}: no column {', '.join(missing)} (needed); columns found: {header}"
                                   + (f"; expected the layout:\n{spec.layout}" if spec else ""))
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def index_images(folder: Path) -> dict[str, Path]:
    """Every image under ``folder`` (recursively) by file name and by stem."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(path.name, path)
            found.setdefault(path.stem, path)
    return found


def table(root: Path, spec: DatasetSpec, options: dict) -> Iterable[Record]:
    """Options: ``csv`` (alternatives), ``columns`` (the columns read, each a tuple of alternatives),
    ``image(row, root) -> Path`` or ``image_key(row) -> str`` (a file name or stem looked up under
    ``images``, alternatives, recursively), ``label(row) -> tuple[str, ...]``, ``patient(row) -> str |
    None``, ``split(row, root) -> str | None``."""
    rows = read_csv(find(root, options["csv"]), options.get("columns", ()), spec)
    lookup = index_images(find(root, options["images"]) or root) if "image_key" in options else None
    split = options.get("split", lambda row, root: None)
    for row in rows:
        if lookup is not None:
            key = options["image_key"](row)
            image = lookup.get(key, root / "missing" / key)
        else:
            image = options["image"](row, root)
        yield Record(image=image, labels=tuple(options["label"](row)), patient=options.get("patient", _none)(row),
                     split=split(row, root))


def folders(root: Path, spec: DatasetSpec, options: dict) -> Iterable[Record]:
    """Options: ``bases``: ``{split or None: alternatives}`` (folders holding one folder per class);
    ``names``: folder name (lower case) -> class; ``patient(path) -> str | None``. Images are found
    recursively under each class folder; folders that are no class are left out."""
    for split, alternatives in options["bases"].items():
        base = find(root, alternatives)
        if base is None:
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            label = options["names"].get(folder.name.lower())
            if label is None:
                continue
            for image in sorted(folder.rglob("*")):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    yield Record(image=image, labels=(label,), patient=options.get("patient", _none)(image),
                                 split=split)


def tree(root: Path, spec: DatasetSpec, options: dict) -> Iterable[Record]:
    """Options: ``base`` (alternatives); ``label(path) -> tuple`` and ``patient(path)`` per image
    found recursively under it (BreakHis: the class is a folder a few levels up)."""
    for image in sorted(find(root, options["base"]).rglob("*")):
        if image.suffix.lower() in IMAGE_SUFFIXES:
            yield Record(image=image, labels=tuple(options["label"](image)), patient=options["patient"](image))


def json_list(root: Path, spec: DatasetSpec, options: dict) -> Iterable[Record]:
    """Options: ``files``: ``{split: alternatives}`` of JSON lists of ``{"name": relative image path,
    "label": class index}`` (Chaoyang)."""
    for split, alternatives in options["files"].items():
        for item in json.loads(find(root, alternatives).read_text()):
            index = item.get("label")
            label = spec.classes[index] if isinstance(index, int) and 0 <= index < len(spec.classes) else None
            yield Record(image=root / str(item.get("name", "")), labels=(label,) if label else (), split=split)


def step_key(name: str) -> str:
    """A step name compared without case, outer spaces, or the difference between spaces, hyphens and
    underscores: ``"nasal corridor creation "`` and ``"nasal_corridor_creation"`` are one step."""
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


def step_names(rows: list[dict], spec: DatasetSpec, background: tuple[str, str] | None) -> dict[str, str]:
    """``int`` -> class name from ``map_steps.csv`` rows (``int``, ``str``): names compared by
    :func:`step_key`; every name of the ``background`` step (``(int, class)``; PitVis's -1 has three:
    operation_not_started, out_of_patient, operation_ended) is that class; a step with several names
    takes the first that is a class; an unknown name stays as written (skipped and counted later)."""
    classes = {step_key(c): c for c in spec.classes or ()}
    names: dict[str, list[str]] = {}
    for row in rows:
        names.setdefault(row["int"].strip(), []).append(row["str"])
    steps = {}
    for number, written in names.items():
        if background and number == background[0]:
            steps[number] = background[1]
        else:
            known = [classes[step_key(n)] for n in written if step_key(n) in classes]
            steps[number] = known[0] if known else written[-1].strip()
    return steps


def video_frames(root: Path, spec: DatasetSpec, options: dict) -> Iterable[Record]:
    """PITVIS: ``map_steps.csv`` (``int``, ``str``; names read by :func:`step_names`, option
    ``background``), one ``annotations_<video>.csv`` per video (``int_time`` seconds, ``int_step``)
    and frames extracted at 1 fps as ``frames/video_<video>/<int_time:05d>.png``; the video is the patient."""
    steps = step_names(read_csv(find(root, options["map"]), (("int",), ("str",)), spec), spec,
                       options.get("background"))
    folder = find(root, options["annotations"])
    for path in sorted(folder.glob("annotations_*.csv")):
        video = path.stem.removeprefix("annotations_")
        for row in read_csv(path, (("int_time",), ("int_step",)), spec):
            name = steps.get(row.get("int_step", ""))
            seconds = row.get("int_time", "")
            image = root / "frames" / f"video_{video}" / f"{int(seconds):05d}.png" if seconds.isdigit() else root / "?"
            yield Record(image=image, labels=(name,) if name else (), patient=f"video_{video}")


def _none(_):
    return None
