"""One Arrow schema for every corpus source (ROCO, MedPix, JSONL, Parquet, WebDataset).

A corpus build writes Parquet shards with exactly these columns; ``image`` holds the encoded file
bytes (PNG/JPEG as found) or null for caption-only entries such as ROCO's, ``id`` is unique within a
corpus and prefixed by the source (``roco:ROCO_00002``).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import pyarrow as pa

from medcl.errors import MedclError
from medcl.hashing import sha256_file
from medcl.paths import OutsideRoot
from medcl.confine import inside_place
from medcl.storage import place

CORPUS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("image", pa.binary(), nullable=True),
    pa.field("caption", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("license", pa.string(), nullable=False),
])
CORPUS_COLUMNS = tuple(CORPUS_SCHEMA.names)


class CorruptArtifactError(MedclError, RuntimeError):
    """A corpus, embedding or index file whose sha256 does not match its manifest (or is missing)."""


def read_manifest_body(directory, name: str, kind: str, made_by: str) -> tuple:
    """``(place, parsed JSON)`` of the manifest ``name`` in ``directory`` (a local path or an
    object-store place, see :mod:`medcl.storage`); FileNotFoundError when it is
    absent (saying which command makes one), CorruptArtifactError when it is not JSON or not ``kind``."""
    path = place(directory) / name
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {name}; is this the output of {made_by}?")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptArtifactError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(body, dict) or body.get("kind") != kind:
        found = body.get("kind") if isinstance(body, dict) else type(body).__name__
        raise CorruptArtifactError(f"{path}: kind is {found!r}, expected {kind!r}")
    return path, body


def listed_file(directory, name, manifest):
    """The place of the file ``name`` that the manifest ``manifest`` (its name or place) lists in
    ``directory``: ``directory / name`` when it resolves strictly inside ``directory``
    (:func:`medcl.confine.inside_place`: no ``..`` or absolute path leading out, no link leading out,
    no object-store key outside the prefix), else CorruptArtifactError naming the manifest and the entry."""
    try:
        return inside_place(directory, name)
    except OutsideRoot as exc:
        raise CorruptArtifactError(f"{manifest}: entry {name!r} is not a file inside {directory} ({exc}); "
                                   "the manifest is corrupt or hostile, nothing was read") from None


def check_listed_names(directory, names: Iterable, manifest) -> None:
    """:func:`listed_file` for each of ``names`` (every file name a manifest lists), before any is read."""
    for name in names:
        listed_file(directory, name, manifest)


def verify_listed_files(directory, listed: Mapping[str, str], manifest: str,
                        names: Iterable[str] | None = None) -> None:
    """Check that every file in ``names`` (default: all of ``listed``, file name -> sha256) is listed
    in the manifest, lies inside ``directory`` (:func:`listed_file`), exists there and has its listed
    sha256; else CorruptArtifactError naming the file."""
    for name in listed if names is None else names:
        file = listed_file(directory, name, manifest)
        if name not in listed:
            raise CorruptArtifactError(f"{file}: not listed in {manifest}")
        if not file.is_file():
            raise CorruptArtifactError(f"{file}: listed in {manifest} but missing")
        if sha256_file(file) != listed[name]:
            raise CorruptArtifactError(f"{file}: sha256 does not match {manifest}; the file is corrupt or was changed")
