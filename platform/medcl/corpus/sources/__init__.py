"""Source readers: each lists a source's records on the driver as *raw records* (RAW_SCHEMA).

A raw record carries what the reader found without judging it: the prefixed ``id``, a ``ref``
(file and line or member, for error messages), the image as bytes or as a file path (read and
validated later, on Ray Data), the caption as text or as raw bytes (undecoded, so invalid UTF-8 is
detected by the normaliser), and ``reason`` pre-set for records the reader could not parse at all
(``malformed_record``). :mod:`medcl.corpus.normalise` turns raw records into CORPUS_SCHEMA rows.

``iter_source(spec, corpus)`` yields at most ``spec.limit`` raw records of one source.
"""
from __future__ import annotations

from itertools import islice
from typing import Callable, Iterator

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


def _readers() -> dict[str, Callable]:
    from medcl.corpus.sources import files, medpix, roco, synthmed

    return {"roco": roco.read, "medpix": medpix.read, "jsonl": files.read_jsonl, "parquet": files.read_parquet,
            "webdataset": files.read_webdataset, "synthmed": synthmed.read}


def iter_source(spec, corpus) -> Iterator[dict]:
    """Raw records of source ``spec`` (a spec.py source model) under ``corpus`` (the CorpusSpec)."""
    records = _readers()[spec.type](spec, corpus)
    return islice(records, spec.limit) if spec.limit else records
