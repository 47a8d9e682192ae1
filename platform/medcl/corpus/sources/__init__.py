"""Source readers: each lists a source's *units* (files, tar shards) and reads one unit's records
as *raw records* (RAW_SCHEMA).

A raw record carries what the reader found without judging it: the prefixed ``id``, a ``ref``
(file and line or member, for error messages), the image as bytes or as a file path (read and
validated later, on Ray Data), the caption as text or as raw bytes (undecoded, so invalid UTF-8 is
detected by the normaliser), and ``reason`` pre-set for records the reader could not parse at all
(``malformed_record``). :mod:`medcl.corpus.normalise` turns raw records into CORPUS_SCHEMA rows.

``source_units(spec, corpus)`` lists a source cheaply (file names and sizes, no records; a
missing source raises FileNotFoundError naming it); ``read_unit(spec, corpus, unit)`` yields the raw
records of one unit in file order, and runs on the driver (``--local``) or inside a Ray Data task
(build_ray.py). ``iter_source(spec, corpus)`` chains the units and yields at most ``spec.limit``
raw records of one source.
"""
from __future__ import annotations

from itertools import chain, islice
from typing import Iterator

import pyarrow as pa

RAW_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("ref", pa.string()),
    pa.field("image", pa.binary()),
    pa.field("image_path", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("caption_bytes", pa.binary()),
    pa.field("source", pa.string()),
    pa.field("modality", pa.string()),
    pa.field("license", pa.string()),
    pa.field("reason", pa.string()),
])


def raw_record(spec, raw_id, *, ref: str, caption=None, image: bytes | None = None, image_path: str | None = None,
               modality: str | None = None, license: str | None = None, reason: str = "") -> dict:
    """One raw record of source ``spec``: id prefixed, caption sorted into text / bytes / not text."""
    text, data = None, None
    if isinstance(caption, (bytes, bytearray)):
        data = bytes(caption)
    elif isinstance(caption, str):
        try:
            caption.encode("utf-8")
            text = caption
        except UnicodeEncodeError:  # lone surrogates: undecodable bytes carried through surrogateescape
            data = caption.encode("utf-8", "surrogateescape") if _escapable(caption) else b"\xff"
    elif caption is not None and not reason:
        reason = "non_text_caption"
    return {"id": f"{spec.prefix}:{raw_id}", "ref": ref, "image": image, "image_path": image_path,
            "caption": text, "caption_bytes": data, "source": spec.name,
            "modality": (modality or spec.modality), "license": (license or spec.license), "reason": reason}


def _escapable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def _modules() -> dict:
    from medcl.corpus.sources import files, medpix, roco, synthmed

    return {"roco": roco, "medpix": medpix, "jsonl": files.JSONL, "parquet": files.PARQUET,
            "webdataset": files.WEBDATASET, "synthmed": synthmed}


def source_units(spec, corpus) -> list[dict]:
    """The units of source ``spec``: JSON-able dicts with at least ``path`` and ``bytes`` (file size)."""
    return _modules()[spec.type].units(spec, corpus)


def read_unit(spec, corpus, unit: dict) -> Iterator[dict]:
    """Raw records of one unit of ``spec`` (as listed by :func:`source_units`), in file order."""
    return _modules()[spec.type].read_unit(spec, corpus, unit)


def iter_source(spec, corpus) -> Iterator[dict]:
    """Raw records of source ``spec`` (a spec.py source model) under ``corpus`` (the CorpusSpec)."""
    records = chain.from_iterable(read_unit(spec, corpus, u) for u in source_units(spec, corpus))
    return islice(records, spec.limit) if spec.limit else records
