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

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file (UTF-8, BOM tolerated), keys and values stripped."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(handle)]


def index_images(folder: Path) -> dict[str, Path]:
    """Every image under ``folder`` (recursively) by file name and by stem."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(path.name, path)
            found.setdefault(path.stem, path)
    return found


def table(root: Path, spec: DatasetSpec, options: dict) -> Iterable[Record]:
    """Options: ``csv`` (alternatives), ``image(row, root) -> Path`` or ``image_key(row) -> str`` (a
    file name or stem looked up under ``images``, alternatives, recursively), ``label(row) ->
    tuple[str, ...]``, ``patient(row) -> str | None``, ``split(row, root) -> str | None``."""
    rows = read_csv(find(root, options["csv"]))
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


def video_frames(root: Path, spec: DatasetSpec, options: dict) -> Iterable[Record]:
    """PITVIS: ``map_steps.csv`` (``int``, ``str``), one ``annotations_<video>.csv`` per video
    (``int_time`` seconds, ``int_step``) and frames extracted at 1 fps as
    ``frames/video_<video>/<int_time:05d>.png``; the video is the patient."""
    steps = {row["int"]: row["str"] for row in read_csv(find(root, options["map"]))}
    folder = find(root, options["annotations"])
    for path in sorted(folder.glob("annotations_*.csv")):
        video = path.stem.removeprefix("annotations_")
        for row in read_csv(path):
            name = steps.get(row.get("int_step", ""))
            seconds = row.get("int_time", "")
            image = root / "frames" / f"video_{video}" / f"{int(seconds):05d}.png" if seconds.isdigit() else root / "?"
            yield Record(image=image, labels=(name,) if name else (), patient=f"video_{video}")


def _none(_):
    return None
