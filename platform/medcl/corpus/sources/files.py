"""Generic sources: PMC-OA-style JSONL + image folder, Parquet, WebDataset tar shards.

* JSONL: one JSON object per line; ``id_field``, ``image_field`` (a path under ``images``) and
  ``caption_field`` name the keys. Bytes that are not UTF-8 are carried through (surrogateescape)
  so the normaliser reports ``non_text_caption`` for that record by id; a line that is not a JSON
  object is ``malformed_record`` (id ``line-<n>``).
* Parquet: ``id_column``, ``image_column`` (encoded bytes) or ``image_path_column``,
  ``caption_column`` (string, or binary checked for UTF-8 later).
* WebDataset (BIOMEDICA style): members grouped by key (the member path up to the first dot of its
  base name); the image is ``<key>.jpg|jpeg|png|webp|tif|tiff|bmp``, the caption ``<key>.txt`` or
  ``<key>.json[caption_field]``. Read with :mod:`tarfile`, streaming, in member order.

Paths are data: an image path (JSONL, Parquet) must resolve inside ``images`` (default: the file's
folder), else the record is ``outside_root``. A tar member whose name is absolute or climbs with
``..`` is ``outside_root``, a symbolic or hard link is ``link_member``, a member larger than the
bytes budget (``medcl.data.images.MAX_IMAGE_BYTES``) is ``too_many_bytes`` and is never read; each
makes its key's record skipped and counted.

Units (read in parallel Ray Data tasks by build_ray.py): the JSONL file; each Parquet file; each tar.
"""
from __future__ import annotations

import glob
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pyarrow.parquet as pq

from medcl.corpus.sources.record import image_under, raw_record

WDS_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp")


def _existing(spec, path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"source {spec.name!r} ({spec.type}): {what} {path} not found")
    return path


def _file_unit(path: Path) -> dict:
    return {"path": str(path), "bytes": path.stat().st_size}


def jsonl_units(spec, corpus) -> list[dict]:
    return [_file_unit(_existing(spec, corpus.resolve(spec.path), "file"))]


def read_jsonl(spec, corpus, unit: dict) -> Iterator[dict]:
    path = Path(unit["path"])
    images = corpus.resolve(spec.images) if spec.images else path.parent
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            ref = f"{path}:{number}"
            try:
                record = json.loads(line.decode("utf-8", "surrogateescape"))
            except ValueError:
                record = None
            if not isinstance(record, dict) or record.get(spec.id_field) in (None, ""):
                yield raw_record(spec, f"line-{number}", ref=ref, reason="malformed_record")
                continue
            image = record.get(spec.image_field) if spec.image_field else None
            image_path, bad = image_under(images, image) if isinstance(image, str) and image else (None, "")
            yield raw_record(spec, _clean_id(record[spec.id_field]), ref=ref, caption=record.get(spec.caption_field),
                             image_path=image_path, reason=bad,
                             modality=_field(record, spec.modality_field), license=_field(record, spec.license_field))


def parquet_units(spec, corpus) -> list[dict]:
    """One unit per file; a file without the spec's columns is named here, before any task runs."""
    root = _existing(spec, corpus.resolve(spec.path), "path")
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else [root]
    for file in files:
        _check_columns(spec, file, set(pq.read_schema(file).names))
    return [_file_unit(f) for f in files]


def _wanted(spec) -> list[str]:
    return [c for c in (spec.id_column, spec.image_column, spec.image_path_column, spec.caption_column,
                        spec.modality_column, spec.license_column) if c]


def _check_columns(spec, file: Path, names: set) -> None:
    missing = [c for c in _wanted(spec) if c not in names]
    if missing:
        raise FileNotFoundError(f"source {spec.name!r} (parquet): {file} has no column(s) {missing}; "
                                f"it has {sorted(names)}")


def read_parquet(spec, corpus, unit: dict) -> Iterator[dict]:
    for file in [Path(unit["path"])]:
        parquet = pq.ParquetFile(file)
        wanted = _wanted(spec)
        _check_columns(spec, file, set(parquet.schema_arrow.names))
        images = corpus.resolve(spec.images) if spec.images else file.parent
        number = 0
        for batch in parquet.iter_batches(batch_size=1024, columns=wanted):
            for row in batch.to_pylist():
                path = row.get(spec.image_path_column) if spec.image_path_column else None
                image_path, bad = image_under(images, str(path)) if path else (None, "")
                yield raw_record(spec, _clean_id(row[spec.id_column]), ref=f"{file}#row{number}",
                                 caption=row[spec.caption_column], reason=bad,
                                 image=None if spec.image_path_column else row.get(spec.image_column),
                                 image_path=image_path,
                                 modality=_field(row, spec.modality_column), license=_field(row, spec.license_column))
                number += 1


def webdataset_units(spec, corpus) -> list[dict]:
    return [_file_unit(tar) for tar in tar_files(spec, corpus)]


def read_webdataset(spec, corpus, unit: dict) -> Iterator[dict]:
    for tar in [Path(unit["path"])]:
        with tarfile.open(tar, "r:*") as archive:
            for key, members in _grouped(archive):
                yield _wds_record(spec, f"{tar}:{key}", key, members)


def tar_files(spec, corpus) -> list[Path]:
    pattern = str(corpus.resolve(spec.path))
    path = Path(pattern)
    files = sorted(path.glob("*.tar")) if path.is_dir() else sorted(Path(p) for p in glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"source {spec.name!r} (webdataset): no .tar files at {pattern}")
    return files


REFUSED = "!refused"  # a group's members key: the reason one of its members was refused


def _grouped(archive: tarfile.TarFile, max_bytes: int | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {extension: bytes})`` for each run of consecutive members sharing a key; a refused
    member (module doc) is not read and puts its reason under :data:`REFUSED`."""
    from medcl.data.images import MAX_IMAGE_BYTES

    budget = MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    key, members = None, {}
    for info in archive:
        refused = _refusal(info, budget)
        if not info.isfile() and not refused:
            continue
        folder, _, base = info.name.rpartition("/")
        stem, _, extension = base.partition(".")
        member_key = f"{folder}/{stem}" if folder else stem
        if member_key != key and members:
            yield key, members
            members = {}
        key = member_key
        if refused:
            members.setdefault(REFUSED, refused)
        else:
            members[extension.lower()] = archive.extractfile(info).read(budget + 1)
    if members:
        yield key, members


def _refusal(info: tarfile.TarInfo, budget: int) -> str:
    parts = info.name.split("/")
    if info.name.startswith("/") or ".." in parts or "\x00" in info.name:
        return "outside_root"
    if info.issym() or info.islnk():
        return "link_member"
    if info.isfile() and info.size > budget:
        return "too_many_bytes"
    return ""


def _wds_record(spec, ref: str, key: str, members: dict[str, bytes]) -> dict:
    if REFUSED in members:
        return raw_record(spec, key, ref=ref, reason=members[REFUSED])
    image = next((members[e] for e in WDS_IMAGE_EXTENSIONS if e in members), None)
    meta: dict = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"].decode("utf-8", "surrogateescape"))
        except ValueError:
            return raw_record(spec, key, ref=ref, reason="malformed_record")
        meta = meta if isinstance(meta, dict) else {}
    caption = members["txt"] if "txt" in members else meta.get(spec.caption_field)
    reason = "" if image is not None else "missing_image"
    return raw_record(spec, key, ref=ref, caption=caption, image=image, reason=reason,
                      modality=_field(meta, spec.modality_field), license=_field(meta, spec.license_field))


def _field(record: dict, name: str | None) -> str | None:
    value = record.get(name) if name else None
    return str(value) if value not in (None, "") else None


def _clean_id(value) -> str:
    return str(value).strip()


JSONL = SimpleNamespace(units=jsonl_units, read_unit=read_jsonl)
PARQUET = SimpleNamespace(units=parquet_units, read_unit=read_parquet)
WEBDATASET = SimpleNamespace(units=webdataset_units, read_unit=read_webdataset)
